//! The CNI commands over the agent's local API and [`crate::veth`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use margay_agent::localapi::ApiError;
use margay_agent::localapi::client::{Client, ClientError};
use margay_agent::localapi::proto::{
    Allocate, Attachment, EndpointDown, EndpointUp, ErrorKind, Gc,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{CniError, Code};
use crate::naming::{HOST_MAC, attachment_veth_name};

/// The default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/var/run/margay/agent.sock";

/// The network configuration on stdin. Unknown keys are tolerated: runtimes add
/// `runtimeConfig`, `args`, `prevResult` and more.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// The spec version the runtime speaks.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The network name (prefix of every IPAM handle).
    pub name: String,
    /// Interface MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The agent's socket.
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// A file the plugin appends one line per call to (stdout belongs to the result).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Address settings.
    #[serde(default)]
    pub ipam: IpamConf,
    /// The previous result (CHECK, DEL, chained plugins).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
}

/// `ipam` in the configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamConf {
    /// Assign an IPv4 address (default true).
    #[serde(default = "yes")]
    pub assign_ipv4: bool,
    /// Assign an IPv6 address (default false).
    #[serde(default)]
    pub assign_ipv6: bool,
    /// IPv4 pools to use.
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    /// IPv6 pools to use.
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

impl Default for IpamConf {
    fn default() -> Self {
        Self {
            assign_ipv4: true,
            assign_ipv6: false,
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME.
    pub ifname: String,
    /// K8S_POD_NAMESPACE from CNI_ARGS.
    pub pod_namespace: String,
    /// K8S_POD_NAME from CNI_ARGS.
    pub pod_name: String,
}

impl Env {
    /// Reads the environment through `var`.
    pub fn from(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut env = Env {
            container_id: var("CNI_CONTAINERID").unwrap_or_default(),
            netns: var("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: var("CNI_IFNAME").unwrap_or_else(|| "eth0".into()),
            ..Default::default()
        };
        for kv in var("CNI_ARGS").unwrap_or_default().split(';') {
            match kv.split_once('=') {
                Some(("K8S_POD_NAMESPACE", v)) => env.pod_namespace = v.into(),
                Some(("K8S_POD_NAME", v)) => env.pod_name = v.into(),
                _ => {}
            }
        }
        env
    }

    fn require_container(&self) -> Result<(), CniError> {
        if self.container_id.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                "CNI_CONTAINERID is not set",
                None,
            ));
        }
        Ok(())
    }
}

fn client(conf: &NetConf) -> Client {
    Client::new(
        conf.agent_socket
            .clone()
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
        Duration::from_secs(60),
    )
}

fn agent_error(e: ClientError) -> CniError {
    match e {
        ClientError::Unreachable { .. } | ClientError::Io { .. } => CniError::new(
            Code::TryAgainLater,
            e.to_string(),
            Some("start margay-node on this node, then retry".into()),
        ),
        ClientError::Agent(ApiError { kind, message }) => {
            let code = match kind {
                ErrorKind::NotReady => Code::TryAgainLater,
                ErrorKind::Invalid => Code::InvalidConfig,
                ErrorKind::Exhausted => Code::NoAddresses,
                _ => Code::Plugin,
            };
            CniError::new(code, message, None)
        }
        other => CniError::new(Code::Plugin, other.to_string(), None),
    }
}

/// The IPAM handle of an attachment.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// The host-side veth of an attachment (see [`attachment_veth_name`]).
fn veth_of(att: &Attachment) -> String {
    attachment_veth_name(&att.namespace, &att.pod, &att.handle_id)
}

fn attachment(conf: &NetConf, env: &Env) -> Attachment {
    Attachment {
        handle_id: handle_id(&conf.name, &env.container_id),
        container_id: env.container_id.clone(),
        namespace: env.pod_namespace.clone(),
        pod: env.pod_name.clone(),
        ifname: env.ifname.clone(),
    }
}

/// The result JSON, in the version the runtime asked for (0.3.x/0.4.0 carry `version` per IP).
pub fn result(
    version: &str,
    host_if: &str,
    pod_if: &str,
    pod_mac: &str,
    netns: &Path,
    addrs: &[IpNet],
) -> Value {
    let old = version.starts_with("0.");
    let mac = HOST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let ips: Vec<Value> = addrs
        .iter()
        .map(|a| {
            let mut ip = json!({"address": a.to_string(), "interface": 1});
            if old {
                ip["version"] = json!(if a.addr().is_ipv4() { "4" } else { "6" });
            }
            ip
        })
        .collect();
    let mut routes = Vec::new();
    if addrs.iter().any(|a| a.addr().is_ipv4()) {
        routes.push(json!({"dst": "0.0.0.0/0"}));
    }
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        routes.push(json!({"dst": "::/0"}));
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": host_if, "mac": mac},
            {"name": pod_if, "mac": pod_mac, "sandbox": netns.display().to_string()},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// How long the steps of one call took, for the log line (`allocate_ms=… veth_ms=…`).
#[derive(Debug)]
pub struct Phases {
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
        }
    }
}

impl Phases {
    /// Records that `step` ended now (it began when the previous one ended).
    pub fn end(&mut self, step: &'static str) {
        let now = Instant::now();
        self.done.push((step, now - self.last));
        self.last = now;
    }

