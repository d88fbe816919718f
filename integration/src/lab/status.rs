//! `margay-lab status`: what the lab looks like — nodes, their blocks, pods and addresses, BGP
//! sessions — as a picture for people, JSON for scripts, and a graph (dot, SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use margay_api::ipam::AffinityState;
use margay_api::{BGPConfiguration, BlockAffinity, MargayNode, NodeStatus};
use margay_datastore::Typed;
use serde::Serialize;

use super::ds::with_ds;
use super::state::{DatastoreKind, LabDir, State};

/// The JSON of `status -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The nodes, in order.
    pub nodes: Vec<NodeInfo>,
    /// Every BGP session, as each node (and reflector) reports it.
    pub peers: Vec<PeerInfo>,
    /// The dedicated route reflectors (absent with the full mesh).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reflectors: Vec<ReflectorInfo>,
    /// The external router (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterInfo>,
}

/// One dedicated route reflector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReflectorInfo {
    /// `rr-1`.
    pub name: String,
    /// Its underlay (BGP) address.
    pub address: String,
    /// Its route-reflector cluster id.
    pub cluster_id: String,
}

/// One of the external router's sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterSession {
    /// The peer: a node's name, else its address.
    pub peer: String,
    /// Its state (`Established` when up).
    pub state: String,
}

/// A prefix the external router learned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterRoute {
    /// The prefix (a block).
    pub prefix: String,
    /// The node it was learned from.
    pub from: String,
}

/// The external router and what it reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterInfo {
    /// `bird`, `frr` or `gobgp`.
    pub kind: String,
    /// Its underlay address.
    pub address: String,
    /// Its AS.
    pub asn: u32,
    /// Its sessions, as the router reports them.
    pub sessions: Vec<RouterSession>,
    /// The prefixes it learned, as it reports them.
    pub routes: Vec<RouterRoute>,
    /// Why the router could not be asked, if it could not.
    pub error: Option<String>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInfo {
    /// `node-1`.
    pub name: String,
    /// Its underlay (BGP) address.
    pub address: String,
    /// Its AS number.
    pub asn: u32,
    /// The blocks affine to it.
    pub blocks: Vec<String>,
    /// Its pods.
    pub pods: Vec<PodInfo>,
}

/// One pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodInfo {
    /// `NS/POD`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// IPv4 (IPv6 when it has no IPv4).
    pub ip: String,
    /// Every address.
    pub ips: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// One BGP session, from one node's side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    /// The reporting node.
    pub node: String,
    /// The peer: a lab node's name, else its address.
    pub peer: String,
    /// `NodeMesh`, `GlobalPeer` or `NodePeer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 4271 state, `Established` when up.
    pub state: String,
    /// Since when (RFC 3339), if known.
    pub since: Option<String>,
}

fn enum_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What the state alone says, when the datastore cannot be reached: nodes and pods, no blocks,
/// no sessions, the default AS number.
pub fn offline(st: &State) -> Status {
    Status {
        nodes: st
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                address: n.ipv4.clone(),
                asn: margay_api::bgp::DEFAULT_AS_NUMBER,
                blocks: Vec::new(),
                pods: pods_of(st, &n.name),
            })
            .collect(),
        peers: Vec::new(),
        reflectors: reflectors_of(st),
        router: None,
    }
}

fn reflectors_of(st: &State) -> Vec<ReflectorInfo> {
    st.reflectors
        .iter()
        .map(|r| ReflectorInfo {
            name: r.name.clone(),
            address: r.ipv4.clone(),
            cluster_id: r.cluster_id.clone(),
        })
        .collect()
}

/// Lab names by underlay address: nodes, reflectors and `tor`.
fn names_by_address(st: &State) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in &st.nodes {
        out.insert(n.ipv4.clone(), n.name.clone());
        out.extend(n.ipv6.clone().map(|a| (a, n.name.clone())));
    }
    for r in &st.reflectors {
        out.insert(r.ipv4.clone(), r.name.clone());
        out.extend(r.ipv6.clone().map(|a| (a, r.name.clone())));
    }
    if let Some(r) = &st.router {
        out.insert(r.ipv4.clone(), "tor".to_owned());
        out.extend(r.ipv6.clone().map(|a| (a, "tor".to_owned())));
    }
    out
}

