//! `AgentConfiguration`: the node agent's settings (Felix-style), a `default` object plus
//! per-node `node.NAME` overrides, merged by [`AgentSettings::resolve`].

use std::time::Duration;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bgp::LogSeverity;
use crate::duration::{DURATION_PATTERN, DurationError, parse_duration};

/// Name of the cluster-wide AgentConfiguration.
pub const AGENT_CONFIGURATION_DEFAULT: &str = "default";
/// Prefix of a per-node AgentConfiguration's name: `node.NAME`.
pub const AGENT_CONFIGURATION_NODE_PREFIX: &str = "node.";

/// The node agent's settings. The object named `default` applies to every node; an object named
/// `node.NAME` overrides, field by field, for node NAME. Unset fields take built-in defaults.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "crd.margay.dev",
    version = "v1",
    kind = "AgentConfiguration",
    plural = "agentconfigurations",
    singular = "agentconfiguration",
    shortname = "agentconfig",
    shortname = "agentconfigs",
    category = "margay",
    derive = "PartialEq",
    derive = "Default",
    crates(kube_core = "::kube_core"),
    doc = "Settings of the node agent: object `default` for all nodes, `node.NAME` overrides for one.",
    printcolumn(
        name = "LogLevel",
        type_ = "string",
        json_path = ".spec.logSeverityScreen"
    ),
    printcolumn(
        name = "IptablesBackend",
        type_ = "string",
        json_path = ".spec.iptablesBackend"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfigurationSpec {
    /// How often the routing table is re-read and repaired (e.g. `90s`). Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub route_refresh_interval: Option<String>,
    /// How often iptables chains are re-read and repaired. Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub iptables_refresh_interval: Option<String>,
    /// How often ipsets are re-read and repaired. Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub ipsets_refresh_interval: Option<String>,
    /// How often the agent does a full resync with the datastore, beyond watching it. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub datastore_resync_interval: Option<String>,
    /// How often the agent writes its NodeStatus. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub reporting_interval: Option<String>,
    /// Log level: Debug, Info, Warning or Error. Default Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<LogSeverity>,
    /// Whether the health endpoint (`/liveness`, `/readiness`) is served. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_enabled: Option<bool>,
    /// Address the health endpoint listens on. Default `localhost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_host: Option<String>,
    /// Port of the health endpoint. Default 9099.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub health_port: Option<u16>,
    /// Whether Prometheus metrics are served. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    /// Address the metrics endpoint listens on. Default all addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_host: Option<String>,
    /// Port of the metrics endpoint. Default 9091.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub prometheus_metrics_port: Option<u16>,
    /// Which iptables to program: `Auto` (detect what the host uses), `NFT` or `Legacy`.
    /// Default Auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_backend: Option<IptablesBackend>,
    /// Host ports always open inbound, whatever the policy, so that a bad policy cannot cut off
    /// the node. Default: tcp 22, udp 68, tcp 179, tcp 2379, tcp 2380, tcp 6443, tcp 10250.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    /// Host ports always open outbound. Default: udp 53, udp 67, tcp 179, tcp 2379, tcp 2380,
    /// tcp 6443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
}

/// Which iptables binary family to program.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = crate::schema::drop_description)]
pub enum IptablesBackend {
    /// Use whichever the host already uses.
    #[default]
    Auto,
    /// iptables-nft.
    #[serde(rename = "NFT")]
    Nft,
    /// iptables-legacy.
    Legacy,
}

/// An IP protocol of a port.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// A protocol and port.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub struct ProtoPort {
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The port number.
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn pp(protocol: Protocol, port: u16) -> ProtoPort {
    ProtoPort { protocol, port }
}

/// The agent's effective settings: `node.NAME` over `default` over built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// See [`AgentConfigurationSpec::route_refresh_interval`].
    pub route_refresh_interval: Duration,
    /// See [`AgentConfigurationSpec::iptables_refresh_interval`].
    pub iptables_refresh_interval: Duration,
    /// See [`AgentConfigurationSpec::ipsets_refresh_interval`].
    pub ipsets_refresh_interval: Duration,
    /// See [`AgentConfigurationSpec::datastore_resync_interval`].
    pub datastore_resync_interval: Duration,
    /// See [`AgentConfigurationSpec::reporting_interval`].
    pub reporting_interval: Duration,
    /// See [`AgentConfigurationSpec::log_severity_screen`].
    pub log_severity_screen: LogSeverity,
    /// See [`AgentConfigurationSpec::health_enabled`].
    pub health_enabled: bool,
    /// See [`AgentConfigurationSpec::health_host`].
    pub health_host: String,
    /// See [`AgentConfigurationSpec::health_port`].
    pub health_port: u16,
    /// See [`AgentConfigurationSpec::prometheus_metrics_enabled`].
    pub prometheus_metrics_enabled: bool,
    /// See [`AgentConfigurationSpec::prometheus_metrics_host`].
    pub prometheus_metrics_host: String,
    /// See [`AgentConfigurationSpec::prometheus_metrics_port`].
    pub prometheus_metrics_port: u16,
    /// See [`AgentConfigurationSpec::iptables_backend`].
    pub iptables_backend: IptablesBackend,
    /// See [`AgentConfigurationSpec::failsafe_inbound_host_ports`].
    pub failsafe_inbound_host_ports: Vec<ProtoPort>,
    /// See [`AgentConfigurationSpec::failsafe_outbound_host_ports`].
    pub failsafe_outbound_host_ports: Vec<ProtoPort>,
}

