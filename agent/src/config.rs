//! The agent's own configuration: file, then environment, then flags; validated at load.
//!
//! Cluster-wide, Felix-style settings (resync intervals, iptables backend, failsafe ports) live in
//! the `AgentConfiguration` resource in the datastore. This file holds only what the agent needs
//! before it can reach the datastore: who it is, where the datastore is, where to listen.
//!
//! ```toml
//! node_name = "node-1"              # default: $NODENAME, then the host name
//! role = "node"                     # node | route-reflector | controllers
//! socket = "/var/run/margay/agent.sock"
//! health_port = 9099
//! metrics_port = 9091
//! log_level = "info"
//!
//! [datastore]
//! type = "etcdv3"                   # etcdv3 | kubernetes
//! etcd_endpoints = ["http://198.18.0.254:2379"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the agent runs as: a full node, or only the BGP speaker of a dedicated reflector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Routes, policy, IPAM for local pods and the BGP speaker (the DaemonSet).
    #[default]
    Node,
    /// Only the BGP speaker, as a route reflector (the reflector Deployment).
    RouteReflector,
    /// The cluster's controllers: IPAM of deleted nodes, leak checks, and in etcd mode the copy
    /// of Namespaces, Pods and NetworkPolicies into etcd (the controller Deployment).
    Controllers,
}

/// Which datastore backend holds Margay's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DatastoreType {
    /// etcd v3, as `DATASTORE_TYPE=etcdv3`.
    #[default]
    #[serde(rename = "etcdv3")]
    EtcdV3,
    /// Kubernetes custom resources, as `DATASTORE_TYPE=kubernetes`.
    #[serde(rename = "kubernetes")]
    Kubernetes,
}

impl std::str::FromStr for DatastoreType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "etcdv3" => Ok(Self::EtcdV3),
            "kubernetes" => Ok(Self::Kubernetes),
            other => Err(format!(
                "{other:?} is not a datastore type; use etcdv3 or kubernetes"
            )),
        }
    }
}

/// How to reach the datastore.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Backend: `etcdv3` or `kubernetes`.
    #[serde(rename = "type")]
    pub kind: DatastoreType,
    /// etcd client URLs (`http://host:2379`), for `etcdv3`.
    pub etcd_endpoints: Vec<String>,
    /// CA bundle to verify etcd's certificate.
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate for etcd.
    pub etcd_cert_file: Option<PathBuf>,
    /// Client key for etcd.
    pub etcd_key_file: Option<PathBuf>,
    /// kubeconfig for `kubernetes` (in-cluster config when absent).
    pub kubeconfig: Option<PathBuf>,
}

/// The agent's start-up configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name; must match its Kubernetes Node name.
    pub node_name: Option<String>,
    /// What this process runs as.
    pub role: Role,
    /// The local API socket the CNI plugin talks to.
    pub socket: PathBuf,
    /// Port of the health endpoint (`/livez`, `/readyz`); 0 turns it off.
    pub health_port: u16,
    /// Port of the Prometheus endpoint (`/metrics`); 0 turns it off.
    pub metrics_port: u16,
    /// Address the health and metrics endpoints bind to.
    pub listen_address: std::net::IpAddr,
    /// Log filter, as `RUST_LOG` (`info`, `margay_bgp=debug,info`).
    pub log_level: String,
    /// This node's BGP address as `ADDR/PREFIX` (as Calico's `IP`), or `autodetect` / unset to
    /// detect it with `ip_autodetection_method`.
    pub ip: Option<String>,
    /// How to detect the address (Calico's `IP_AUTODETECTION_METHOD`): `first-found`,
    /// `interface=REGEX`, `skip-interface=REGEX`, `can-reach=ADDR`, `cidr=CIDR[,CIDR]`.
    pub ip_autodetection_method: String,
    /// This node's IPv6 BGP address as `ADDR/PREFIX` (Calico's `IP6`), `autodetect` (with
    /// `ip6_autodetection_method`), or unset / `none`: no IPv6 sessions, IPv6 blocks not
    /// exchanged.
    pub ip6: Option<String>,
    /// How to detect the IPv6 address (`IP6_AUTODETECTION_METHOD`), as `ip_autodetection_method`.
    pub ip6_autodetection_method: String,
    /// Where the datastore is.
    pub datastore: DatastoreConfig,
    /// With `role = "route-reflector"`: the cluster id this dedicated reflector declares in its
    /// Node (`ROUTE_REFLECTOR_CLUSTER_ID`; default `244.0.0.1`, as Calico's examples).
    pub route_reflector_cluster_id: Option<std::net::Ipv4Addr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            role: Role::Node,
            socket: PathBuf::from("/var/run/margay/agent.sock"),
            health_port: 9099,
            metrics_port: 9091,
            listen_address: std::net::IpAddr::from([127, 0, 0, 1]),
            log_level: "info".into(),
            ip: None,
            ip_autodetection_method: "first-found".into(),
            ip6: None,
            ip6_autodetection_method: "first-found".into(),
            datastore: DatastoreConfig::default(),
            route_reflector_cluster_id: None,
        }
    }
}

