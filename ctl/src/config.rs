//! Where the datastore is: flags, environment variables or a config file, as calicoctl.
//!
//! The config file (`--config FILE`, default `/etc/margay/margayctl.cfg` when it exists) is YAML,
//! either calicoctl's shape or just its `spec`:
//!
//! ```yaml
//! apiVersion: crd.margay.dev/v1     # projectcalico.org/v3 is accepted too
//! kind: MargayAPIConfig             # or CalicoAPIConfig
//! spec:
//!   datastoreType: etcdv3           # or kubernetes
//!   etcdEndpoints: http://198.18.0.254:2379,http://198.18.0.253:2379
//!   etcdCACertFile: /etc/margay/ca.pem
//!   etcdCertFile: /etc/margay/cert.pem
//!   etcdKeyFile: /etc/margay/key.pem
//!   etcdUsername: root
//!   etcdPassword: secret
//!   kubeconfig: /root/.kube/config
//! ```
//!
//! Flags and environment variables (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`, `ETCD_CA_CERT_FILE`,
//! `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_USERNAME`, `ETCD_PASSWORD`, `KUBECONFIG`) override what
//! the file says. Without any of them the datastore is etcd at `http://127.0.0.1:2379`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use margay_datastore::{Datastore, Etcd, EtcdConfig, Kubernetes, KubernetesConfig};
use serde::Deserialize;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/margay/margayctl.cfg";

/// How long one datastore request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong finding or reaching the datastore.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not what we read.
    #[error("config file {path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        why: String,
    },
    /// `datastoreType` is neither `etcdv3` nor `kubernetes`.
    #[error(
        "datastore type {0:?} is not etcdv3 or kubernetes (set DATASTORE_TYPE or spec.datastoreType)"
    )]
    DatastoreType(String),
    /// The datastore cannot be reached.
    #[error("cannot connect to the datastore ({what})")]
    Connect {
        /// Which datastore.
        what: String,
        /// Why.
        #[source]
        source: margay_datastore::Error,
    },
}

/// The datastore settings, from any source (calicoctl's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DatastoreSettings {
    /// `etcdv3` (default) or `kubernetes`.
    pub datastore_type: Option<String>,
    /// Comma-separated etcd URLs.
    pub etcd_endpoints: Option<String>,
    /// CA bundle for etcd's TLS.
    #[serde(rename = "etcdCACertFile")]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// Client certificate for etcd.
    pub etcd_cert_file: Option<PathBuf>,
    /// Client key for etcd.
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user name.
    pub etcd_username: Option<String>,
    /// etcd password.
    pub etcd_password: Option<String>,
    /// kubeconfig for the Kubernetes datastore.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApiConfigFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
    spec: DatastoreSettings,
}

impl DatastoreSettings {
    /// Reads a config file: calicoctl's `CalicoAPIConfig` shape or just the spec's fields.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|why| ConfigError::Parse {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| first_line(&e.to_string()))?;
        if value.get("spec").is_some() || value.get("kind").is_some() {
            let f: ApiConfigFile = serde_json::from_value(value).map_err(|e| e.to_string())?;
            if !matches!(f.kind.as_str(), "CalicoAPIConfig" | "MargayAPIConfig") {
                return Err(format!(
                    "kind {:?} is not MargayAPIConfig or CalicoAPIConfig",
                    f.kind
                ));
            }
            if !f.api_version.ends_with("/v1") && !f.api_version.ends_with("/v3") {
                return Err(format!(
                    "apiVersion {:?} is not crd.margay.dev/v1",
                    f.api_version
                ));
            }
            Ok(f.spec)
        } else {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
    }

    /// These settings with every field that `over` sets taken from `over`.
    pub fn overridden_by(mut self, over: DatastoreSettings) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $(if over.$f.is_some() { self.$f = over.$f; })* };
        }
        take!(
            datastore_type,
            etcd_endpoints,
            etcd_ca_cert_file,
            etcd_cert_file,
            etcd_key_file,
            etcd_username,
            etcd_password,
            kubeconfig
        );
        self
    }

    /// Connects to the datastore these settings name.
    pub async fn connect(&self) -> Result<Arc<dyn Datastore>, ConfigError> {
        Ok(self.connect_with_kube().await?.0)
    }

    /// Connects to the datastore these settings name; with the Kubernetes datastore also returns
    /// the API client (WorkloadEndpoints are derived from its Pods).
    pub async fn connect_with_kube(
        &self,
    ) -> Result<(Arc<dyn Datastore>, Option<Kubernetes>), ConfigError> {
        match self.datastore_type.as_deref().unwrap_or("etcdv3") {
            "etcdv3" | "etcd" => {
                let endpoints: Vec<String> = self
                    .etcd_endpoints
                    .as_deref()
                    .unwrap_or("http://127.0.0.1:2379")
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let config = EtcdConfig {
                    endpoints: endpoints.clone(),
                    ca_file: self.etcd_ca_cert_file.clone(),
                    cert_file: self.etcd_cert_file.clone(),
                    key_file: self.etcd_key_file.clone(),
                    user: self
                        .etcd_username
                        .clone()
                        .map(|u| (u, self.etcd_password.clone().unwrap_or_default())),
                    timeout: Some(REQUEST_TIMEOUT),
                };
                let etcd = Etcd::connect(&config)
                    .await
                    .map_err(|source| ConfigError::Connect {
                        what: format!("etcdv3 {}", endpoints.join(",")),
                        source,
                    })?;
                Ok((Arc::new(etcd), None))
            }
            "kubernetes" => {
                let config = KubernetesConfig {
                    kubeconfig: self.kubeconfig.clone(),
                    timeout: Some(REQUEST_TIMEOUT),
                    ..Default::default()
                };
                let kube =
                    Kubernetes::connect(&config)
                        .await
                        .map_err(|source| ConfigError::Connect {
                            what: "kubernetes".to_string(),
                            source,
                        })?;
                Ok((Arc::new(kube.clone()), Some(kube)))
            }
            other => Err(ConfigError::DatastoreType(other.to_string())),
        }
    }
}

/// The first line of a (possibly multi-line) message, for one-line errors.
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calicoctl_style_file_gives_its_spec() {
        let s = DatastoreSettings::parse(
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\n\
             spec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://10.0.0.1:2379\n  etcdCACertFile: /ca.pem\n",
        )
        .unwrap();
        assert_eq!(s.datastore_type.as_deref(), Some("etcdv3"));
        assert_eq!(s.etcd_endpoints.as_deref(), Some("http://10.0.0.1:2379"));
        assert_eq!(s.etcd_ca_cert_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn a_flat_file_is_the_spec_alone() {
        let s = DatastoreSettings::parse("datastoreType: kubernetes\nkubeconfig: /k\n").unwrap();
        assert_eq!(s.kubeconfig, Some(PathBuf::from("/k")));
    }

    #[test]
    fn an_unknown_field_in_the_config_file_is_named() {
        let e = DatastoreSettings::parse("etcdEndpoint: http://x\n").unwrap_err();
        assert!(e.contains("etcdEndpoint"), "{e}");
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let file = DatastoreSettings {
            etcd_endpoints: Some("http://file".into()),
            datastore_type: Some("etcdv3".into()),
            ..Default::default()
        };
        let env = DatastoreSettings {
            etcd_endpoints: Some("http://env".into()),
            ..Default::default()
        };
        let s = file.overridden_by(env);
        assert_eq!(s.etcd_endpoints.as_deref(), Some("http://env"));
        assert_eq!(s.datastore_type.as_deref(), Some("etcdv3"));
    }
}