impl AgentConfigurationSpec {
    /// The built-in defaults, every field set.
    pub fn builtin_defaults() -> Self {
        use Protocol::{Tcp, Udp};
        let s = |v: &str| Some(v.to_string());
        AgentConfigurationSpec {
            route_refresh_interval: s("90s"),
            iptables_refresh_interval: s("90s"),
            ipsets_refresh_interval: s("90s"),
            datastore_resync_interval: s("5m"),
            reporting_interval: s("10s"),
            log_severity_screen: Some(LogSeverity::Info),
            health_enabled: Some(true),
            health_host: s("localhost"),
            health_port: Some(9099),
            prometheus_metrics_enabled: Some(false),
            prometheus_metrics_host: s(""),
            prometheus_metrics_port: Some(9091),
            iptables_backend: Some(IptablesBackend::Auto),
            failsafe_inbound_host_ports: Some(vec![
                pp(Tcp, 22),
                pp(Udp, 68),
                pp(Tcp, 179),
                pp(Tcp, 2379),
                pp(Tcp, 2380),
                pp(Tcp, 6443),
                pp(Tcp, 10250),
            ]),
            failsafe_outbound_host_ports: Some(vec![
                pp(Udp, 53),
                pp(Udp, 67),
                pp(Tcp, 179),
                pp(Tcp, 2379),
                pp(Tcp, 2380),
                pp(Tcp, 6443),
            ]),
        }
    }

    /// This object's settings over `base`: each field set here wins, field by field (a list set
    /// here replaces the base's list, even when empty).
    pub fn merged_over(&self, base: &AgentConfigurationSpec) -> AgentConfigurationSpec {
        macro_rules! pick {
            ($($f:ident),*) => {
                AgentConfigurationSpec { $($f: self.$f.clone().or_else(|| base.$f.clone()),)* }
            };
        }
        pick!(
            route_refresh_interval,
            iptables_refresh_interval,
            ipsets_refresh_interval,
            datastore_resync_interval,
            reporting_interval,
            log_severity_screen,
            health_enabled,
            health_host,
            health_port,
            prometheus_metrics_enabled,
            prometheus_metrics_host,
            prometheus_metrics_port,
            iptables_backend,
            failsafe_inbound_host_ports,
            failsafe_outbound_host_ports
        )
    }
}

impl crate::Defaults for AgentConfigurationSpec {
    fn apply_defaults(&mut self) {
        *self = self.merged_over(&AgentConfigurationSpec::builtin_defaults());
    }
}

impl AgentConfiguration {
    /// The name of node `node`'s override object: `node.NAME`.
    pub fn name_for_node(node: &str) -> String {
        format!("{AGENT_CONFIGURATION_NODE_PREFIX}{node}")
    }
}