fn router_info(st: &State, by_addr: &BTreeMap<String, String>) -> Option<RouterInfo> {
    let r = st.router.as_ref()?;
    let name = |a: std::net::IpAddr| {
        by_addr
            .get(&a.to_string())
            .cloned()
            .unwrap_or_else(|| a.to_string())
    };
    let mut info = RouterInfo {
        kind: r.kind.as_str().to_owned(),
        address: r.ipv4.clone(),
        asn: r.asn,
        sessions: Vec::new(),
        routes: Vec::new(),
        error: None,
    };
    match super::router::sessions(r).and_then(|s| Ok((s, super::router::learned(r)?))) {
        Ok((sessions, routes)) => {
            info.sessions = sessions
                .into_iter()
                .map(|n| RouterSession {
                    peer: name(n.address),
                    state: format!("{:?}", n.state),
                })
                .collect();
            info.routes = routes
                .into_values()
                .map(|l| RouterRoute {
                    prefix: l.prefix.to_string(),
                    from: l.from.map(name).unwrap_or_default(),
                })
                .collect();
        }
        Err(e) => info.error = Some(format!("{e:#}")),
    }
    Some(info)
}

fn pods_of(st: &State, node: &str) -> Vec<PodInfo> {
    st.pods
        .values()
        .filter(|p| p.node == node)
        .map(|p| PodInfo {
            name: p.id(),
            namespace: p.namespace.clone(),
            ip: super::probe::pod_ip(p)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            ips: p.ips.clone(),
            labels: p.labels.clone(),
        })
        .collect()
}

/// Reads the lab's status from its state and the datastore.
pub fn gather(st: &State) -> anyhow::Result<Status> {
    let (nodes, affinities, statuses, default_as) = with_ds(st, |ds| async move {
        let (nodes, _) = Typed::<MargayNode>::new(ds.clone()).list(None).await?;
        let (aff, _) = Typed::<BlockAffinity>::new(ds.clone()).list(None).await?;
        let (statuses, _) = Typed::<NodeStatus>::new(ds.clone()).list(None).await?;
        let default_as = Typed::<BGPConfiguration>::new(ds)
            .get(None, margay_api::bgp::BGP_CONFIGURATION_DEFAULT)
            .await
            .ok()
            .and_then(|c| c.spec.as_number)
            .unwrap_or(margay_api::bgp::DEFAULT_AS_NUMBER);
        Ok((nodes, aff, statuses, default_as))
    })?;
    let by_addr = names_by_address(st);
    let mut out = Status {
        nodes: Vec::new(),
        peers: Vec::new(),
        reflectors: reflectors_of(st),
        router: router_info(st, &by_addr),
    };
    for n in &st.nodes {
        let asn = nodes
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(&n.name))
            .and_then(|m| m.spec.bgp.as_ref()?.as_number)
            .unwrap_or(default_as);
        let mut blocks: Vec<String> = affinities
            .iter()
            .filter(|a| {
                a.spec.node == n.name && a.spec.state == AffinityState::Confirmed && !a.spec.deleted
            })
            .map(|a| a.spec.cidr.clone())
            .collect();
        blocks.sort();
        let pods = pods_of(st, &n.name);
        out.nodes.push(NodeInfo {
            name: n.name.clone(),
            address: n.ipv4.clone(),
            asn,
            blocks,
            pods,
        });
    }
    // Every session as each node and each reflector publishes it.
    let speakers = st
        .nodes
        .iter()
        .map(|n| &n.name)
        .chain(st.reflectors.iter().map(|r| &r.name));
    for speaker in speakers {
        let peers = statuses
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(speaker))
            .and_then(|s| s.status.as_ref()?.bgp.as_ref())
            .map(|b| b.peers.clone())
            .unwrap_or_default();
        for p in peers {
            out.peers.push(PeerInfo {
                node: speaker.clone(),
                peer: by_addr
                    .get(&p.peer_ip)
                    .cloned()
                    .unwrap_or_else(|| p.peer_ip.clone()),
                kind: enum_name(&p.peer_type),
                state: enum_name(&p.state),
                since: p.since.map(|t| t.0.to_string()),
            });
        }
    }
    Ok(out)
}

