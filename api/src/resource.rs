//! [`Resource`]: any Margay object, chosen by its `kind` (what `margayctl apply -f` reads).

use serde::Serialize;
use serde_json::Value;

use crate::validate::{FieldError, Validate};
use crate::{
    AgentConfiguration, BGPConfiguration, BGPPeer, BlockAffinity, Defaults, IPAMBlock, IPAMConfig,
    IPAMHandle, IPPool, MargayNode, NodeStatus, WorkloadEndpoint,
};

/// An object that is not a Margay resource or does not match its kind's schema.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// `apiVersion` is not `crd.margay.dev/v1`.
    #[error("apiVersion {0:?} is not {api}", api = crate::API_VERSION)]
    ApiVersion(String),
    /// `kind` is not one of ours.
    #[error("kind {0:?} is not a Margay resource")]
    UnknownKind(String),
    /// The object does not deserialize as its kind.
    #[error("{kind} {name:?} does not match its schema")]
    Schema {
        /// The object's kind.
        kind: String,
        /// The object's name, if it has one.
        name: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! resources {
    ($($variant:ident($ty:ty) = $kind:literal),* $(,)?) => {
        /// Any Margay object. Serializes as the object itself; read one with [`Resource::from_value`].
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        #[allow(clippy::large_enum_variant)]
        pub enum Resource {
            $(
                #[doc = concat!("A `", $kind, "`.")]
                $variant($ty),
            )*
        }

        /// Every Margay kind.
        pub const KINDS: &[&str] = &[$($kind),*];

        impl Resource {
            /// Reads an object (as JSON or YAML parsed into a `serde_json::Value`) by its `kind`.
            pub fn from_value(v: Value) -> Result<Self, ResourceError> {
                let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                if api != crate::API_VERSION {
                    return Err(ResourceError::ApiVersion(api.to_string()));
                }
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let schema = |source| ResourceError::Schema { kind: kind.clone(), name: name.clone(), source };
                match kind.as_str() {
                    $($kind => serde_json::from_value(v).map(Resource::$variant).map_err(schema),)*
                    _ => Err(ResourceError::UnknownKind(kind.clone())),
                }
            }

            /// The object's kind.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Resource::$variant(_) => $kind,)*
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                match self {
                    $(Resource::$variant(o) => &o.metadata,)*
                }
            }
        }

        impl Validate for Resource {
            fn field_errors(&self) -> Vec<FieldError> {
                match self {
                    $(Resource::$variant(o) => o.field_errors(),)*
                }
            }
        }
    };
}

resources! {
    AgentConfiguration(AgentConfiguration) = "AgentConfiguration",
    BGPConfiguration(BGPConfiguration) = "BGPConfiguration",
    BGPPeer(BGPPeer) = "BGPPeer",
    BlockAffinity(BlockAffinity) = "BlockAffinity",
    IPAMBlock(IPAMBlock) = "IPAMBlock",
    IPAMConfig(IPAMConfig) = "IPAMConfig",
    IPAMHandle(IPAMHandle) = "IPAMHandle",
    IPPool(IPPool) = "IPPool",
    Node(MargayNode) = "Node",
    NodeStatus(NodeStatus) = "NodeStatus",
    WorkloadEndpoint(WorkloadEndpoint) = "WorkloadEndpoint",
}

impl Resource {
    /// The object's name (empty when missing).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

impl Defaults for Resource {
    fn apply_defaults(&mut self) {
        match self {
            Resource::IPPool(p) => p.apply_defaults(),
            Resource::BGPConfiguration(b) => b.apply_defaults(),
            Resource::AgentConfiguration(a) => a.spec.apply_defaults(),
            // The other kinds have only context-free (serde) defaults.
            _ => {}
        }
    }
}
