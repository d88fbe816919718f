//! `margay-lab up` and `margay-lab down`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use margay_api::k8s::{LABEL_NAMESPACE_NAME, Namespace, ObjectMeta};
use margay_api::{IPPool, IPPoolSpec};
use margay_datastore::Typed;
use margay_harness::{Netns, delete_netns, list_all};

use super::bins::Bins;
use super::ds::with_ds;
use super::pods::{self, PodSpec};
use super::state::{LabDir, Lock, NodeState, Proc, State};
use super::supervisor::{self, StartSpec};
use super::{log_tail, wait_for};
use crate::plan::LabPlan;

/// The infra namespace's IPv6 address with `--ipv6`.
pub const INFRA_V6: &str = "fd00:198:18::fe";
/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";

/// What `up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Pods per node (in namespace `default`, named `pod-NODE-N`).
    pub pods_per_node: usize,
    /// Dual stack: IPv6 underlay addresses and an IPv6 pool too.
    pub ipv6: bool,
    /// How long each stage may take.
    pub timeout: Duration,
}

/// Prints one progress line to stderr.
pub fn progress(what: &str, since: Instant) {
    eprintln!("  {what:<48} {:>6.1} s", since.elapsed().as_secs_f64());
}

/// Builds the lab; on any failure says what and removes everything made so far.
pub fn up(lab: &LabDir, o: &UpOptions) -> anyhow::Result<()> {
    let plan = LabPlan::new(o.nodes, o.pods_per_node, o.ipv6)?;
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
    let mut st = State {
        id: lab.id(),
        ipv6: o.ipv6,
        bridge: format!("{prefix}br"),
        infra: format!("{prefix}infra"),
        etcd_endpoint: format!("http://{}:2379", plan.infra),
        etcd_data: Path::new("/dev/shm").join(format!("{prefix}etcd")),
        ..Default::default()
    };
    lab.save(&lock, &st)?;
    let t0 = Instant::now();
    eprintln!(
        "margay-lab up: {} nodes, {} pods per node{} in {}",
        o.nodes,
        o.pods_per_node,
        if o.ipv6 { ", dual stack" } else { "" },
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
    let prefix = lab.netns_prefix();
    let net = |s: String| -> anyhow::Result<IpNet> { Ok(s.parse()?) };

    // The underlay: a bridge, the infra namespace and one namespace per node.
    let (bridge_name, infra_name) = (st.bridge.clone(), st.infra.clone());
    let bridge = new_netns(lab, lock, st, &bridge_name)?;
    bridge.add_bridge(BRIDGE)?;
    let infra = new_netns(lab, lock, st, &infra_name)?;
    let mut infra_addrs = vec![net(format!("{}/24", plan.infra))?];
    if o.ipv6 {
        infra_addrs.push(net(format!("{INFRA_V6}/64"))?);
    }
    attach(&bridge, "p0", &infra, &infra_addrs)?;
    let mut node_ns = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let ns = new_netns(lab, lock, st, &format!("{prefix}{}", n.name))?;
        let mut addrs = vec![net(format!("{}/24", n.ipv4))?];
        if let Some(v6) = n.ipv6 {
            addrs.push(net(format!("{v6}/64"))?);
        }
        attach(&bridge, &format!("p{}", i + 1), &ns, &addrs)?;
        // A default route lets proxy ARP (and NDP) on the pods' veths answer for 169.254.1.1.
        ns.add_route(
            "0.0.0.0/0".parse()?,
            Some(IpAddr::V4(plan.infra)),
            Some("eth0"),
        )?;
        if o.ipv6 {
            ns.add_route("::/0".parse()?, Some(INFRA_V6.parse()?), Some("eth0"))?;
        }
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
    lab.save(lock, st)?;
    progress("namespaces and underlay bridge", t0);

    st.supervisor = Some(supervisor::launch(lab)?);
    lab.save(lock, st)?;
    progress("supervisor", t0);

    start_etcd(lab, lock, st, plan, &infra, o.timeout)?;
    progress("etcd", t0);

    let ipv6 = o.ipv6;
    with_ds(st, |ds| async move {
        let pools = Typed::<IPPool>::new(ds.clone());
        pools
            .create(&IPPool::new(
                "default-ipv4",
                IPPoolSpec::new("100.64.0.0/16"),
            ))
            .await?;
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
        Typed::<Namespace>::new(ds)
            .create(&Namespace {
                metadata: meta,
                ..Default::default()
            })
            .await?;
        Ok(())
    })
    .context("cannot write the IP pools and the default namespace")?;

    for n in st.nodes.clone() {
        let dir = lab.join(&n.name);
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"{}\"\nsocket = \"{}\"\nip = \"{}/24\"\n{}[datastore]\netcd_endpoints = [\"{}\"]\n",
                n.name,
                n.socket.display(),
                n.ipv4,
                n.ipv6
                    .as_ref()
                    .map(|a| format!("ip6 = \"{a}/64\"\n"))
                    .unwrap_or_default(),
                st.etcd_endpoint
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
    progress("BGP mesh established", t0);

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
    st.ready = true;
    lab.save(lock, st)?;
    Ok(())
}

/// Waits until every node's NodeStatus (what `status` shows, written every 10 s by its agent)
/// reports all its mesh sessions Established.
fn wait_published(st: &State, timeout: Duration) -> anyhow::Result<()> {
    // One session per other node and family (IPv6 sessions between the nodes' IPv6 addresses).
    let families = if st.ipv6 { 2 } else { 1 };
    let want = st.nodes.len().saturating_sub(1) as u32 * families;
    let read = || -> Vec<(String, Option<(u32, u32)>)> {
        let names: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
        with_ds(st, |ds| async move {
            let (all, _) = Typed::<margay_api::NodeStatus>::new(ds).list(None).await?;
            Ok(names
                .into_iter()
                .map(|n| {
                    let counts = all
                        .iter()
                        .find(|s| s.metadata.name.as_deref() == Some(n.as_str()))
                        .and_then(|s| s.status.as_ref()?.bgp.as_ref())
                        .map(|b| (b.number_established, b.number_not_established));
                    (n, counts)
                })
                .collect())
        })
        .unwrap_or_default()
    };
    wait_for(
        &format!("every node's NodeStatus shows {want} established BGP sessions"),
        timeout,
        || {
            let r = read();
            (!r.is_empty() && r.iter().all(|(_, c)| *c == Some((want, 0)))).then_some(())
        },
        || {
            read()
                .iter()
                .map(|(n, c)| match c {
                    Some((up, down)) => format!("{n}: {up} established, {down} not"),
                    None => format!("{n}: no status"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    )
}

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
