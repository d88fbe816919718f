//! `margay-lab up` and `margay-lab down`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use margay_api::ipam::AffinityState;
use margay_api::k8s::{LABEL_NAMESPACE_NAME, Namespace, ObjectMeta};
use margay_api::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, BlockAffinity, IPPool, IPPoolSpec,
};
use margay_datastore::Typed;
use margay_harness::{Netns, Underlay, delete_netns, list_all};

use super::bins::Bins;
use super::ds::{with_ds, with_workloads};
use super::pods::{self, PodSpec};
use super::router::{self, RouterConfig};
use super::state::{
    DatastoreKind, InternetState, LabDir, Lock, NodeState, Proc, ReflectorState, RouterKind,
    RouterState, State,
};
use super::supervisor::{self, StartSpec};
use super::{log_tail, wait_for};
use crate::plan::{INTERNET_GATEWAY, INTERNET_HOST, LabPlan, ROUTER_AS, ROUTER_V4, ROUTER_V6};

/// The infra namespace's IPv6 address with `--ipv6`.
pub const INFRA_V6: &str = "fd00:198:18::fe";
/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";
/// The route-reflector cluster id every dedicated reflector declares (Calico's example value).
pub const CLUSTER_ID: &str = "244.0.0.1";
/// The test API server's port in the infra namespace (Kubernetes datastore).
const APISERVER_PORT: u16 = 6443;

/// What `up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Pods per node (in namespace `default`, named `pod-NODE-N`).
    pub pods_per_node: usize,
    /// Dual stack: IPv6 underlay addresses and an IPv6 pool too.
    pub ipv6: bool,
    /// Dedicated route reflectors; with any, the node-to-node mesh is off.
    pub route_reflectors: usize,
    /// An external router peering eBGP with every node.
    pub external_router: Option<RouterKind>,
    /// Where Margay keeps its data.
    pub datastore: DatastoreKind,
    /// How long each stage may take.
    pub timeout: Duration,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            nodes: 3,
            pods_per_node: 2,
            ipv6: false,
            route_reflectors: 0,
            external_router: None,
            datastore: DatastoreKind::Etcdv3,
            timeout: Duration::from_secs(90),
        }
    }
}

/// Prints one progress line to stderr.
pub fn progress(what: &str, since: Instant) {
    eprintln!("  {what:<48} {:>6.1} s", since.elapsed().as_secs_f64());
}

/// The BGP sessions each speaker reports Established once the lab is up: (per node, per
/// reflector). Full mesh: every other node; with reflectors: every reflector (and a reflector
/// every node and every other reflector); plus the external router; one session per family.
pub fn expected_sessions(
    nodes: usize,
    reflectors: usize,
    router: bool,
    families: u32,
) -> (u32, u32) {
    let (n, r) = (nodes as u32, reflectors as u32);
    let per_node = if r == 0 { n.saturating_sub(1) } else { r } + u32::from(router);
    let per_reflector = (n + r).saturating_sub(1);
    (per_node * families, per_reflector * families)
}

