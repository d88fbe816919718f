//! Where the lab finds Margay's binaries: `$MARGAY_BIN_DIR`, else beside `margay-lab` itself
//! (the same cargo target directory). Build them first:
//! `cargo build -p margay-agent -p margay-cni -p margay-ctl -p margay-integration --bins`.

use std::path::PathBuf;

/// The binaries a lab runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `margay-node`, the agent.
    pub agent: PathBuf,
    /// `margay-cni`, the CNI plugin.
    pub cni: PathBuf,
    /// `margayctl`.
    pub ctl: PathBuf,
    /// `margay-lab` itself (the supervisor and the pod server).
    pub lab: PathBuf,
    /// `margay-test-apiserver`, needed with the Kubernetes datastore only (checked when used).
    pub apiserver: PathBuf,
}

/// Environment variable naming the directory of the binaries.
pub const BIN_DIR_ENV: &str = "MARGAY_BIN_DIR";

impl Bins {
    /// Finds every binary, or says which is missing and how to build it.
    pub fn find() -> anyhow::Result<Bins> {
        let lab = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find the margay-lab binary itself: {e}"))?;
        let dir = match std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => lab
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                anyhow::bail!(
                    "{name} not found in {}: build the binaries with `cargo build -p margay-agent -p margay-cni -p margay-ctl --bins` (same target directory as margay-lab), or set {BIN_DIR_ENV} to their directory",
                    dir.display()
                )
            }
        };
        Ok(Bins {
            agent: find("margay-node")?,
            cni: find("margay-cni")?,
            ctl: find("margayctl")?,
            apiserver: dir.join("margay-test-apiserver"),
            lab,
        })
    }
}