/// The Kubernetes objects the picture lists besides the topology.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// Namespaces and their labels (without `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// NetworkPolicies as `NS/NAME`.
    pub policies: Vec<String>,
}

/// Reads the namespaces and policies for the picture.
pub fn objects(st: &State) -> anyhow::Result<Objects> {
    let mut namespaces = super::objects::namespaces(st)?;
    for labels in namespaces.values_mut() {
        labels.remove(margay_api::k8s::LABEL_NAMESPACE_NAME);
    }
    Ok(Objects {
        namespaces,
        policies: super::objects::policies(st)?,
    })
}

/// The picture a person reads at a glance.
pub fn picture(lab: &LabDir, st: &State, s: &Status, objects: Option<&Objects>) -> String {
    let mut o = String::new();
    let sup = match &st.supervisor {
        Some(p) if p.alive() => format!("supervisor pid {}", p.pid),
        _ => "SUPERVISOR NOT RUNNING (`margay-lab down` cleans up)".to_owned(),
    };
    let npods: usize = s.nodes.iter().map(|n| n.pods.len()).sum();
    let datastore = match st.datastore {
        DatastoreKind::Etcdv3 => "etcd",
        DatastoreKind::Kubernetes => "Kubernetes API",
    };
    let _ = writeln!(
        o,
        "Margay lab in {} — {} nodes, {} pods{}; {datastore} {} in {}; {}",
        lab.path().display(),
        s.nodes.len(),
        npods,
        if st.ipv6 { ", dual stack" } else { "" },
        st.etcd_endpoint,
        st.infra,
        sup
    );
    if let Some(i) = &st.internet {
        let _ = writeln!(
            o,
            "internet host {} behind infra (pods reach it through natOutgoing)",
            i.address
        );
    }
    if !st.ready {
        let _ = writeln!(o, "(not ready: `up` did not finish)");
    }
    let _ = writeln!(o, "underlay 198.18.0.0/24 ({} bridge br0)", st.bridge);
    let name_w = s
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter().map(|p| p.name.len()))
        .max()
        .unwrap_or(0)
        .max(10);
    for n in &s.nodes {
        let up = s
            .peers
            .iter()
            .filter(|p| p.node == n.name && p.state == "Established")
            .count();
        let all = s.peers.iter().filter(|p| p.node == n.name).count();
        let agent = match st.procs.get(&format!("agent-{}", n.name)) {
            Some(p) if p.alive() => "",
            _ => "  AGENT NOT RUNNING",
        };
        let _ = writeln!(
            o,
            "\n{}  {}  AS {}  BGP {up}/{all} up  blocks {}{agent}",
            n.name,
            n.address,
            n.asn,
            if n.blocks.is_empty() {
                "-".to_owned()
            } else {
                n.blocks.join(" ")
            }
        );
        for (i, p) in n.pods.iter().enumerate() {
            let branch = if i + 1 == n.pods.len() {
                "└─"
            } else {
                "├─"
            };
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                o,
                "  {branch} {:name_w$}  {:<30}  {}",
                p.name,
                p.ips.join(" "),
                labels.join(",")
            );
        }
    }
    let bgp_up = |who: &str| {
        let up = s
            .peers
            .iter()
            .filter(|p| p.node == who && p.state == "Established")
            .count();
        let all = s.peers.iter().filter(|p| p.node == who).count();
        format!("BGP {up}/{all} up")
    };
    for r in &s.reflectors {
        let running = match st.procs.get(&format!("reflector-{}", r.name)) {
            Some(p) if p.alive() => "",
            _ => "  REFLECTOR NOT RUNNING",
        };
        let _ = writeln!(
            o,
            "\n{}  {}  route reflector, cluster {}  {}{running}",
            r.name,
            r.address,
            r.cluster_id,
            bgp_up(&r.name)
        );
    }
    if let Some(r) = &s.router {
        let _ = write!(
            o,
            "\ntor  {}  external router ({}), AS {}",
            r.address, r.kind, r.asn
        );
        match &r.error {
            Some(e) => {
                let _ = writeln!(o, "  NOT ANSWERING: {e}");
            }
            None => {
                let up = r
                    .sessions
                    .iter()
                    .filter(|x| x.state == "Established")
                    .count();
                let _ = writeln!(
                    o,
                    "  BGP {up}/{} up  learned {} prefixes",
                    r.sessions.len(),
                    r.routes.len()
                );
                for x in &r.sessions {
                    let learned: Vec<&str> = r
                        .routes
                        .iter()
                        .filter(|l| l.from == x.peer)
                        .map(|l| l.prefix.as_str())
                        .collect();
                    let _ = writeln!(
                        o,
                        "  ├─ {:<12} {:<12} {}",
                        x.peer,
                        x.state,
                        learned.join(" ")
                    );
                }
            }
        }
    }
    if let Some(obj) = objects {
        let ns: Vec<String> = obj
            .namespaces
            .iter()
            .map(|(n, labels)| {
                if labels.is_empty() {
                    n.clone()
                } else {
                    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{n} ({})", l.join(","))
                }
            })
            .collect();
        let _ = writeln!(o, "\nnamespaces: {}", ns.join("  "));
        let _ = writeln!(
            o,
            "network policies: {}",
            if obj.policies.is_empty() {
                "none".to_owned()
            } else {
                obj.policies.join("  ")
            }
        );
    }
    if !s.peers.is_empty() {
        let _ = writeln!(o, "\nBGP sessions");
        for p in &s.peers {
            let _ = writeln!(
                o,
                "  {} → {:<12} {:<10} {:<12} {}",
                p.node,
                p.peer,
                p.kind,
                p.state,
                p.since
                    .as_deref()
                    .map(|t| format!("since {t}"))
                    .unwrap_or_default()
            );
        }
    }
    o
}

