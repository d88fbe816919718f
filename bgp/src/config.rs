//! The standalone speaker's configuration file (TOML).
//!
//! ```toml
//! # Who we are.
//! router_id = "198.18.0.1"        # BGP identifier (required)
//! asn = 64512                     # our AS (default 64512, Calico's)
//! listen_address = "0.0.0.0"      # "" to not listen at all
//! listen_port = 179
//! cluster_id = "198.18.0.1"       # route-reflector cluster id (default: router_id
//!                                 # when any peer is an rr-client)
//!
//! [graceful_restart]              # RFC 4724 and RFC 8538; every key optional
//! enabled = true                  # advertise it and keep restarting peers' routes
//! restart_time = 120              # seconds peers keep our routes while we restart (<= 4095)
//! restarting = false              # set the R bit: this start is a restart
//! forwarding = true               # F bit: forwarding state survives our restarts
//! notification = true             # N bit (RFC 8538): Hard Reset on shutdown
//! stale_time = 360                # seconds a restarted peer has to send End-of-RIB
//! eor_wait = 120                  # seconds End-of-RIB may wait for our own routes
//!
//! [[peers]]
//! address = "198.18.0.2"          # required
//! asn = 64512                     # required; equal to ours means iBGP
//! port = 179                      # where we connect to
//! local_address = "198.18.0.1"    # source address of our connections (optional)
//! passive = true                  # only accept the peer's connection
//! rr_client = true                # reflect routes to/from this peer (RFC 4456)
//! next_hop = "unchanged"          # "self" | "unchanged" (default: iBGP unchanged, eBGP self)
//! hold_time = 90                  # seconds; 0 or >= 3
//! connect_retry = 5               # seconds, first retry; doubles up to 120
//! families = ["ipv4-unicast", "ipv6-unicast"]
//! import = [{ prefix = "100.64.0.0/10", ge = 26, le = 32 }]           # default: all
//! export = [{ prefix = "100.64.0.0/10", le = 32, action = "permit" }] # default: all
//! password = "secret"             # TCP MD5 signatures (RFC 2385), at most 80 octets
//! graceful_restart = true         # per peer, when enabled above
//!
//! [[originate]]
//! prefix = "100.64.0.0/26"
//! next_hop = "198.18.0.1"         # optional; default: our address on each session
//! ```
//!
//! Unknown keys are errors, and [`Config::validate`] names the offending field
//! (`peers[1].hold_time`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::driver::{GracefulRestart, PeerConfig, SpeakerConfig};
use crate::policy::{PeerPolicy, PrefixList};
use crate::rib::NextHopMode;
use crate::wire::Family;

/// Errors loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A field has a bad value.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// Path of the field, e.g. `peers[0].hold_time`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// BGP identifier.
    pub router_id: Option<Ipv4Addr>,
    /// Our AS.
    pub asn: u32,
    /// Listen address; empty string disables listening.
    pub listen_address: String,
    /// Listen port.
    pub listen_port: u16,
    /// Route-reflector cluster id.
    pub cluster_id: Option<Ipv4Addr>,
    /// Graceful restart.
    pub graceful_restart: GracefulRestartSection,
    /// Peers.
    pub peers: Vec<PeerSection>,
    /// Prefixes to originate.
    pub originate: Vec<Originate>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            router_id: None,
            asn: 64512,
            listen_address: "0.0.0.0".into(),
            listen_port: 179,
            cluster_id: None,
            graceful_restart: GracefulRestartSection::default(),
            peers: Vec::new(),
            originate: Vec::new(),
        }
    }
}

/// The `[graceful_restart]` table (see [`GracefulRestart`] for the meanings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GracefulRestartSection {
    /// Advertise graceful restart and keep restarting peers' routes.
    pub enabled: bool,
    /// Restart time we advertise, seconds.
    pub restart_time: u16,
    /// Set the R bit.
    pub restarting: bool,
    /// Set the F bit.
    pub forwarding: bool,
    /// Advertise and honour the N bit (RFC 8538).
    pub notification: bool,
    /// Seconds a restarted peer has to send End-of-RIB.
    pub stale_time: u64,
    /// Seconds End-of-RIB may wait for our routes.
    pub eor_wait: u64,
}

