//! Pods: a network namespace wired by the real `margay-cni` (invoked exactly as a CNI runtime
//! does, inside the node's namespace), a pod server answering on its ports, and its labels and
//! named ports written on its WorkloadEndpoint (etcd) or its Pod object (Kubernetes datastore).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use margay_harness::{Netns, delete_netns};
use serde_json::{Value, json};

use super::bins::Bins;
use super::objects;
use super::state::{DatastoreKind, LabDir, Lock, NodeState, PodState, State};
use super::supervisor::{self, StartSpec};
use super::{log_tail, wait_for};

/// The CNI network name (the prefix of every IPAM handle).
pub const NETWORK: &str = "margay-lab";
/// The ports a pod serves when it declares none, as the upstream e2e pods.
pub const DEFAULT_PORTS: [u16; 2] = [80, 81];
/// How long a pod's routes may take to reach every node.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// A declared port: `NAME=PORT/PROTO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDecl {
    /// Its name (an IANA service name).
    pub name: String,
    /// The number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

impl std::str::FromStr for PortDecl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--port {s:?}: {why}; use NAME=PORT/PROTO, e.g. http=80/TCP");
        let (name, rest) = s.split_once('=').ok_or_else(|| bad("no NAME="))?;
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(
                "the name must be 1 to 15 of lower-case letters, digits and '-'",
            ));
        }
        let (port, proto) = rest.split_once('/').unwrap_or((rest, "TCP"));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be 1 to 65535"))?;
        let protocol = proto.to_ascii_uppercase();
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(bad("the protocol must be TCP, UDP or SCTP"));
        }
        Ok(PortDecl {
            name: name.to_owned(),
            port,
            protocol,
        })
    }
}

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Its namespace (must exist).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The node to put it on; the one with the fewest pods when absent.
    pub node: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its declared ports.
    pub ports: Vec<PortDecl>,
}

/// Splits `NS/NAME`.
pub fn parse_pod_id(id: &str) -> anyhow::Result<(String, String)> {
    match id.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => anyhow::bail!("{id:?} is not a pod: use NAMESPACE/NAME, e.g. default/pod-1-1"),
    }
}

/// The pod `NS/NAME` of the lab, or an error listing the pods there are.
pub fn find_pod<'a>(st: &'a State, id: &str) -> anyhow::Result<&'a PodState> {
    st.pods.get(id).ok_or_else(|| {
        let known: Vec<&str> = st.pods.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "no pod {id:?} in the lab; pods: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if let Some(why) = margay_api::names::dns1123_label_error(name) {
        anyhow::bail!("{what} {name:?} {why} (a DNS-1123 label, as Kubernetes requires)");
    }
    Ok(())
}

fn cni_conf(lab: &LabDir, st: &State, node: &NodeState) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "margay-cni",
        "agent_socket": node.socket,
        "log_file": lab.join(&node.name).join("cni.log"),
        "ipam": {"assign_ipv4": true, "assign_ipv6": st.ipv6},
    })
}

/// Runs the plugin as a runtime does: inside the node's namespace, `CNI_*` in the
/// environment, the network configuration on stdin. Returns stdout as JSON.
fn run_cni(
    bins: &Bins,
    node: &NodeState,
    command: &str,
    pod: &PodState,
    conf: &Value,
) -> anyhow::Result<Value> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &node.netns])
        .arg(&bins.cni)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
        )
        .env(
            "CNI_PATH",
            bins.cni.parent().unwrap_or(std::path::Path::new("/")),
        )
        .stderr(Stdio::piped());
    let out = margay_harness::cmd::run_with_input(&mut c, conf.to_string().as_bytes())
        .context("cannot run margay-cni")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "margay-cni {command} for {} failed ({}): {}{}",
            pod.id(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout)
        .with_context(|| format!("margay-cni {command} printed {stdout:?}, not JSON"))
}