/// Unordered node pairs with their two sides' states.
fn sessions(s: &Status) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in &s.peers {
        let key = if p.node < p.peer {
            (p.node.clone(), p.peer.clone())
        } else {
            (p.peer.clone(), p.node.clone())
        };
        out.entry(key).or_default().push(p.state.clone());
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The topology as a Graphviz graph.
pub fn dot(st: &State, s: &Status) -> String {
    let mut o = String::from(
        "graph margay_lab {\n  graph [fontname=\"Helvetica\" rankdir=TB];\n  node [fontname=\"Helvetica\" fontsize=10];\n  edge [fontname=\"Helvetica\" fontsize=9];\n",
    );
    let _ = writeln!(
        o,
        "  underlay [label=\"underlay 198.18.0.0/24\" shape=box style=\"rounded,filled\" fillcolor=\"#eeeeee\"];"
    );
    let _ = writeln!(
        o,
        "  infra [label=\"infra\\n{}\\netcd\" shape=cylinder];\n  underlay -- infra;",
        esc(st.etcd_endpoint.trim_start_matches("http://"))
    );
    for n in &s.nodes {
        let _ = writeln!(
            o,
            "  \"{}\" [label=\"{}\\n{}  AS {}\\n{}\" shape=box style=filled fillcolor=\"#dde8f7\"];\n  underlay -- \"{}\";",
            esc(&n.name),
            esc(&n.name),
            esc(&n.address),
            n.asn,
            esc(&n.blocks.join("\\n")),
            esc(&n.name)
        );
        for p in &n.pods {
            let _ = writeln!(
                o,
                "  \"{}\" [label=\"{}\\n{}\" shape=ellipse];\n  \"{}\" -- \"{}\";",
                esc(&p.name),
                esc(&p.name),
                esc(&p.ips.join("\\n")),
                esc(&n.name),
                esc(&p.name)
            );
        }
    }
    for ((a, b), states) in sessions(s) {
        let up = states.iter().all(|x| x == "Established");
        let _ = writeln!(
            o,
            "  \"{}\" -- \"{}\" [style=dashed constraint=false color=\"{}\" label=\"BGP {}\"];",
            esc(&a),
            esc(&b),
            if up { "#2e7d32" } else { "#c62828" },
            if up { "up" } else { "down" }
        );
    }
    o.push_str("}\n");
    o
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The topology as SVG: rendered by Graphviz's `dot` when installed, else drawn here.
pub fn svg(st: &State, s: &Status) -> String {
    let graph = dot(st, s);
    let rendered = (|| {
        use std::io::Write;
        let mut child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(graph.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })();
    rendered.unwrap_or_else(|| simple_svg(st, s))
}

/// A plain drawing: the underlay on top, nodes in a row, their pods below, BGP sessions as arcs.
pub fn simple_svg(st: &State, s: &Status) -> String {
    const COL: i64 = 230;
    const NODE_W: i64 = 200;
    let cols = s.nodes.len() as i64 + 1;
    let max_pods = s.nodes.iter().map(|n| n.pods.len()).max().unwrap_or(0) as i64;
    let width = cols * COL + 20;
    let height = 330 + max_pods * 56;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        o,
        "<rect x=\"10\" y=\"20\" width=\"{}\" height=\"26\" rx=\"8\" fill=\"#eeeeee\" stroke=\"#555\"/><text x=\"20\" y=\"38\">underlay 198.18.0.0/24</text>",
        width - 20
    );
    // Infra in the first column.
    let _ = writeln!(
        o,
        "<line x1=\"110\" y1=\"46\" x2=\"110\" y2=\"200\" stroke=\"#555\"/><rect x=\"10\" y=\"200\" width=\"{NODE_W}\" height=\"56\" rx=\"12\" fill=\"#fff8e1\" stroke=\"#555\"/><text x=\"20\" y=\"222\">infra (etcd)</text><text x=\"20\" y=\"242\">{}</text>",
        xml(st.etcd_endpoint.trim_start_matches("http://"))
    );
    let center = |i: usize| (i as i64 + 1) * COL + 10 + NODE_W / 2;
    // BGP sessions as arcs between node tops.
    let index: BTreeMap<&str, usize> = s
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for ((a, b), states) in sessions(s) {
        let (Some(&ia), Some(&ib)) = (index.get(a.as_str()), index.get(b.as_str())) else {
            continue;
        };
        let up = states.iter().all(|x| x == "Established");
        let (x1, x2) = (center(ia), center(ib));
        let lift = 20 + (x2 - x1).abs() / 8;
        let _ = writeln!(
            o,
            "<path d=\"M {x1} 110 C {x1} {y}, {x2} {y}, {x2} 110\" fill=\"none\" stroke=\"{}\" stroke-dasharray=\"6 4\" stroke-width=\"2\"><title>BGP {a} – {b}: {}</title></path>",
            if up { "#2e7d32" } else { "#c62828" },
            xml(&states.join("/")),
            y = 110 - lift.min(60)
        );
    }
    for (i, n) in s.nodes.iter().enumerate() {
        let x = (i as i64 + 1) * COL + 10;
        let c = center(i);
        let _ = writeln!(
            o,
            "<line x1=\"{c}\" y1=\"46\" x2=\"{c}\" y2=\"110\" stroke=\"#555\"/><rect x=\"{x}\" y=\"110\" width=\"{NODE_W}\" height=\"70\" rx=\"4\" fill=\"#dde8f7\" stroke=\"#333\"/><text x=\"{}\" y=\"128\" font-weight=\"bold\">{}</text><text x=\"{}\" y=\"146\">{}  AS {}</text><text x=\"{}\" y=\"164\">{}</text>",
            x + 8,
            xml(&n.name),
            x + 8,
            xml(&n.address),
            n.asn,
            x + 8,
            xml(&n.blocks.join(" "))
        );
        for (j, p) in n.pods.iter().enumerate() {
            let y = 270 + j as i64 * 56;
            let _ = writeln!(
                o,
                "<line x1=\"{c}\" y1=\"180\" x2=\"{c}\" y2=\"{y}\" stroke=\"#999\"/><rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"44\" rx=\"22\" fill=\"#e8f5e9\" stroke=\"#333\"/><text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
                x + 10,
                NODE_W - 20,
                x + 24,
                y + 18,
                xml(&p.name),
                x + 24,
                y + 34,
                xml(&p.ips.join(" "))
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            nodes: vec![
                NodeInfo {
                    name: "node-1".into(),
                    address: "198.18.0.11".into(),
                    asn: 64512,
                    blocks: vec!["100.64.1.0/26".into()],
                    pods: vec![PodInfo {
                        name: "default/pod-1-1".into(),
                        namespace: "default".into(),
                        ip: "100.64.1.1".into(),
                        ips: vec!["100.64.1.1".into()],
                        labels: [("pod".to_owned(), "pod-1-1".to_owned())].into(),
                    }],
                },
                NodeInfo {
                    name: "node-2".into(),
                    address: "198.18.0.12".into(),
                    asn: 64512,
                    blocks: vec![],
                    pods: vec![],
                },
            ],
            peers: vec![
                PeerInfo {
                    node: "node-1".into(),
                    peer: "node-2".into(),
                    kind: "NodeMesh".into(),
                    state: "Established".into(),
                    since: Some("2026-01-01T00:00:00Z".into()),
                },
                PeerInfo {
                    node: "node-2".into(),
                    peer: "node-1".into(),
                    kind: "NodeMesh".into(),
                    state: "Established".into(),
                    since: None,
                },
            ],
            reflectors: vec![],
            router: None,
        }
    }

    #[test]
    fn the_json_has_exactly_the_documented_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["nodes", "peers"]);
        assert_eq!(
            keys(&v["nodes"][0]),
            ["address", "asn", "blocks", "name", "pods"]
        );
        assert_eq!(
            keys(&v["nodes"][0]["pods"][0]),
            ["ip", "ips", "labels", "name", "namespace"]
        );
        assert_eq!(
            keys(&v["peers"][0]),
            ["node", "peer", "since", "state", "type"]
        );
        assert_eq!(v["peers"][0]["type"], "NodeMesh");
        assert_eq!(v["nodes"][0]["pods"][0]["name"], "default/pod-1-1");

        // Reflectors and a router appear when the lab has them.
        let mut s = sample();
        s.reflectors.push(ReflectorInfo {
            name: "rr-1".into(),
            address: "198.18.0.2".into(),
            cluster_id: "244.0.0.1".into(),
        });
        s.router = Some(RouterInfo {
            kind: "bird".into(),
            address: "198.18.0.1".into(),
            asn: 65001,
            sessions: vec![RouterSession {
                peer: "node-1".into(),
                state: "Established".into(),
            }],
            routes: vec![RouterRoute {
                prefix: "100.64.1.0/26".into(),
                from: "node-1".into(),
            }],
            error: None,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(keys(&v), ["nodes", "peers", "reflectors", "router"]);
        assert_eq!(keys(&v["reflectors"][0]), ["address", "cluster_id", "name"]);
        assert_eq!(
            keys(&v["router"]),
            ["address", "asn", "error", "kind", "routes", "sessions"]
        );
        assert_eq!(v["router"]["routes"][0]["from"], "node-1");
    }

    #[test]
    fn a_session_seen_from_both_sides_is_one_green_edge() {
        let st = State::default();
        let d = dot(&st, &sample());
        assert_eq!(d.matches("BGP up").count(), 1, "{d}");
        assert!(d.contains("\"node-1\" -- \"default/pod-1-1\""), "{d}");
        let svg = simple_svg(&st, &sample());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("default/pod-1-1"));
        assert_eq!(svg.matches("<path").count(), 1);
    }
}