    /// ` step_ms=N.N` for each step, in order.
    pub fn render(&self) -> String {
        self.done
            .iter()
            .map(|(s, d)| format!(" {s}_ms={:.1}", d.as_secs_f64() * 1000.0))
            .collect()
    }
}

/// ADD: addresses from the agent, the veth, then endpoint_up; any failure undoes what was done.
pub fn add(conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    add_timed(conf, env, &mut Phases::default())
}

/// [`add`], recording how long each step took.
pub fn add_timed(conf: &NetConf, env: &Env, phases: &mut Phases) -> Result<Value, CniError> {
    env.require_container()?;
    let netns = env
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not set", None))?;
    let c = client(conf);
    let att = attachment(conf, env);
    let allocated = c
        .allocate(Allocate {
            attachment: Some(att.clone()),
            num_v4: u32::from(conf.ipam.assign_ipv4),
            num_v6: u32::from(conf.ipam.assign_ipv6),
            ipv4_pools: conf.ipam.ipv4_pools.clone(),
            ipv6_pools: conf.ipam.ipv6_pools.clone(),
            ip_addrs: Vec::new(),
        })
        .map_err(agent_error)?;
    phases.end("allocate");
    let undo = |e: CniError| {
        let _ = c.endpoint_down(EndpointDown {
            attachment: Some(att.clone()),
        });
        let _ = c.release(&att.handle_id);
        e
    };
    let addrs: Vec<IpNet> = allocated
        .addresses
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                CniError::new(
                    Code::Plugin,
                    format!("the agent gave a bad address {s:?}"),
                    None,
                )
            })
        })
        .collect::<Result<_, _>>()
        .map_err(undo)?;
    let host_if = veth_of(&att);
    // A repeated ADD: start again from a clean veth.
    let _ = crate::veth::delete(&host_if);
    let pod_mac = crate::veth::create(&netns, &host_if, &env.ifname, &addrs, conf.mtu)
        .map_err(|e| undo(CniError::new(Code::Plugin, e, None)))?;
    phases.end("veth");
    c.endpoint_up(EndpointUp {
        attachment: Some(att.clone()),
        host_ifname: host_if.clone(),
        addresses: allocated.addresses.clone(),
        mac: pod_mac.clone(),
    })
    .map_err(|e| {
        let _ = crate::veth::delete(&host_if);
        undo(agent_error(e))
    })?;
    phases.end("endpoint_up");
    Ok(result(
        &conf.cni_version,
        &host_if,
        &env.ifname,
        &pod_mac,
        &netns,
        &addrs,
    ))
}

/// DEL: idempotent; every step is tried and every error reported together.
pub fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    env.require_container()?;
    let c = client(conf);
    let att = attachment(conf, env);
    let mut errors = Vec::new();
    if let Err(e) = c.endpoint_down(EndpointDown {
        attachment: Some(att.clone()),
    }) {
        errors.push(agent_error(e));
    }
    if let Err(e) = crate::veth::delete(&veth_of(&att)) {
        errors.push(CniError::new(Code::Plugin, e, None));
    }
    if let Err(e) = c.release(&att.handle_id) {
        errors.push(agent_error(e));
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let code = errors[0].code;
            let msg = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            Err(CniError {
                cni_version: crate::version::CURRENT.into(),
                code,
                msg,
                details: None,
            })
        }
    }
}

/// CHECK: the pod's interface has the addresses of the previous result.
pub fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    env.require_container()?;
    let netns = env
        .netns
        .clone()
        .ok_or_else(|| CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not set", None))?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidConfig, "CHECK needs prevResult", None))?;
    let addrs: Vec<IpAddr> = prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| {
            ip["address"]
                .as_str()?
                .parse::<IpNet>()
                .ok()
                .map(|n| n.addr())
        })
        .collect();
    crate::veth::check(&netns, &env.ifname, &addrs)
        .map_err(|e| CniError::new(Code::Plugin, e, None))
}

/// STATUS: whether the agent can set up pods.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let s = client(conf)
        .status()
        .map_err(|e| CniError::new(Code::Unavailable, e.to_string(), None))?;
    if s.ready {
        Ok(())
    } else {
        Err(CniError::new(
            Code::Unavailable,
            format!("the Margay agent is not ready: {}", s.reason),
            None,
        ))
    }
}

/// GC: releases the attachments of this network not in `cni.dev/valid-attachments`.
pub fn gc(conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let valid = raw["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a["containerID"]
                .as_str()
                .map(|id| handle_id(&conf.name, id))
        })
        .collect();
    client(conf)
        .gc(Gc {
            network: conf.name.clone(),
            valid_handles: valid,
        })
        .map(|_| ())
        .map_err(agent_error)
}

/// Appends one line about a call to the configured log file (best effort: logging never fails a
/// call).
pub fn log(
    conf: &NetConf,
    env: &Env,
    command: &str,
    outcome: &Result<(), String>,
    phases: &Phases,
) {
    let Some(path) = &conf.log_file else { return };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let what = match outcome {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let line = format!(
        "{secs} container={} netns={} ifname={}{} command={command} {what}\n",
        env.container_id,
        env.netns
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        env.ifname,
        phases.render(),
    );
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