/// Builds the lab; on any failure says what and removes everything made so far.
pub fn up(lab: &LabDir, o: &UpOptions) -> anyhow::Result<()> {
    let plan =
        LabPlan::new(o.nodes, o.pods_per_node, o.ipv6)?.with_reflectors(o.route_reflectors)?;
    let bins = Bins::find()?;
    margay_harness::require_root().context("margay-lab creates network namespaces")?;
    let lock = lab.lock()?;
    if let Some(s) = lab.load(&lock)? {
        anyhow::bail!(
            "a lab ({} nodes, {}) already lives in {}: run `margay-lab down` first, or set MARGAY_LAB_DIR to another directory",
            s.nodes.len(),
            if s.ready { "up" } else { "half built" },
            lab.path().display()
        );
    }
    let prefix = lab.netns_prefix();
    let kube = o.datastore == DatastoreKind::Kubernetes;
    let mut st = State {
        id: lab.id(),
        ipv6: o.ipv6,
        bridge: format!("{prefix}br"),
        infra: format!("{prefix}infra"),
        etcd_endpoint: if kube {
            format!("http://{}:{APISERVER_PORT}", plan.infra)
        } else {
            format!("http://{}:2379", plan.infra)
        },
        etcd_data: Path::new("/dev/shm").join(format!("{prefix}etcd")),
        datastore: o.datastore,
        kubeconfig: kube.then(|| lab.join("kubeconfig")),
        ..Default::default()
    };
    lab.save(&lock, &st)?;
    let t0 = Instant::now();
    let mut extras = Vec::new();
    if o.ipv6 {
        extras.push("dual stack".to_owned());
    }
    if o.route_reflectors > 0 {
        extras.push(format!("{} route reflectors, mesh off", o.route_reflectors));
    }
    if let Some(r) = o.external_router {
        extras.push(format!("external router {}", r.as_str()));
    }
    extras.push(format!("datastore {}", o.datastore.as_str()));
    eprintln!(
        "margay-lab up: {} nodes, {} pods per node ({}) in {}",
        o.nodes,
        o.pods_per_node,
        extras.join(", "),
        lab.path().display()
    );
    match build(lab, &lock, &mut st, &plan, &bins, o, t0) {
        Ok(()) => {
            eprintln!(
                "lab up in {:.1} s; see it with `margay-lab status`, remove it with `margay-lab down`",
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) if std::env::var_os("MARGAY_LAB_KEEP_FAILED").is_some() => {
            eprintln!(
                "margay-lab up failed: {e:#}\nleft as it is for a look (MARGAY_LAB_KEEP_FAILED): logs under {}, remove it with `margay-lab down`",
                lab.path().display()
            );
            Err(e)
        }
        Err(e) => {
            eprintln!("margay-lab up failed: {e:#}\ncleaning up...");
            // What was made is in the state file (saved before each step).
            let st = lab.load(&lock).ok().flatten().unwrap_or(st);
            teardown(lab, &lock, &st);
            Err(e)
        }
    }
}

fn attach(bridge: &Netns, port: &str, ns: &Netns, addrs: &[IpNet]) -> anyhow::Result<()> {
    bridge.add_veth(port, ns, "eth0")?;
    bridge.set_master(port, BRIDGE)?;
    for a in addrs {
        ns.add_addr("eth0", *a)?;
    }
    ns.link_up("eth0")?;
    Ok(())
}

fn new_netns(lab: &LabDir, lock: &Lock, st: &mut State, name: &str) -> anyhow::Result<Netns> {
    st.namespaces.push(name.to_owned());
    lab.save(lock, st)?;
    Ok(Netns::persistent(name)?)
}

fn net(s: String) -> anyhow::Result<IpNet> {
    s.parse()
        .with_context(|| format!("{s} is not an address with a prefix length"))
}

/// The underlay addresses of a namespace on the bridge: IPv4 /24 and, dual stack, IPv6 /64.
fn underlay_addrs(
    v4: impl std::fmt::Display,
    v6: Option<impl std::fmt::Display>,
) -> anyhow::Result<Vec<IpNet>> {
    let mut out = vec![net(format!("{v4}/24"))?];
    if let Some(v6) = v6 {
        out.push(net(format!("{v6}/64"))?);
    }
    Ok(out)
}

/// The namespaces: the bridge, infra (with the internet behind it), the nodes, the
/// reflectors and the router. Returns the nodes' namespaces.
fn underlay(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    plan: &LabPlan,
    o: &UpOptions,
) -> anyhow::Result<(Netns, Vec<Netns>)> {
    let prefix = lab.netns_prefix();
    let (bridge_name, infra_name) = (st.bridge.clone(), st.infra.clone());
    let bridge = new_netns(lab, lock, st, &bridge_name)?;
    bridge.add_bridge(BRIDGE)?;
    let infra = new_netns(lab, lock, st, &infra_name)?;
    attach(
        &bridge,
        "p0",
        &infra,
        &underlay_addrs(plan.infra, o.ipv6.then_some(INFRA_V6))?,
    )?;
    // The internet: a host behind infra that routes only the underlay back, so that pods reach
    // it through natOutgoing (their node's address) and not with their own.
    let internet = new_netns(lab, lock, st, &format!("{prefix}internet"))?;
    infra.connect(
        "inet0",
        &[net(format!("{INTERNET_GATEWAY}/24"))?],
        &internet,
        "eth0",
        &[net(format!("{INTERNET_HOST}/24"))?],
    )?;
    internet.add_route(
        "0.0.0.0/0".parse()?,
        Some(IpAddr::V4(INTERNET_GATEWAY)),
        Some("eth0"),
    )?;
    infra.sysctl("net.ipv4.ip_forward", "1")?;
    st.internet = Some(InternetState {
        netns: internet.name().to_owned(),
        address: INTERNET_HOST.to_string(),
    });
    let mut node_ns = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let ns = new_netns(lab, lock, st, &format!("{prefix}{}", n.name))?;
        attach(
            &bridge,
            &format!("p{}", i + 1),
            &ns,
            &underlay_addrs(n.ipv4, n.ipv6)?,
        )?;
        // A default route lets proxy ARP (and NDP) on the pods' veths answer for 169.254.1.1,
        // and leads to the internet; at metric 1000 so that one learned over BGP wins.
        default_route(&ns, plan.infra, o.ipv6)?;
        let dir = lab.join(&n.name);
        std::fs::create_dir_all(&dir)?;
        st.nodes.push(NodeState {
            name: n.name.clone(),
            netns: ns.name().to_owned(),
            ipv4: n.ipv4.to_string(),
            ipv6: n.ipv6.map(|a| a.to_string()),
            socket: dir.join("agent.sock"),
        });
        node_ns.push(ns);
    }
    for (i, r) in plan.reflectors.iter().enumerate() {
        let ns = new_netns(lab, lock, st, &format!("{prefix}{}", r.name))?;
        attach(
            &bridge,
            &format!("r{}", i + 1),
            &ns,
            &underlay_addrs(r.ipv4, r.ipv6)?,
        )?;
        default_route(&ns, plan.infra, o.ipv6)?;
        std::fs::create_dir_all(lab.join(&r.name))?;
        st.reflectors.push(ReflectorState {
            name: r.name.clone(),
            netns: ns.name().to_owned(),
            ipv4: r.ipv4.to_string(),
            ipv6: r.ipv6.map(|a| a.to_string()),
            cluster_id: CLUSTER_ID.to_owned(),
        });
    }
    if let Some(kind) = o.external_router {
        let ns = new_netns(lab, lock, st, &format!("{prefix}tor"))?;
        attach(
            &bridge,
            "tor",
            &ns,
            &underlay_addrs(ROUTER_V4, o.ipv6.then_some(ROUTER_V6))?,
        )?;
        st.router = Some(RouterState {
            kind,
            netns: ns.name().to_owned(),
            ipv4: ROUTER_V4.to_string(),
            ipv6: o.ipv6.then(|| ROUTER_V6.to_string()),
            asn: ROUTER_AS,
            dir: match kind {
                // FRR runs as user frr, which must reach its directory.
                RouterKind::Frr => std::env::temp_dir().join(format!("{prefix}tor")),
                _ => lab.join("tor"),
            },
        });
    }
    lab.save(lock, st)?;
    Ok((infra, node_ns))
}