/// Creates a pod; with `wait`, returns only once every node routes to it. Saves the state.
/// Returns the pod and the write of its labels and ports ([`objects::write_pod`]).
pub fn create(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    bins: &Bins,
    spec: &PodSpec,
    wait: bool,
) -> anyhow::Result<(PodState, objects::Written)> {
    check_name("namespace", &spec.namespace)?;
    check_name("pod name", &spec.name)?;
    let id = format!("{}/{}", spec.namespace, spec.name);
    if st.pods.contains_key(&id) {
        anyhow::bail!("pod {id} already exists; `margay-lab pod delete {id}` first");
    }
    if !objects::namespace_exists(st, &spec.namespace)? {
        anyhow::bail!(
            "namespace {:?} does not exist: create it with `margay-lab ns create {}`",
            spec.namespace,
            spec.namespace
        );
    }
    let node = match &spec.node {
        Some(n) => st.node(n).cloned().ok_or_else(|| {
            let names: Vec<&str> = st.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow::anyhow!(
                "--node {n:?} is not a node of the lab; nodes: {}",
                names.join(", ")
            )
        })?,
        None => st
            .nodes
            .iter()
            .min_by_key(|n| st.pods.values().filter(|p| p.node == n.name).count())
            .cloned()
            .context("the lab has no nodes")?,
    };
    st.next_pod += 1;
    let n = st.next_pod;
    let mut pod = PodState {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        node: node.name.clone(),
        netns: format!("{}pod-{n}", lab.netns_prefix()),
        container_id: format!("mgyl{}{n:08}", st.id),
        ips: Vec::new(),
        labels: spec.labels.clone(),
        ports: spec
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
            .collect(),
    };
    if st.datastore == DatastoreKind::Kubernetes {
        // The scheduler's Pod comes first, as in a cluster: the runtime then calls the plugin.
        objects::put_pod_object(st, &pod)?;
    }
    st.namespaces.push(pod.netns.clone());
    lab.save(lock, st)?;
    Netns::persistent(&pod.netns)?;
    let conf = cni_conf(lab, st, &node);
    let result = match run_cni(bins, &node, "ADD", &pod, &conf) {
        Ok(r) => r,
        Err(e) => {
            delete_netns(&pod.netns);
            st.namespaces.retain(|x| *x != pod.netns);
            lab.save(lock, st)?;
            return Err(e);
        }
    };
    pod.ips = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.parse::<IpNet>().ok())
        .map(|n| n.addr().to_string())
        .collect();
    // Recorded now: from here on `pod delete` / `down` can undo it.
    st.pods.insert(id.clone(), pod.clone());
    lab.save(lock, st)?;

    let finish = |st: &mut State| -> anyhow::Result<objects::Written> {
        if pod.ips.iter().any(|i| i.contains(':')) {
            wait_dad(&node, &pod)?;
        }
        start_server(lab, st, bins, &pod)?;
        lab.save(lock, st)?;
        let written = objects::write_pod(st, &pod)?;
        if wait {
            wait_routes(st, ROUTE_TIMEOUT)?;
        }
        Ok(written)
    };
    let written = finish(st);
    if let Err(e) = written {
        // Undo the half-made pod (CNI DEL, server, namespace) and report the first failure.
        if let Err(undo) = delete(lab, lock, st, bins, &id) {
            tracing::warn!(pod = %id, error = %undo, "cannot remove the half-made pod");
        }
        return Err(e.context(format!("pod {id} not created (removed again)")));
    }
    Ok((pod, written?))
}

/// Waits until IPv6 duplicate address detection is over on both sides of a new pod's veth:
/// tentative addresses (the pod's, the host side's fe80::ecee:eeff:feee:eeee that the pod's
/// default route points to) do not carry traffic yet.
fn wait_dad(node: &NodeState, pod: &PodState) -> anyhow::Result<()> {
    let tentative = |ns: &str| {
        margay_harness::cmd::run(&["ip", "-n", ns, "-6", "addr", "show", "tentative"])
            .map(|o| o.stdout.trim().to_owned())
            .unwrap_or_default()
    };
    wait_for(
        &format!("IPv6 duplicate address detection for pod {}", pod.id()),
        Duration::from_secs(10),
        || (tentative(&pod.netns).is_empty() && tentative(&node.netns).is_empty()).then_some(()),
        || {
            format!(
                "pod: {}
node: {}",
                tentative(&pod.netns),
                tentative(&node.netns)
            )
        },
    )
}

/// The supervisor's name for a pod's server.
pub fn server_name(pod: &PodState) -> String {
    format!("pod:{}", pod.id())
}

