//! CustomResourceDefinitions of every Margay resource, as checked in at `manifests/crds.yaml`.
//!
//! Regenerate with `cargo run -p margay-api --example gen-crds > manifests/crds.yaml`; a test
//! fails when the checked-in file is out of date.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

use crate::{
    AgentConfiguration, BGPConfiguration, BGPPeer, BlockAffinity, IPAMBlock, IPAMConfig,
    IPAMHandle, IPPool, MargayNode, NodeStatus, WorkloadEndpoint,
};

/// The command that regenerates `manifests/crds.yaml` (from the workspace root).
pub const REGENERATE_COMMAND: &str =
    "cargo run -p margay-api --example gen-crds > manifests/crds.yaml";

/// Every Margay CRD, sorted by name.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        AgentConfiguration::crd(),
        BGPConfiguration::crd(),
        BGPPeer::crd(),
        BlockAffinity::crd(),
        IPAMBlock::crd(),
        IPAMConfig::crd(),
        IPAMHandle::crd(),
        IPPool::crd(),
        MargayNode::crd(),
        NodeStatus::crd(),
        WorkloadEndpoint::crd(),
    ];
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
}

/// The kinds of every Margay resource, sorted.
pub fn kinds() -> Vec<String> {
    let mut kinds: Vec<String> = all().into_iter().map(|c| c.spec.names.kind).collect();
    kinds.sort();
    kinds
}

/// Serialising the CRDs failed (a bug: they are built from our own types).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the CRDs as YAML")]
pub struct CrdYamlError(#[source] serde_saphyr::SerializeError);

/// The content of `manifests/crds.yaml`: a header, then every CRD as one YAML document.
pub fn to_yaml() -> Result<String, CrdYamlError> {
    let mut out = format!(
        "# Margay CustomResourceDefinitions (group {}).\n# Generated from api/ by `{REGENERATE_COMMAND}`; do not edit.\n",
        crate::GROUP
    );
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).map_err(CrdYamlError)?);
    }
    Ok(out)
}