/// The node's way out, via infra (a default route learned over BGP takes over).
fn default_route(ns: &Netns, infra: std::net::Ipv4Addr, ipv6: bool) -> anyhow::Result<()> {
    ns.add_default_route(infra.into(), Underlay::DEFAULT_METRIC)?;
    if ipv6 {
        ns.add_default_route(INFRA_V6.parse()?, Underlay::DEFAULT_METRIC)?;
    }
    Ok(())
}

/// The objects every lab starts with: the pools (natOutgoing, as Calico's default pool), the
/// `default` namespace, and with reflectors or a router the BGP configuration and peers.
fn initial_objects(st: &State, o: &UpOptions) -> anyhow::Result<()> {
    let ipv6 = o.ipv6;
    let reflectors = o.route_reflectors > 0;
    let router = st.router.clone();
    with_ds(st, |ds| async move {
        let pools = Typed::<IPPool>::new(ds.clone());
        let mut v4 = IPPoolSpec::new("100.64.0.0/16");
        v4.nat_outgoing = true;
        pools.create(&IPPool::new("default-ipv4", v4)).await?;
        if ipv6 {
            pools
                .create(&IPPool::new(
                    "default-ipv6",
                    IPPoolSpec::new("fd00:100:64::/112"),
                ))
                .await?;
        }
        let mut meta = ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        };
        meta.labels = Some([(LABEL_NAMESPACE_NAME.to_owned(), "default".to_owned())].into());
        let namespaces = Typed::<Namespace>::new(ds.clone());
        match namespaces
            .create(&Namespace {
                metadata: meta,
                ..Default::default()
            })
            .await
        {
            // An API server has `default` from the start: label it as Kubernetes does.
            Err(margay_datastore::Error::AlreadyExists(_)) => {
                namespaces
                    .update_with(None, "default", 5, |n| {
                        let labels = n.metadata.labels.get_or_insert_with(Default::default);
                        let changed =
                            labels.get(LABEL_NAMESPACE_NAME).map(String::as_str) != Some("default");
                        labels.insert(LABEL_NAMESPACE_NAME.to_owned(), "default".to_owned());
                        Ok(changed)
                    })
                    .await?;
            }
            r => {
                r?;
            }
        }
        let peers = Typed::<BGPPeer>::new(ds.clone());
        if reflectors {
            // As Calico documents: the mesh off, clients peer with the reflectors, the
            // reflectors with everyone (clients and each other).
            Typed::<BGPConfiguration>::new(ds.clone())
                .create(&BGPConfiguration::new(
                    margay_api::bgp::BGP_CONFIGURATION_DEFAULT,
                    BGPConfigurationSpec {
                        node_to_node_mesh_enabled: Some(false),
                        ..Default::default()
                    },
                ))
                .await?;
            for (name, nodes, peers_of) in [
                (
                    "peer-with-route-reflectors",
                    "!has(route-reflector)",
                    "has(route-reflector)",
                ),
                (
                    "route-reflectors-peer-with-all",
                    "has(route-reflector)",
                    "all()",
                ),
            ] {
                peers
                    .create(&BGPPeer::new(
                        name,
                        BGPPeerSpec {
                            node_selector: Some(nodes.into()),
                            peer_selector: Some(peers_of.into()),
                            ..Default::default()
                        },
                    ))
                    .await?;
            }
        }
        if let Some(r) = router {
            // A global peer; with dedicated reflectors, only the nodes peer with it.
            let node_selector = reflectors.then(|| "!has(route-reflector)".to_owned());
            for (name, ip) in std::iter::once(("tor", r.ipv4.clone()))
                .chain(r.ipv6.clone().map(|a| ("tor-v6", a)))
            {
                peers
                    .create(&BGPPeer::new(
                        name,
                        BGPPeerSpec {
                            peer_ip: Some(ip),
                            as_number: Some(r.asn),
                            node_selector: node_selector.clone(),
                            ..Default::default()
                        },
                    ))
                    .await?;
            }
        }
        Ok(())
    })
    .context("cannot write the IP pools, the default namespace and the BGP peers")
}