/// The ports a pod serves: its declared port numbers, or [`DEFAULT_PORTS`].
pub fn served_ports(pod: &PodState) -> Vec<u16> {
    let mut ports: Vec<u16> = pod.ports.iter().map(|p| p.1).collect();
    if ports.is_empty() {
        ports = DEFAULT_PORTS.to_vec();
    }
    ports.sort();
    ports.dedup();
    ports
}

fn start_server(lab: &LabDir, st: &mut State, bins: &Bins, pod: &PodState) -> anyhow::Result<()> {
    let ports = served_ports(pod);
    let mut args = vec!["pod-server".to_owned(), "--name".to_owned(), pod.id()];
    for p in &ports {
        args.push("--port".into());
        args.push(p.to_string());
    }
    let log = lab
        .join(&pod.node)
        .join(format!("pod-{}-{}.log", pod.namespace, pod.name));
    let p = supervisor::start(
        lab,
        StartSpec {
            name: server_name(pod),
            netns: Some(pod.netns.clone()),
            program: bins.lab.clone(),
            args,
            env: Vec::new(),
            log: log.clone(),
        },
    )?;
    st.procs.insert(server_name(pod), p.clone());
    let ns = Netns::adopt(&pod.netns)?;
    let first = ports[0];
    wait_for(
        &format!("the server of pod {} listens", pod.id()),
        Duration::from_secs(10),
        || {
            if !p.alive() {
                return None;
            }
            ns.run(move || {
                std::net::TcpStream::connect_timeout(
                    &(std::net::Ipv4Addr::LOCALHOST, first).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
            .ok()?
            .then_some(())
        },
        || log_tail(&log, 10),
    )
}

/// Deletes a pod: CNI DEL (which frees its addresses and makes the agent delete its
/// WorkloadEndpoint, or clear its Pod's annotations), its server, its namespace, and with the
/// Kubernetes datastore its Pod. Returns the endpoint's deletion, if it had one.
pub fn delete(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    bins: &Bins,
    id: &str,
) -> anyhow::Result<Option<objects::Written>> {
    let pod = find_pod(st, id)?.clone();
    let mut errors = Vec::new();
    let wep = objects::pod_wep_deletion(st, &pod).unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        None
    });
    if let Some(node) = st.node(&pod.node).cloned() {
        let conf = cni_conf(lab, st, &node);
        if let Err(e) = run_cni(bins, &node, "DEL", &pod, &conf) {
            errors.push(format!("{e:#}"));
        }
    }
    let name = server_name(&pod);
    if supervisor::stop(lab, &name).is_err()
        && let Some(p) = st.procs.get(&name)
    {
        p.stop(supervisor::STOP_GRACE);
    }
    st.procs.remove(&name);
    if delete_netns(&pod.netns) {
        st.namespaces.retain(|x| *x != pod.netns);
    } else {
        errors.push(format!("cannot delete namespace {}", pod.netns));
    }
    if st.datastore == DatastoreKind::Kubernetes
        && let Err(e) = super::ds::with_ds(st, |ds| async move {
            objects::delete_pod_object(&ds, &pod).await
        })
    {
        errors.push(format!("{e:#}"));
    }
    st.pods.remove(id);
    lab.save(lock, st)?;
    if !errors.is_empty() {
        anyhow::bail!("pod {id} removed with errors: {}", errors.join("; "));
    }
    Ok(wep)
}

/// Applies `k=v` / `k-` edits to a label map; errors name the bad argument.
pub fn edit_labels(labels: &mut BTreeMap<String, String>, edits: &[String]) -> anyhow::Result<()> {
    for e in edits {
        if let Some((k, v)) = e.split_once('=') {
            check_label_key(k, e)?;
            if v.len() > 63 {
                anyhow::bail!("label {e:?}: the value is longer than 63 characters");
            }
            labels.insert(k.to_owned(), v.to_owned());
        } else if let Some(k) = e.strip_suffix('-') {
            check_label_key(k, e)?;
            labels.remove(k);
        } else {
            anyhow::bail!("label {e:?}: use KEY=VALUE to set or KEY- to remove");
        }
    }
    Ok(())
}

fn check_label_key(k: &str, arg: &str) -> anyhow::Result<()> {
    let name = k.rsplit('/').next().unwrap_or(k);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        anyhow::bail!(
            "label {arg:?}: the key must be [PREFIX/]NAME with NAME 1 to 63 of letters, digits, '-', '_' and '.'"
        );
    }
    Ok(())
}