impl Default for GracefulRestartSection {
    fn default() -> Self {
        let d = GracefulRestart::default();
        Self {
            enabled: d.enabled,
            restart_time: d.restart_time,
            restarting: d.restarting,
            forwarding: d.forwarding,
            notification: d.notification,
            stale_time: d.stale_time.as_secs(),
            eor_wait: d.eor_wait.as_secs(),
        }
    }
}

/// One `[[peers]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSection {
    /// The peer's address.
    pub address: Option<IpAddr>,
    /// The peer's AS.
    pub asn: Option<u32>,
    /// The peer's port.
    pub port: u16,
    /// Source address for our connections.
    pub local_address: Option<IpAddr>,
    /// Only accept connections.
    pub passive: bool,
    /// Route-reflector client.
    pub rr_client: bool,
    /// `self` or `unchanged`.
    pub next_hop: Option<NextHopMode>,
    /// Hold time (seconds).
    pub hold_time: u16,
    /// First connect retry (seconds).
    pub connect_retry: u64,
    /// Families.
    pub families: Vec<Family>,
    /// Import prefix list (absent: accept all).
    pub import: Option<PrefixList>,
    /// Export prefix list (absent: advertise all).
    pub export: Option<PrefixList>,
    /// TCP MD5 password.
    pub password: Option<String>,
    /// Graceful restart with this peer.
    pub graceful_restart: bool,
}

impl Default for PeerSection {
    fn default() -> Self {
        Self {
            address: None,
            asn: None,
            port: 179,
            local_address: None,
            passive: false,
            rr_client: false,
            next_hop: None,
            hold_time: 90,
            connect_retry: 5,
            families: Family::ALL.to_vec(),
            import: None,
            export: None,
            password: None,
            graceful_restart: true,
        }
    }
}