impl AgentSettings {
    /// Merges `node` (the `node.NAME` object's spec) over `default` (the `default` object's spec)
    /// over the built-in defaults, and parses the durations.
    pub fn merge(
        default: Option<&AgentConfigurationSpec>,
        node: Option<&AgentConfigurationSpec>,
    ) -> Result<Self, DurationError> {
        let builtin = AgentConfigurationSpec::builtin_defaults();
        let base = default.map_or(builtin.clone(), |d| d.merged_over(&builtin));
        let m = node.map_or(base.clone(), |n| n.merged_over(&base));
        let dur = |v: &Option<String>| parse_duration(v.as_deref().unwrap_or("0"));
        Ok(AgentSettings {
            route_refresh_interval: dur(&m.route_refresh_interval)?,
            iptables_refresh_interval: dur(&m.iptables_refresh_interval)?,
            ipsets_refresh_interval: dur(&m.ipsets_refresh_interval)?,
            datastore_resync_interval: dur(&m.datastore_resync_interval)?,
            reporting_interval: dur(&m.reporting_interval)?,
            log_severity_screen: m.log_severity_screen.unwrap_or_default(),
            health_enabled: m.health_enabled.unwrap_or(true),
            health_host: m.health_host.unwrap_or_default(),
            health_port: m.health_port.unwrap_or(9099),
            prometheus_metrics_enabled: m.prometheus_metrics_enabled.unwrap_or(false),
            prometheus_metrics_host: m.prometheus_metrics_host.unwrap_or_default(),
            prometheus_metrics_port: m.prometheus_metrics_port.unwrap_or(9091),
            iptables_backend: m.iptables_backend.unwrap_or_default(),
            failsafe_inbound_host_ports: m.failsafe_inbound_host_ports.unwrap_or_default(),
            failsafe_outbound_host_ports: m.failsafe_outbound_host_ports.unwrap_or_default(),
        })
    }

    /// The settings of node `node` from a set of AgentConfiguration objects (the `default` one and
    /// `node.NODE`, if present; others are ignored).
    pub fn resolve<'a>(
        objects: impl IntoIterator<Item = &'a AgentConfiguration>,
        node: &str,
    ) -> Result<Self, DurationError> {
        let wanted = AgentConfiguration::name_for_node(node);
        let (mut default, mut per_node) = (None, None);
        for o in objects {
            match o.metadata.name.as_deref() {
                Some(AGENT_CONFIGURATION_DEFAULT) => default = Some(&o.spec),
                Some(n) if n == wanted => per_node = Some(&o.spec),
                _ => {}
            }
        }
        Self::merge(default, per_node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Defaults;

    fn obj(name: &str, spec: AgentConfigurationSpec) -> AgentConfiguration {
        AgentConfiguration::new(name, spec)
    }

    #[test]
    fn with_no_objects_the_builtin_defaults_apply() {
        let s = AgentSettings::resolve([], "n1").unwrap();
        assert_eq!(s.route_refresh_interval, Duration::from_secs(90));
        assert_eq!(s.datastore_resync_interval, Duration::from_secs(300));
        assert_eq!(s.health_port, 9099);
        assert!(s.health_enabled);
        assert!(!s.prometheus_metrics_enabled);
        assert_eq!(s.iptables_backend, IptablesBackend::Auto);
        assert!(
            s.failsafe_inbound_host_ports
                .contains(&pp(Protocol::Tcp, 22))
        );
    }

    #[test]
    fn a_node_override_wins_field_by_field_over_default() {
        let default = obj(
            "default",
            AgentConfigurationSpec {
                log_severity_screen: Some(LogSeverity::Warning),
                health_port: Some(9100),
                ..Default::default()
            },
        );
        let n1 = obj(
            "node.n1",
            AgentConfigurationSpec {
                log_severity_screen: Some(LogSeverity::Debug),
                iptables_backend: Some(IptablesBackend::Legacy),
                failsafe_inbound_host_ports: Some(vec![]),
                ..Default::default()
            },
        );
        let other = obj(
            "node.n2",
            AgentConfigurationSpec {
                health_port: Some(1),
                ..Default::default()
            },
        );
        let s = AgentSettings::resolve([&default, &n1, &other], "n1").unwrap();
        assert_eq!(s.log_severity_screen, LogSeverity::Debug);
        assert_eq!(s.health_port, 9100);
        assert_eq!(s.iptables_backend, IptablesBackend::Legacy);
        assert!(s.failsafe_inbound_host_ports.is_empty());
        let s2 = AgentSettings::resolve([&default, &n1, &other], "n3").unwrap();
        assert_eq!(s2.log_severity_screen, LogSeverity::Warning);
        assert_eq!(s2.iptables_backend, IptablesBackend::Auto);
    }

    #[test]
    fn a_bad_duration_is_an_error() {
        let d = AgentConfigurationSpec {
            route_refresh_interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(AgentSettings::merge(Some(&d), None).is_err());
    }

    #[test]
    fn apply_defaults_fills_every_field() {
        let mut s = AgentConfigurationSpec {
            health_port: Some(1234),
            ..Default::default()
        };
        s.apply_defaults();
        assert_eq!(s.health_port, Some(1234));
        assert_eq!(s.route_refresh_interval.as_deref(), Some("90s"));
        let full = AgentConfigurationSpec::builtin_defaults();
        assert_eq!(s.merged_over(&full), s);
    }
}