/// Waits until every node routes to every pod's IPv4 address: its own pods over their veth
/// (`dev mgy…`), the others' via the owning node's underlay address (learned over BGP).
pub fn wait_routes(st: &State, timeout: Duration) -> anyhow::Result<()> {
    wait_family(st, false, timeout)
}

/// As [`wait_routes`], for the pods' IPv6 addresses.
pub fn wait_routes_v6(st: &State, timeout: Duration) -> anyhow::Result<()> {
    wait_family(st, true, timeout)
}

fn wait_family(st: &State, v6: bool, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let missing = missing_routes(st, v6);
        if missing.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "routes not in place within {} s: {}",
                timeout.as_secs(),
                missing.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pod addresses of one family (IPv6 with `v6`) some node has no right route to, as
/// "node-1 has no route to ADDR (NS/POD)".
pub fn missing_routes(st: &State, v6: bool) -> Vec<String> {
    let mut missing = Vec::new();
    for n in &st.nodes {
        let family = if v6 { "-6" } else { "-4" };
        let table = margay_harness::cmd::run(&[
            "ip", "-n", &n.netns, family, "route", "show", "proto", "80",
        ])
        .map(|o| o.stdout)
        .unwrap_or_default();
        let routes = parse_routes(&table);
        for p in st.pods.values() {
            let owner = st.node(&p.node);
            for ip in p.ips.iter().filter_map(|i| i.parse::<IpAddr>().ok()) {
                if ip.is_ipv6() != v6 {
                    continue;
                }
                let ok = if p.node == n.name {
                    best_route(&routes, ip) == Some(&RouteVia::Local)
                } else {
                    let gateways: Vec<IpAddr> = owner
                        .into_iter()
                        .flat_map(|o| std::iter::once(&o.ipv4).chain(o.ipv6.as_ref()))
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    matches!(best_route(&routes, ip), Some(RouteVia::Gateway(g)) if gateways.contains(g))
                };
                if !ok {
                    missing.push(format!("{} has no route to {} ({})", n.name, ip, p.id()));
                }
            }
        }
    }
    missing
}

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteVia {
    /// Out of a pod's veth.
    Local,
    /// Via a gateway.
    Gateway(IpAddr),
    /// Dropped.
    Blackhole,
}

/// Parses `ip route show` lines into (prefix, target).
pub fn parse_routes(text: &str) -> Vec<(IpNet, RouteVia)> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (dst, rest) = match w.first()? {
                &"blackhole" => (*w.get(1)?, &w[2..]),
                d => (*d, &w[1..]),
            };
            let net: IpNet = dst
                .parse()
                .or_else(|_| dst.parse::<IpAddr>().map(IpNet::from))
                .ok()?;
            let target = if w[0] == "blackhole" {
                RouteVia::Blackhole
            } else if let Some(i) = rest.iter().position(|x| *x == "via") {
                let gw = rest.get(i + 1)?;
                // `via inet 198.18.0.12` (an IPv6 route over an IPv4 next hop).
                let gw = if matches!(*gw, "inet" | "inet6") {
                    rest.get(i + 2)?
                } else {
                    gw
                };
                RouteVia::Gateway(gw.parse().ok()?)
            } else if rest
                .windows(2)
                .any(|p| p[0] == "dev" && p[1].starts_with("mgy"))
            {
                RouteVia::Local
            } else {
                return None;
            };
            Some((net, target))
        })
        .collect()
}

