//! Prints Margay's CRDs as YAML: `cargo run -p margay-api --example gen-crds > manifests/crds.yaml`.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = margay_api::crd::to_yaml()?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}