/// What is wrong with a configuration: the field, its value and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (unknown field, wrong type…).
    #[error("config file {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// An environment variable holds a value the field cannot take.
    #[error("environment variable {var}={value:?}: {why}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A field has a value that cannot work.
    #[error("config field {field} = {value:?}: {why}")]
    Invalid {
        /// Dotted path of the field (`datastore.etcd_endpoints[0]`).
        field: String,
        /// Its value.
        value: String,
        /// What is wrong and what to do.
        why: String,
    },
}

fn invalid(
    field: impl Into<String>,
    value: impl Into<String>,
    why: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.into(),
        why: why.into(),
    }
}

impl AgentConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Applies Calico-style environment variables over the file: `NODENAME`, `IP`,
    /// `IP_AUTODETECTION_METHOD`, `DATASTORE_TYPE`,
    /// `ETCD_ENDPOINTS` (comma separated), `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`,
    /// `KUBECONFIG`; an empty `ETCD_*_FILE` means none (as an empty ConfigMap value). `env` is passed in so that tests do not touch the process environment.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("NODENAME") {
            self.node_name = Some(v);
        }
        if let Some(v) = env("IP") {
            self.ip = Some(v);
        }
        if let Some(v) = env("IP_AUTODETECTION_METHOD") {
            self.ip_autodetection_method = v;
        }
        if let Some(v) = env("IP6") {
            self.ip6 = Some(v);
        }
        if let Some(v) = env("IP6_AUTODETECTION_METHOD") {
            self.ip6_autodetection_method = v;
        }
        if let Some(v) = env("DATASTORE_TYPE") {
            self.datastore.kind = v.parse().map_err(|why| ConfigError::Env {
                var: "DATASTORE_TYPE",
                value: v.clone(),
                why,
            })?;
        }
        if let Some(v) = env("ETCD_ENDPOINTS") {
            self.datastore.etcd_endpoints = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("ETCD_CA_CERT_FILE") {
            self.datastore.etcd_ca_file = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = env("ETCD_CERT_FILE") {
            self.datastore.etcd_cert_file = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = env("ETCD_KEY_FILE") {
            self.datastore.etcd_key_file = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = env("KUBECONFIG") {
            self.datastore.kubeconfig = Some(v.into());
        }
        if let Some(v) = env("ROUTE_REFLECTOR_CLUSTER_ID") {
            self.route_reflector_cluster_id = Some(v.parse().map_err(|_| ConfigError::Env {
                var: "ROUTE_REFLECTOR_CLUSTER_ID",
                value: v.clone(),
                why: "must be an IPv4 address, e.g. 244.0.0.1".into(),
            })?);
        }
        Ok(())
    }

    /// Checks every field and returns the first problem, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(name) = &self.node_name
            && !is_dns1123_subdomain(name)
        {
            return Err(invalid(
                "node_name",
                name,
                "must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters), as the Kubernetes Node name",
            ));
        }
        if let Err(e) = self
            .ip_autodetection_method
            .parse::<crate::autodetect::Method>()
        {
            return Err(invalid(
                "ip_autodetection_method",
                &self.ip_autodetection_method,
                e.to_string(),
            ));
        }
        if let Some(ip) = self.ip.as_deref().filter(|ip| *ip != "autodetect")
            && ip.parse::<std::net::Ipv4Addr>().is_err()
            && ip.parse::<ipnet::Ipv4Net>().is_err()
        {
            return Err(invalid(
                "ip",
                ip,
                "must be an IPv4 address, ADDR/PREFIX, or autodetect",
            ));
        }
        if let Err(e) = self
            .ip6_autodetection_method
            .parse::<crate::autodetect::Method>()
        {
            return Err(invalid(
                "ip6_autodetection_method",
                &self.ip6_autodetection_method,
                e.to_string(),
            ));
        }
        if let Some(ip) = self
            .ip6
            .as_deref()
            .filter(|ip| !matches!(*ip, "autodetect" | "none" | ""))
            && ip.parse::<std::net::Ipv6Addr>().is_err()
            && ip.parse::<ipnet::Ipv6Net>().is_err()
        {
            return Err(invalid(
                "ip6",
                ip,
                "must be an IPv6 address, ADDR/PREFIX, autodetect, or none",
            ));
        }
        if !self.socket.is_absolute() {
            return Err(invalid(
                "socket",
                self.socket.display().to_string(),
                "must be an absolute path",
            ));
        }
        if self.health_port != 0 && self.health_port == self.metrics_port {
            return Err(invalid(
                "metrics_port",
                self.metrics_port.to_string(),
                "is the same as health_port; give each endpoint its own port (or 0 to turn one off)",
            ));
        }
        if self.log_level.trim().is_empty() {
            return Err(invalid(
                "log_level",
                &self.log_level,
                "is empty; use e.g. info or debug",
            ));
        }
        let ds = &self.datastore;
        if ds.kind == DatastoreType::EtcdV3 {
            if ds.etcd_endpoints.is_empty() {
                return Err(invalid(
                    "datastore.etcd_endpoints",
                    "[]",
                    "is empty; set it in the file or ETCD_ENDPOINTS=http://HOST:2379",
                ));
            }
            for (i, ep) in ds.etcd_endpoints.iter().enumerate() {
                check_endpoint(ep)
                    .map_err(|why| invalid(format!("datastore.etcd_endpoints[{i}]"), ep, why))?;
            }
            let tls = [&ds.etcd_cert_file, &ds.etcd_key_file];
            if tls.iter().filter(|f| f.is_some()).count() == 1 {
                return Err(invalid(
                    "datastore.etcd_cert_file",
                    format!("{:?}", ds.etcd_cert_file),
                    "etcd_cert_file and etcd_key_file go together; set both or neither",
                ));
            }
        }
        Ok(())
    }

    /// The node name: the configured one, or the host name.
    pub fn node_name_or_hostname(&self) -> Result<String, ConfigError> {
        if let Some(n) = &self.node_name {
            return Ok(n.clone());
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|source| {
            ConfigError::Read {
                path: "/proc/sys/kernel/hostname".into(),
                source,
            }
        })?;
        Ok(host.trim().to_lowercase())
    }
}

fn check_endpoint(ep: &str) -> Result<(), String> {
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    let hostport = rest.trim_end_matches('/');
    if hostport.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err("must be http(s)://HOST:PORT, e.g. http://198.18.0.254:2379".into()),
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a Node name.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd_config() -> AgentConfig {
        let mut c = AgentConfig::default();
        c.datastore.etcd_endpoints = vec!["http://198.18.0.254:2379".into()];
        c
    }

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c: AgentConfig = toml::from_str(
            "node_name = \"node-1\"\n[datastore]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        assert_eq!(c.role, Role::Node);
        assert_eq!(c.health_port, 9099);
        assert_eq!(c.socket, PathBuf::from("/var/run/margay/agent.sock"));
        c.validate().unwrap();
    }

    #[test]
    fn an_unknown_field_is_rejected_with_its_name() {
        let err = toml::from_str::<AgentConfig>("node_nmae = \"x\"\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `node_nmae`"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = etcd_config();
        c.apply_env(|k| match k {
            "NODENAME" => Some("node-7".into()),
            "ETCD_ENDPOINTS" => Some("http://198.18.0.254:2379, http://198.18.0.253:2379".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("node-7"));
        assert_eq!(c.datastore.etcd_endpoints.len(), 2);
    }

    #[test]
    fn a_bad_datastore_type_names_the_variable() {
        let err = AgentConfig::default()
            .apply_env(|k| (k == "DATASTORE_TYPE").then(|| "etcd".to_string()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable DATASTORE_TYPE=\"etcd\": \"etcd\" is not a datastore type; use etcdv3 or kubernetes"
        );
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut c = etcd_config();
        c.datastore.etcd_endpoints.push("198.18.0.1:2379".into());
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "config field datastore.etcd_endpoints[1] = \"198.18.0.1:2379\": must start with http:// or https://"
        );

        let mut c = etcd_config();
        c.node_name = Some("Node_1".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("config field node_name = \"Node_1\": must be a DNS-1123 subdomain")
        );

        let mut c = etcd_config();
        c.metrics_port = c.health_port;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("metrics_port")
        );

        let c = AgentConfig::default();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("ETCD_ENDPOINTS")
        );
    }

    #[test]
    fn the_node_address_and_detection_method_are_checked() {
        let mut c = etcd_config();
        c.ip = Some("198.18.0.300".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("config field ip = \"198.18.0.300\"")
        );
        c.ip = Some("198.18.0.11/24".into());
        c.validate().unwrap();
        c.ip_autodetection_method = "interface=(".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("ip_autodetection_method")
        );
    }

    #[test]
    fn kubernetes_mode_needs_no_etcd_endpoints() {
        let mut c = AgentConfig::default();
        c.datastore.kind = DatastoreType::Kubernetes;
        c.validate().unwrap();
    }

    #[test]
    fn a_config_file_is_read_and_its_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "role = \"route-reflector\"\n").unwrap();
        assert_eq!(
            AgentConfig::from_file(&path).unwrap().role,
            Role::RouteReflector
        );
        std::fs::write(&path, "role = \"router\"\n").unwrap();
        let err = AgentConfig::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("agent.toml is not valid"), "{err}");
    }

    #[test]
    fn dns1123_subdomains() {
        for ok in ["node-1", "a.b.c", "n0"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a..b", "a_b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