/// One `[[originate]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Originate {
    /// The prefix.
    pub prefix: IpNet,
    /// Next hop (default: our session address).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let c: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks values serde cannot, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rid = self
            .router_id
            .ok_or_else(|| invalid("router_id", "is required"))?;
        if rid.is_unspecified() {
            return Err(invalid("router_id", "must not be 0.0.0.0"));
        }
        if self.asn == 0 {
            return Err(invalid("asn", "must not be 0"));
        }
        if !self.listen_address.is_empty() && self.listen_address.parse::<IpAddr>().is_err() {
            return Err(invalid("listen_address", "is not an IP address"));
        }
        let mut seen = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let f = |name: &str| format!("peers[{i}].{name}");
            let addr = p
                .address
                .ok_or_else(|| invalid(f("address"), "is required"))?;
            if seen.contains(&addr) {
                return Err(invalid(f("address"), format!("{addr} is configured twice")));
            }
            seen.push(addr);
            match p.asn {
                None => return Err(invalid(f("asn"), "is required")),
                Some(0) => return Err(invalid(f("asn"), "must not be 0")),
                Some(_) => {}
            }
            if p.hold_time == 1 || p.hold_time == 2 {
                return Err(invalid(f("hold_time"), "must be 0 or at least 3 seconds"));
            }
            if p.connect_retry == 0 {
                return Err(invalid(f("connect_retry"), "must be at least 1 second"));
            }
            if p.families.is_empty() {
                return Err(invalid(f("families"), "must name at least one family"));
            }
            if let Some(pw) = &p.password
                && (pw.is_empty() || pw.len() > crate::driver::md5::MAX_KEY_LEN)
            {
                return Err(invalid(
                    f("password"),
                    format!(
                        "must be 1 to {} octets long, is {}",
                        crate::driver::md5::MAX_KEY_LEN,
                        pw.len()
                    ),
                ));
            }
            if p.rr_client && p.asn != Some(self.asn) {
                return Err(invalid(
                    f("rr_client"),
                    "route-reflector clients must be iBGP peers",
                ));
            }
            for (name, list) in [("import", &p.import), ("export", &p.export)] {
                if let Some(l) = list {
                    l.validate().map_err(|e| invalid(f(name), e.to_string()))?;
                }
            }
        }
        let gr = &self.graceful_restart;
        if gr.restart_time > 4095 {
            return Err(invalid(
                "graceful_restart.restart_time",
                format!("{} is more than 4095 seconds", gr.restart_time),
            ));
        }
        if gr.stale_time == 0 {
            return Err(invalid(
                "graceful_restart.stale_time",
                "must be at least 1 second",
            ));
        }
        for (i, o) in self.originate.iter().enumerate() {
            if let Some(nh) = o.next_hop
                && nh.is_ipv4() != matches!(o.prefix, IpNet::V4(_))
            {
                return Err(invalid(
                    format!("originate[{i}].next_hop"),
                    "family differs from the prefix's",
                ));
            }
        }
        Ok(())
    }

    /// The speaker settings (call after [`Config::validate`]).
    pub fn speaker(&self) -> SpeakerConfig {
        SpeakerConfig {
            local_as: self.asn,
            router_id: self.router_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
            listen: self
                .listen_address
                .parse::<IpAddr>()
                .ok()
                .map(|a| SocketAddr::new(a, self.listen_port)),
            cluster_id: self.cluster_id,
        }
    }

    /// The graceful-restart settings.
    pub fn graceful_restart(&self) -> GracefulRestart {
        let g = &self.graceful_restart;
        GracefulRestart {
            enabled: g.enabled,
            restart_time: g.restart_time,
            restarting: g.restarting,
            forwarding: g.forwarding,
            notification: g.notification,
            stale_time: Duration::from_secs(g.stale_time),
            eor_wait: Duration::from_secs(g.eor_wait),
        }
    }

    /// The peers' settings (call after [`Config::validate`]).
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.peers
            .iter()
            .filter_map(|p| {
                let mut c = PeerConfig::new(p.address?, p.asn?);
                c.port = p.port;
                c.local_addr = p.local_address;
                c.passive = p.passive;
                c.rr_client = p.rr_client;
                c.next_hop = p.next_hop;
                c.hold_time = p.hold_time;
                c.connect_retry = Duration::from_secs(p.connect_retry);
                c.families = p.families.clone();
                c.policy = PeerPolicy {
                    import: p.import.clone(),
                    export: p.export.clone(),
                };
                c.password = p.password.clone();
                c.graceful_restart = p.graceful_restart;
                Some(c)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
router_id = "198.18.0.1"
asn = 64512
listen_address = "198.18.0.1"
cluster_id = "198.18.0.1"

[graceful_restart]
restart_time = 90
restarting = true

[[peers]]
address = "198.18.0.2"
asn = 64512
password = "s3cret"
passive = true
rr_client = true
next_hop = "unchanged"
import = [{ prefix = "100.64.0.0/10", ge = 26, le = 32 }]

[[peers]]
address = "fd00::3"
asn = 65001
next_hop = "self"
hold_time = 30
families = ["ipv6-unicast"]
export = [{ prefix = "fd00::/8", le = 128, action = "deny" }]

[[originate]]
prefix = "100.64.0.0/26"
"#;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c: Config = toml::from_str(EXAMPLE).unwrap();
        c.validate().unwrap();
        let peers = c.peer_configs();
        assert_eq!(peers.len(), 2);
        assert!(peers[0].passive && peers[0].rr_client);
        assert_eq!(peers[1].next_hop, Some(NextHopMode::OwnAddress));
        assert_eq!(peers[1].families, vec![Family::Ipv6Unicast]);
        assert_eq!(c.speaker().listen, Some("198.18.0.1:179".parse().unwrap()));
        assert_eq!(peers[0].password.as_deref(), Some("s3cret"));
        let gr = c.graceful_restart();
        assert_eq!(
            (gr.restart_time, gr.restarting, gr.enabled),
            (90, true, true)
        );
        assert_eq!(gr.eor_wait, Duration::from_secs(120));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("router_id = \"1.1.1.1\"\nrouterid = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = toml::from_str::<Config>("[[peers]]\naddress = \"1.1.1.1\"\nas = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.peers[1].hold_time = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("peers[1].hold_time"), "{e}");
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.router_id = None;
        assert!(c.validate().unwrap_err().to_string().contains("router_id"));
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.peers[1].rr_client = true;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("peers[1].rr_client")
        );
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.peers[0].password = Some("x".repeat(81));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("peers[0].password"), "{e}");
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.graceful_restart.restart_time = 5000;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("graceful_restart.restart_time"), "{e}");
        let mut c: Config = toml::from_str(EXAMPLE).unwrap();
        c.peers[0].import.as_mut().unwrap().entries[0].ge = Some(8);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("peers[0].import")
        );
    }
}