/// The longest-prefix match for `ip`.
pub fn best_route(routes: &[(IpNet, RouteVia)], ip: IpAddr) -> Option<&RouteVia> {
    routes
        .iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_case_insensitive_protocols() {
        let p: PortDecl = "http=8080/tcp".parse().unwrap();
        assert_eq!(
            p,
            PortDecl {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into()
            }
        );
        assert_eq!("dns=53/Udp".parse::<PortDecl>().unwrap().protocol, "UDP");
        assert_eq!("web=80".parse::<PortDecl>().unwrap().protocol, "TCP");
        assert!("80/TCP".parse::<PortDecl>().unwrap_err().contains("NAME="));
        assert!("x=0/TCP".parse::<PortDecl>().is_err());
        assert!(
            "x=80/ICMP"
                .parse::<PortDecl>()
                .unwrap_err()
                .contains("TCP, UDP or SCTP")
        );
        assert!("Bad=80".parse::<PortDecl>().is_err());
    }

    #[test]
    fn label_edits_set_and_remove() {
        let mut l = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        edit_labels(&mut l, &["b=2".into(), "a-".into(), "x.io/c=3".into()]).unwrap();
        assert_eq!(
            l,
            BTreeMap::from([("b".into(), "2".into()), ("x.io/c".into(), "3".into())])
        );
        assert!(edit_labels(&mut l, &["nope".into()]).is_err());
        assert!(edit_labels(&mut l, &["=v".into()]).is_err());
    }

    #[test]
    fn pod_ids_are_namespace_slash_name() {
        assert_eq!(
            parse_pod_id("x/a").unwrap(),
            ("x".to_owned(), "a".to_owned())
        );
        assert!(parse_pod_id("a").is_err());
        assert!(parse_pod_id("x/a/b").is_err());
        assert!(parse_pod_id("/a").is_err());
    }

    proptest::proptest! {
        /// Setting labels then removing them leaves the other labels as they were, in any order
        /// of edits.
        #[test]
        fn label_edits_undo_cleanly(
            base in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..5),
            added in proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..5),
        ) {
            let mut l = base.clone();
            let sets: Vec<String> = added.iter().map(|(k, v)| format!("{k}={v}")).collect();
            edit_labels(&mut l, &sets).unwrap();
            for (k, v) in &added {
                proptest::prop_assert_eq!(l.get(k), Some(v));
            }
            let removes: Vec<String> = added.keys().map(|k| format!("{k}-")).collect();
            edit_labels(&mut l, &removes).unwrap();
            let mut want = base.clone();
            want.retain(|k, _| !added.contains_key(k));
            proptest::prop_assert_eq!(l, want);
        }

        /// The route chosen for an address contains it, and no longer prefix in the table does.
        #[test]
        fn the_chosen_route_is_the_longest_match(
            prefixes in proptest::collection::vec((0u32..=0xffff, 16u8..=32), 1..12),
            host in 0u32..=0xffff,
        ) {
            // Each route's gateway is 198.18.0.<its index>, so the choice can be traced back.
            let routes: Vec<(IpNet, RouteVia)> = prefixes
                .iter()
                .enumerate()
                .map(|(i, (bits, len))| {
                    let addr = std::net::Ipv4Addr::from(0x6440_0000 | bits);
                    let gw = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, i as u8));
                    (
                        IpNet::V4(ipnet::Ipv4Net::new(addr, *len).unwrap().trunc()),
                        RouteVia::Gateway(gw),
                    )
                })
                .collect();
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 | host));
            let longest = routes
                .iter()
                .filter(|(n, _)| n.contains(&ip))
                .map(|(n, _)| n.prefix_len())
                .max();
            match (best_route(&routes, ip), longest) {
                (None, None) => {}
                (Some(RouteVia::Gateway(IpAddr::V4(gw))), Some(len)) => {
                    let (net, _) = &routes[usize::from(gw.octets()[3])];
                    proptest::prop_assert!(net.contains(&ip));
                    proptest::prop_assert_eq!(net.prefix_len(), len);
                }
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn the_longest_prefix_decides_where_a_pod_address_goes() {
        let table = "blackhole 100.64.12.0/26 \n\
                     100.64.12.1 dev mgy0123456789a scope link \n\
                     100.64.7.0/26 via 198.18.0.12 dev eth0 \n\
                     fd00:100:64::/122 via inet 198.18.0.12 dev eth0 \n";
        let r = parse_routes(table);
        assert_eq!(
            best_route(&r, "100.64.12.1".parse().unwrap()),
            Some(&RouteVia::Local)
        );
        assert_eq!(
            best_route(&r, "100.64.12.2".parse().unwrap()),
            Some(&RouteVia::Blackhole)
        );
        assert_eq!(
            best_route(&r, "100.64.7.9".parse().unwrap()),
            Some(&RouteVia::Gateway("198.18.0.12".parse().unwrap()))
        );
        assert_eq!(
            best_route(&r, "fd00:100:64::3".parse().unwrap()),
            Some(&RouteVia::Gateway("198.18.0.12".parse().unwrap()))
        );
        assert_eq!(best_route(&r, "100.65.0.1".parse().unwrap()), None);
    }
}