/// How the agents and margayctl reach the datastore: `[datastore]` of an agent's TOML.
fn datastore_toml(st: &State) -> String {
    match &st.kubeconfig {
        Some(k) if st.datastore == DatastoreKind::Kubernetes => format!(
            "[datastore]\ntype = \"kubernetes\"\nkubeconfig = \"{}\"\n",
            k.display()
        ),
        _ => format!("[datastore]\netcd_endpoints = [\"{}\"]\n", st.etcd_endpoint),
    }
}

/// The datastore settings as environment variables (reflectors, margayctl).
pub fn datastore_env(st: &State) -> Vec<(String, String)> {
    let mut env = vec![(
        "DATASTORE_TYPE".to_owned(),
        st.datastore.as_str().to_owned(),
    )];
    match (&st.kubeconfig, st.datastore) {
        (Some(k), DatastoreKind::Kubernetes) => {
            env.push(("KUBECONFIG".into(), k.display().to_string()));
        }
        _ => env.push(("ETCD_ENDPOINTS".into(), st.etcd_endpoint.clone())),
    }
    env
}

#[allow(clippy::too_many_arguments)]
fn build(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    plan: &LabPlan,
    bins: &Bins,
    o: &UpOptions,
    t0: Instant,
) -> anyhow::Result<()> {
    let (infra, node_ns) = underlay(lab, lock, st, plan, o)?;
    progress("namespaces and underlay bridge", t0);

    st.supervisor = Some(supervisor::launch(lab)?);
    lab.save(lock, st)?;
    progress("supervisor", t0);

    match st.datastore {
        DatastoreKind::Etcdv3 => {
            start_etcd(lab, lock, st, plan, &infra, o.timeout)?;
            progress("etcd", t0);
        }
        DatastoreKind::Kubernetes => {
            start_apiserver(lab, lock, st, bins, plan, &infra, o.timeout)?;
            progress("test API server and Margay's CRDs", t0);
        }
    }
    initial_objects(st, o)?;

    for n in st.nodes.clone() {
        let dir = lab.join(&n.name);
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"{}\"\nsocket = \"{}\"\nip = \"{}/24\"\n{}{}{}",
                n.name,
                n.socket.display(),
                n.ipv4,
                n.ipv6
                    .as_ref()
                    .map(|a| format!("ip6 = \"{a}/64\"\n"))
                    .unwrap_or_default(),
                // The agents' log filter, e.g. `info,margay_agent::mesh=debug`.
                std::env::var("MARGAY_LAB_AGENT_LOG")
                    .map(|f| format!("log_level = {f:?}\n"))
                    .unwrap_or_default(),
                datastore_toml(st)
            ),
        )?;
        let p = supervisor::start(
            lab,
            StartSpec {
                name: format!("agent-{}", n.name),
                netns: Some(n.netns.clone()),
                program: bins.agent.clone(),
                args: vec!["--config".into(), config.display().to_string()],
                env: vec![("RUST_LOG".into(), "info".into())],
                log: dir.join("agent.log"),
            },
        )?;
        st.procs.insert(format!("agent-{}", n.name), p);
        lab.save(lock, st)?;
    }
    for r in st.reflectors.clone() {
        let mut env = datastore_env(st);
        env.extend([
            ("NODENAME".to_owned(), r.name.clone()),
            ("IP".to_owned(), format!("{}/24", r.ipv4)),
            (
                "ROUTE_REFLECTOR_CLUSTER_ID".to_owned(),
                r.cluster_id.clone(),
            ),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        if let Some(v6) = &r.ipv6 {
            env.push(("IP6".to_owned(), format!("{v6}/64")));
        }
        let log = lab.join(&r.name).join("reflector.log");
        let p = supervisor::start(
            lab,
            StartSpec {
                name: format!("reflector-{}", r.name),
                netns: Some(r.netns.clone()),
                program: bins.agent.clone(),
                args: vec!["--role".into(), "route-reflector".into()],
                env,
                log: log.clone(),
            },
        )?;
        st.procs.insert(format!("reflector-{}", r.name), p.clone());
        lab.save(lock, st)?;
        wait_for(
            &format!("route reflector {} starts", r.name),
            o.timeout,
            || {
                (p.alive()
                    && std::fs::read_to_string(&log)
                        .is_ok_and(|l| l.contains("route reflector started")))
                .then_some(())
            },
            || log_tail(&log, 15),
        )?;
    }
    if let Some(r) = st.router.clone() {
        let config = RouterConfig {
            ipv4: r.ipv4.parse()?,
            ipv6: r.ipv6.as_deref().map(str::parse).transpose()?,
            asn: r.asn,
            peers: st
                .nodes
                .iter()
                .flat_map(|n| std::iter::once(&n.ipv4).chain(n.ipv6.as_ref()))
                .map(|a| Ok((a.parse()?, margay_api::bgp::DEFAULT_AS_NUMBER)))
                .collect::<anyhow::Result<_>>()?,
        };
        router::start(lab, lock, st, &config, o.timeout)?;
        progress(&format!("external router ({})", r.kind.as_str()), t0);
    }
    for n in &st.nodes {
        wait_agent_ready(lab, st, n, o.timeout)?;
    }
    progress("agents ready", t0);
    for (n, ns) in st.nodes.iter().zip(&node_ns) {
        wait_for(
            &format!(
                "{}'s agent reports its BGP sessions up (/readiness)",
                n.name
            ),
            o.timeout,
            || {
                ns.run(|| http_ok("127.0.0.1:9099", "/readiness"))
                    .ok()?
                    .then_some(())
            },
            || log_tail(&lab.join(&n.name).join("agent.log"), 15),
        )?;
    }
    progress(
        if st.reflectors.is_empty() {
            "BGP mesh established"
        } else {
            "BGP sessions to the reflectors established"
        },
        t0,
    );

    let mut written = Vec::new();
    for i in 1..=o.pods_per_node {
        for n in st.nodes.clone() {
            let spec = PodSpec {
                namespace: "default".into(),
                name: format!("pod-{}-{i}", n.name.trim_start_matches("node-")),
                node: Some(n.name.clone()),
                labels: [(
                    "pod".to_owned(),
                    format!("pod-{}-{i}", n.name.trim_start_matches("node-")),
                )]
                .into(),
                ports: Vec::new(),
            };
            let (_, w) = pods::create(lab, lock, st, bins, &spec, false)?;
            written.push(w);
        }
    }
    if o.pods_per_node > 0 {
        progress(&format!("{} pods wired by margay-cni", st.pods.len()), t0);
        pods::wait_routes(st, o.timeout)?;
        progress("every node routes to every pod (IPv4)", t0);
        if super::sync::confirm(lab, st, &written)? == super::sync::Confirmation::Agents {
            progress("every agent has the pods' labels in its policy", t0);
        }
        if o.ipv6 {
            pods::wait_routes_v6(st, o.timeout)?;
            progress("every node routes to every pod (IPv6)", t0);
        }
    }
    wait_published(st, o.timeout)?;
    progress("every node publishes its BGP sessions", t0);
    if let Some(r) = &st.router {
        wait_router_learns_blocks(st, r, o.timeout)?;
        progress("the external router learns every block", t0);
    }
    start_internet(lab, lock, st, bins)?;
    progress("internet host (198.19.0.1) serving", t0);
    st.ready = true;
    lab.save(lock, st)?;
    Ok(())
}

/// The name of the internet host's server in the supervisor and the state.
pub const INTERNET_SERVER: &str = "internet";
/// The port the internet host serves (it answers with the address it sees).
pub const INTERNET_PORT: u16 = 80;

fn start_internet(lab: &LabDir, lock: &Lock, st: &mut State, bins: &Bins) -> anyhow::Result<()> {
    let Some(inet) = st.internet.clone() else {
        return Ok(());
    };
    let log = lab.join("internet.log");
    let p = supervisor::start(
        lab,
        StartSpec {
            name: INTERNET_SERVER.into(),
            netns: Some(inet.netns.clone()),
            program: bins.lab.clone(),
            args: vec![
                "pod-server".into(),
                "--name".into(),
                INTERNET_SERVER.into(),
                "--port".into(),
                INTERNET_PORT.to_string(),
                "--echo-peer".into(),
            ],
            env: Vec::new(),
            log: log.clone(),
        },
    )?;
    st.procs.insert(INTERNET_SERVER.into(), p.clone());
    lab.save(lock, st)?;
    let ns = Netns::adopt(&inet.netns)?;
    wait_for(
        "the internet host's server listens",
        Duration::from_secs(10),
        || {
            p.alive().then_some(())?;
            ns.run(|| {
                std::net::TcpStream::connect_timeout(
                    &(INTERNET_HOST, INTERNET_PORT).into(),
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

/// Waits until the external router has learned every block affine to a node, each from the
/// node that owns it.
fn wait_router_learns_blocks(st: &State, r: &RouterState, timeout: Duration) -> anyhow::Result<()> {
    let blocks = || -> Vec<String> {
        with_ds(st, |ds| async move {
            let (aff, _) = Typed::<BlockAffinity>::new(ds).list(None).await?;
            Ok(aff
                .into_iter()
                .filter(|a| a.spec.state == AffinityState::Confirmed && !a.spec.deleted)
                .map(|a| a.spec.cidr)
                .collect())
        })
        .unwrap_or_default()
    };
    let missing = || -> Vec<String> {
        let learned = router::learned(r).unwrap_or_default();
        blocks()
            .into_iter()
            .filter(|b| {
                b.parse::<IpNet>()
                    .map_or(true, |n| !learned.contains_key(&n))
            })
            .collect()
    };
    wait_for(
        &format!(
            "the external router ({}) learns every block",
            r.kind.as_str()
        ),
        timeout,
        || missing().is_empty().then_some(()),
        || format!("missing: {}", missing().join(", ")),
    )
}

/// A speaker, the sessions it should have, and (established, not established) as published.
type Published = (String, u32, Option<(u32, u32)>);

/// Waits until every node's and reflector's NodeStatus (what `status` shows, written every 10 s
/// by its agent) reports all its sessions Established ([`expected_sessions`]).
fn wait_published(st: &State, timeout: Duration) -> anyhow::Result<()> {
    // One session per peer and family (IPv6 sessions between the IPv6 addresses).
    let families = if st.ipv6 { 2 } else { 1 };
    let (per_node, per_rr) = expected_sessions(
        st.nodes.len(),
        st.reflectors.len(),
        st.router.is_some(),
        families,
    );
    let want: Vec<(String, u32)> = st
        .nodes
        .iter()
        .map(|n| (n.name.clone(), per_node))
        .chain(st.reflectors.iter().map(|r| (r.name.clone(), per_rr)))
        .collect();
    let read = || -> Vec<Published> {
        let want = want.clone();
        with_ds(st, |ds| async move {
            let (all, _) = Typed::<margay_api::NodeStatus>::new(ds).list(None).await?;
            Ok(want
                .into_iter()
                .map(|(n, w)| {
                    let counts = all
                        .iter()
                        .find(|s| s.metadata.name.as_deref() == Some(n.as_str()))
                        .and_then(|s| s.status.as_ref()?.bgp.as_ref())
                        .map(|b| (b.number_established, b.number_not_established));
                    (n, w, counts)
                })
                .collect())
        })
        .unwrap_or_default()
    };
    wait_for(
        "every node's NodeStatus shows all its BGP sessions established",
        timeout,
        || {
            let r = read();
            (!r.is_empty() && r.iter().all(|(_, w, c)| *c == Some((*w, 0)))).then_some(())
        },
        || {
            read()
                .iter()
                .map(|(n, w, c)| match c {
                    Some((up, down)) => format!("{n}: {up} established, {down} not (want {w})"),
                    None => format!("{n}: no status"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    )
}

/// Starts the test Kubernetes API server in the infra namespace, writes its kubeconfig into the
/// lab directory and creates Margay's CRDs in it.
fn start_apiserver(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    bins: &Bins,
    plan: &LabPlan,
    infra: &Netns,
    timeout: Duration,
) -> anyhow::Result<()> {
    let kubeconfig = st
        .kubeconfig
        .clone()
        .context("a Kubernetes-mode lab has a kubeconfig")?;
    if !bins.apiserver.is_file() {
        anyhow::bail!(
            "--datastore kubernetes needs {}: build it with `cargo build -p margay-integration --bins`",
            bins.apiserver.display()
        );
    }
    let listen = SocketAddr::new(IpAddr::V4(plan.infra), APISERVER_PORT);
    let log = lab.join("apiserver.log");
    let p = supervisor::start(
        lab,
        StartSpec {
            name: "apiserver".into(),
            netns: Some(st.infra.clone()),
            program: bins.apiserver.clone(),
            args: vec![
                "--listen".into(),
                listen.to_string(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
            log: log.clone(),
        },
    )?;
    st.procs.insert("apiserver".into(), p.clone());
    lab.save(lock, st)?;
    wait_for(
        "the test API server writes its kubeconfig and accepts connections",
        timeout,
        || {
            (p.alive() && kubeconfig.exists()).then_some(())?;
            infra
                .run(move || {
                    std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(300))
                        .is_ok()
                })
                .ok()?
                .then_some(())
        },
        || log_tail(&log, 15),
    )?;
    let crds =
        crate::rbac::documents(CRDS).map_err(|e| anyhow::anyhow!("manifests/crds.yaml: {e}"))?;
    with_ds(st, |ds| async move {
        for crd in crds {
            let name = crd["metadata"]["name"]
                .as_str()
                .context("a CRD without metadata.name in manifests/crds.yaml")?
                .to_owned();
            let key = margay_datastore::Key::cluster("customresourcedefinitions", &name)?;
            ds.create(&key, serde_json::to_vec(&crd)?)
                .await
                .with_context(|| format!("cannot create CRD {name}"))?;
        }
        Ok(())
    })
}

/// Margay's CRDs, as `make crds` generates them.
const CRDS: &str = include_str!("../../../manifests/crds.yaml");

fn start_etcd(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    plan: &LabPlan,
    infra: &Netns,
    timeout: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&st.etcd_data)
        .with_context(|| format!("cannot create {}", st.etcd_data.display()))?;
    let client = format!("http://{}:2379", plan.infra);
    let peer = format!("http://{}:2380", plan.infra);
    let mut env = Vec::new();
    if std::env::consts::ARCH != "x86_64" {
        let arch = match std::env::consts::ARCH {
            "aarch64" => "arm64",
            other => other,
        };
        env.push(("ETCD_UNSUPPORTED_ARCH".to_owned(), arch.to_owned()));
    }
    let log = lab.join("etcd.log");
    let p = supervisor::start(
        lab,
        StartSpec {
            name: "etcd".into(),
            netns: Some(st.infra.clone()),
            program: "etcd".into(),
            args: vec![
                "--name=margay-lab".into(),
                format!("--data-dir={}", st.etcd_data.join("data").display()),
                format!("--listen-client-urls={client},http://127.0.0.1:2379"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=margay-lab={peer}"),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
                "--log-level=warn".into(),
            ],
            env,
            log: log.clone(),
        },
    )?;
    st.procs.insert("etcd".into(), p.clone());
    lab.save(lock, st)?;
    let addr: SocketAddr = SocketAddr::new(IpAddr::V4(plan.infra), 2379);
    wait_for(
        "etcd answers healthy on /health",
        timeout,
        || {
            if !p.alive() {
                return None;
            }
            infra
                .run(move || http_ok(&addr.to_string(), "/health"))
                .ok()?
                .then_some(())
        },
        || log_tail(&log, 15),
    )
}

fn wait_agent_ready(
    lab: &LabDir,
    st: &State,
    n: &NodeState,
    timeout: Duration,
) -> anyhow::Result<()> {
    let proc = st.procs.get(&format!("agent-{}", n.name)).cloned();
    let client =
        margay_agent::localapi::client::Client::new(n.socket.clone(), Duration::from_secs(5));
    let log = lab.join(&n.name).join("agent.log");
    let mut last = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = &proc
            && !p.alive()
        {
            anyhow::bail!("{}'s agent exited\n{}", n.name, log_tail(&log, 20));
        }
        if n.socket.exists() {
            match client.status() {
                Ok(s) if s.ready => return Ok(()),
                Ok(s) => last = s.reason,
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{}'s agent not ready within {} s (last: {last})\n{}",
                n.name,
                timeout.as_secs(),
                log_tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET path` on `addr` answers 2xx (HTTP/1.0, run in the caller's namespace).
pub fn http_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let check = || -> std::io::Result<bool> {
        let a: SocketAddr = addr
            .parse()
            .map_err(|_| std::io::Error::other("bad address"))?;
        let mut s = std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body.starts_with("HTTP/1.0 2") || body.starts_with("HTTP/1.1 2"))
    };
    check().unwrap_or(false)
}

/// `margay-lab node delete NODE`: the node's machine goes away — its agent and pods stop
/// (no CNI DEL: nothing runs there any more) and its namespace is deleted — then, as
/// `calicoctl delete node` (and the controller on a deleted Kubernetes Node), its Node and
/// endpoints are deleted (stored WorkloadEndpoints in etcd mode; with the Kubernetes datastore
/// its Pods, after the handles their annotations name were released) and its addresses and
/// blocks released. The other nodes drop their sessions with it and the routes to its blocks.
pub fn delete_node(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    name: &str,
) -> anyhow::Result<margay_agent::controllers::nodes::Cleanup> {
    let node = st.node(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = st.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow::anyhow!(
            "{name:?} is not a node of the lab; nodes: {}",
            names.join(", ")
        )
    })?;
    let agent = format!("agent-{name}");
    let pods: Vec<_> = st
        .pods
        .values()
        .filter(|p| p.node == name)
        .cloned()
        .collect();
    let mut names: Vec<String> = pods.iter().map(pods::server_name).collect();
    names.push(agent);
    for proc_name in names {
        if supervisor::stop(lab, &proc_name).is_err()
            && let Some(p) = st.procs.get(&proc_name)
        {
            p.stop(supervisor::STOP_GRACE);
        }
        st.procs.remove(&proc_name);
    }
    for p in &pods {
        if delete_netns(&p.netns) {
            st.namespaces.retain(|x| *x != p.netns);
        }
        st.pods.remove(&p.id());
    }
    lab.save(lock, st)?;
    let kube = st.datastore == DatastoreKind::Kubernetes;
    let node_name = name.to_owned();
    let cleanup = with_workloads(st, |ds, workloads| async move {
        let ipam = margay_ipam::Ipam::new(Arc::clone(&ds));
        let mut cleanup =
            margay_agent::controllers::nodes::clean_up(&workloads, &ds, &ipam, &node_name).await?;
        // With the Kubernetes datastore the endpoints are the node's Pods: their annotations
        // named the IPAM handles released above, and now the lab removes them as Kubernetes'
        // pod garbage collector would.
        if kube {
            for p in &pods {
                super::objects::delete_pod_object(&ds, p).await?;
            }
            cleanup.endpoints_deleted += pods.len();
        }
        Ok(cleanup)
    })
    .with_context(|| format!("cannot release {name}'s Node, endpoints and addresses"))?;
    if delete_netns(&node.netns) {
        st.namespaces.retain(|x| *x != node.netns);
    }
    st.nodes.retain(|n| n.name != name);
    lab.save(lock, st)?;
    Ok(cleanup)
}

/// `margay-lab down`: removes everything the lab made. Works after a crash of the supervisor
/// or a half-finished `up`, and when there is no lab (then it only sweeps leftovers).
pub fn down(lab: &LabDir) -> anyhow::Result<()> {
    let lock = lab.lock()?;
    let st = match lab.load(&lock) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}; removing what can be found by name");
            None
        }
    };
    let st = st.unwrap_or_else(|| State {
        id: lab.id(),
        ..Default::default()
    });
    let left = teardown(lab, &lock, &st);
    if left.is_empty() {
        eprintln!("lab in {} removed", lab.path().display());
        Ok(())
    } else {
        anyhow::bail!(
            "some of the lab could not be removed: {}; run `margay-lab down` again",
            left.join(", ")
        )
    }
}

/// Stops every process and deletes every namespace of the lab; returns what is left.
fn teardown(lab: &LabDir, lock: &Lock, st: &State) -> Vec<String> {
    let mut left = Vec::new();
    // The supervisor first (it stops its children); then each recorded process by PID,
    // in case the supervisor is gone or missed one.
    if let Some(sup) = &st.supervisor
        && sup.alive()
    {
        let _ = supervisor::call(lab, &supervisor::Request::Shutdown);
        let deadline = Instant::now() + supervisor::STOP_GRACE + Duration::from_secs(5);
        while sup.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !sup.stop(Duration::from_secs(2)) {
            left.push(format!("supervisor (pid {})", sup.pid));
        }
    }
    let stops: Vec<(&String, &Proc)> = st.procs.iter().collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = stops
            .iter()
            .map(|(name, p)| s.spawn(move || (name, p.stop(supervisor::STOP_GRACE))))
            .collect();
        for h in handles {
            if let Ok((name, false)) = h.join() {
                left.push(format!("{name} (pid)"));
            }
        }
    });
    // Every namespace recorded, and any other of this lab (a crash between create and save).
    let prefix = lab.netns_prefix();
    let mut names: Vec<String> = st.namespaces.clone();
    if let Ok(all) = list_all() {
        for n in all {
            if n.starts_with(&prefix) && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    // Pods first, then nodes, infra and the bridge last.
    names.reverse();
    let results: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| s.spawn(move || (n.clone(), delete_netns(n))))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (n, ok) in results {
        if !ok {
            left.push(format!("namespace {n}"));
        }
    }
    let etcd_data = if st.etcd_data.as_os_str().is_empty() {
        Path::new("/dev/shm").join(format!("{prefix}etcd"))
    } else {
        st.etcd_data.clone()
    };
    if etcd_data.exists()
        && let Err(e) = std::fs::remove_dir_all(&etcd_data)
    {
        left.push(format!("{} ({e})", etcd_data.display()));
    }
    if let Some(r) = &st.router
        && !r.dir.starts_with(lab.path())
        && r.dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&r.dir)
    {
        left.push(format!("{} ({e})", r.dir.display()));
    }
    let _ = std::fs::remove_file(lab.supervisor_socket());
    for n in &st.nodes {
        let _ = std::fs::remove_file(&n.socket);
    }
    if left.is_empty()
        && let Err(e) = lab.remove_state(lock)
    {
        left.push(e.to_string());
    }
    left
}
