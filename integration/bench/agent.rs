//! Node agent benchmark (root; run by `integration/bench/agent_bench.sh [N]`).
//!
//! Measures the release `margay-node` binary, each figure beside its anchor measured in the same
//! run:
//!
//! 1. **install**: the agent, peered from the datastore with `bgp_inject.py` (mesh off, one
//!    BGPPeer, AS 64512), learns N /32 routes; timed exactly as `fib_bench.sh` times
//!    `bird_install_s`: the injector's first UPDATE (its `t_first_update`, CLOCK_MONOTONIC) →
//!    the agent's namespace's FIB holds all N (`/proc/net/fib_triestat` sampled every 50 ms by
//!    the same Python loop). Anchors: `fib_bench.sh N`'s `bird_install_s` and `nl_add_s`.
//! 2. **rss**: a fresh agent with `REMOTE` (10k) routes learned from the injector and `EPS` (1k)
//!    local endpoints on real veths, created through the local API as the CNI plugin does
//!    (allocate + endpoint_up); VmRSS and VmHWM from `/proc/PID/status`.
//! 3. **endpoint-up latency**: the client-side round trip of each of those endpoint_up calls (the
//!    agent answers after the kernel ACKed the route and the WorkloadEndpoint is written); right
//!    after each answer the route is also looked up in the agent's `/proc/PID/net/route`.
//!
//! Everything runs in `mgyt-` namespaces (underlay 198.18.2.0/30, routes in 100.64.0.0/10) that
//! the harness deletes on exit, also on a panic; every process is a child stopped by PID.
//!
//! Environment: `MARGAY_NODE_BIN` (the release binary; required), `MARGAY_SHARED` (for
//! `bench/fib_bench.sh` and `bench/bgp_inject.py`), `REPS` (3), `EPS` (1000), `REMOTE` (10000),
//! `KEEP=1` keeps the work directory (agent logs, the agent's smaps after the endpoints);
//! `AGENT_PROBE` is a shell command run at that moment with `$AGENT_PID` and `$AGENT_LOG`;
//! `INSTALL_PROBE` one started (with the same variables) just before the injector of each
//! install and waited for after it (e.g. `perf record -g -p $AGENT_PID -o … -- sleep 3`, for a
//! CPU profile).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use margay_agent::localapi::client::Client;
use margay_agent::localapi::proto::{Allocate, Attachment, EndpointUp};
use margay_api::{
    BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, IPPool, IPPoolSpec,
};
use margay_datastore::{Datastore, Etcd, EtcdConfig, Typed};
use margay_harness::fixtures::Etcd as EtcdServer;
use margay_harness::{Daemon, Netns, Ready};

const NODE_ADDR: &str = "198.18.2.1";
const INJ_ADDR: &str = "198.18.2.2";
/// Local pods come from this pool; the injector's routes start at `REMOTE_BASE`, outside it.
const POOL: &str = "100.64.0.0/16";
const REMOTE_BASE: &str = "100.100.0.0";
/// Bound of every wait for the kernel.
const TIMEOUT_S: u64 = 600;

/// The same sampler as fib_bench.sh's `watch_fib`: the first `Prefixes:` of
/// `/proc/net/fib_triestat` is the `Main:` trie (main and local merged while the namespace has
/// no policy rules; the `Local:` section that follows shows the same merged trie again, so it
/// must not be added). With `-1` as the target it prints the count once.
const WATCHER: &str = r#"
import sys, time
out, target, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def count():
    with open("/proc/net/fib_triestat") as f:
        return next(int(l.split()[1]) for l in f if "Prefixes:" in l)
if target < 0:
    print(count()); sys.exit(0)
end = time.monotonic() + timeout
open(out + ".ready", "w").close()
while time.monotonic() < end:
    n = count()
    if n >= target:
        open(out, "w").write("%.6f %d\n" % (time.monotonic(), n))
        break
    time.sleep(0.05)
"#;

struct Env {
    bin: PathBuf,
    shared: PathBuf,
    work: tempfile::TempDir,
}

/// One node namespace with etcd on its loopback, the injector's namespace on a /30, and the
/// datastore objects that peer them.
struct Node {
    // Field order = drop order: the agent and the injector stop before etcd, then the namespaces.
    agent: Daemon,
    client: Client,
    _etcd: EtcdServer,
    ns: Netns,
    inj: Netns,
    dir: PathBuf,
}

impl Node {
    fn start(env: &Env, tag: &str) -> Result<Node> {
        let dir = env.work.path().join(tag);
        std::fs::create_dir_all(&dir)?;
        let ns = Netns::with_tag(&format!("ab-{tag}"))?;
        let inj = Netns::with_tag(&format!("ab-{tag}-inj"))?;
        ns.connect(
            "eth0",
            &[format!("{NODE_ADDR}/30").parse()?],
            &inj,
            "eth0",
            &[format!("{INJ_ADDR}/30").parse()?],
        )?;
        let etcd = EtcdServer::start_in(&ns, NODE_ADDR.parse()?)?;
        let endpoint = "http://127.0.0.1:2379".to_string();
        ns.block_on(async move {
            let ds: Arc<dyn Datastore> = Arc::new(
                Etcd::connect(&EtcdConfig {
                    endpoints: vec![endpoint],
                    ..Default::default()
                })
                .await?,
            );
            Typed::<IPPool>::new(Arc::clone(&ds))
                .create(&IPPool::new("default-ipv4", IPPoolSpec::new(POOL)))
                .await?;
            Typed::<BGPConfiguration>::new(Arc::clone(&ds))
                .create(&BGPConfiguration::new(
                    "default",
                    BGPConfigurationSpec {
                        node_to_node_mesh_enabled: Some(false),
                        ..Default::default()
                    },
                ))
                .await?;
            Typed::<BGPPeer>::new(ds)
                .create(&BGPPeer::new(
                    "injector",
                    BGPPeerSpec {
                        peer_ip: Some(INJ_ADDR.into()),
                        as_number: Some(64512),
                        ..Default::default()
                    },
                ))
                .await?;
            anyhow::Ok(())
        })??;
        let config = dir.join("node.toml");
        let sock = dir.join("node.sock");
        std::fs::write(
            &config,
            format!(
                "node_name = \"bench-node\"\nsocket = \"{}\"\nip = \"{NODE_ADDR}/30\"\n\
                 [datastore]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n",
                sock.display()
            ),
        )?;
        let agent = Daemon::builder("margay-node", &env.bin)
            .args(["--config", config.to_str().context("utf-8 path")?])
            .env("RUST_LOG", "info")
            .netns(&ns)
            .log_file(dir.join("margay-node.log"))
            .ready(Ready::File(sock.clone()))
            .timeout(Duration::from_secs(30))
            .spawn()?;
        let client = Client::new(&sock, Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.status() {
                Ok(s) if s.ready => break,
                other => {
                    ensure!(
                        Instant::now() < deadline,
                        "margay-node not ready in 60 s: {other:?}\n{}",
                        agent.log_tail(30)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(Node {
            agent,
            client,
            _etcd: etcd,
            ns,
            inj,
            dir,
        })
    }

    /// Prefixes in the node namespace's FIB (all tries).
    fn fib_count(&self) -> Result<u64> {
        let out = self
            .ns
            .command("python3")
            .args(["-c", WATCHER, "-", "-1", "0"])
            .output()?;
        ensure!(out.status.success(), "fib count failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    /// Starts the CLOCK_MONOTONIC watcher for `target` prefixes; returns it and its output file.
    fn watch(&self, name: &str, target: u64) -> Result<(std::process::Child, PathBuf)> {
        let out = self.dir.join(name);
        let child = self
            .ns
            .command("python3")
            .args(["-c", WATCHER])
            .arg(&out)
            .args([target.to_string(), TIMEOUT_S.to_string()])
            .spawn()?;
        let ready = out.with_extension("ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            ensure!(Instant::now() < deadline, "the FIB watcher did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((child, out))
    }

    /// Starts the injector advertising `n` /32s from REMOTE_BASE to the agent.
    fn inject(&self, env: &Env, n: u64) -> Result<(Daemon, PathBuf)> {
        let status = self.dir.join(format!("inj-{n}.json"));
        let script = env.shared.join("bench/bgp_inject.py");
        let d = Daemon::builder("bgp_inject", "python3")
            .arg(&script)
            .args([
                "--connect",
                NODE_ADDR,
                "--bind",
                INJ_ADDR,
                "--local-as",
                "64512",
            ])
            .args(["--router-id", INJ_ADDR, "--prefix-base", REMOTE_BASE])
            .args(["--advertise", &n.to_string(), "--status"])
            .arg(&status)
            .args(["--duration", &(TIMEOUT_S + 120).to_string(), "--quiet"])
            .netns(&self.inj)
            .log_file(self.dir.join(format!("inj-{n}.log")))
            .spawn()?;
        Ok((d, status))
    }

    /// Injects `n` routes and waits until the kernel holds them; returns injector's first
    /// UPDATE → all in the FIB, in seconds, and the running injector (its session stays up).
    fn learn(&self, env: &Env, n: u64) -> Result<(f64, Daemon)> {
        let base = self.fib_count()?;
        let (mut watcher, out) = self.watch(&format!("installed-{n}"), base + n)?;
        let (inj, status) = self.inject(env, n)?;
        let rc = watcher.wait()?;
        ensure!(rc.success(), "the FIB watcher failed");
        let done = std::fs::read_to_string(&out).unwrap_or_default();
        let Some(t_done) = done
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
        else {
            bail!(
                "the agent did not install {n} routes within {TIMEOUT_S} s (FIB has {} of {})\n{}",
                self.fib_count()?.saturating_sub(base),
                n,
                self.agent.log_tail(20)
            );
        };
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&status)?)?;
        let t0 = s["t_first_update"]
            .as_f64()
            .context("injector status has no t_first_update")?;
        // The FIB count is a proxy: check that the routes are really the injector's, in main.
        let learned = self
            .ns
            .exec(&[
                "ip", "-4", "route", "show", "table", "main", "via", INJ_ADDR,
            ])?
            .stdout
            .lines()
            .count() as u64;
        if learned != n {
            let all = self
                .ns
                .exec(&["ip", "-4", "route", "show", "table", "all"])?
                .stdout;
            let other: Vec<&str> = all.lines().filter(|l| !l.contains(INJ_ADDR)).collect();
            bail!(
                "main table has {learned} routes via the injector, expected {n}; {} routes in all \
                 tables, {} not via the injector, e.g.:\n{}",
                all.lines().count(),
                other.len(),
                other
                    .iter()
                    .take(12)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok((t_done - t0, inj))
    }

    fn proc_status(&self) -> Result<BTreeMap<String, f64>> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.agent.pid()))?;
        Ok(s.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                let kb: f64 = v.trim().strip_suffix(" kB")?.parse().ok()?;
                Some((k.to_owned(), kb / 1024.0))
            })
            .collect())
    }

    /// The shell command in environment variable `var`, if set, to run with `$AGENT_PID` and
    /// `$AGENT_LOG` (a profiler attached to the agent, say).
    fn probe(&self, var: &str) -> Option<Command> {
        let script = std::env::var(var).ok()?;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .env("AGENT_PID", self.agent.pid().to_string())
            .env("AGENT_LOG", self.agent.log_path())
            .stdout(Stdio::null());
        Some(cmd)
    }

    /// utime + stime of the agent, in seconds (USER_HZ = 100).
    fn cpu_s(&self) -> Result<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.agent.pid()))?;
        let rest = s.rsplit_once(')').context("bad /proc/PID/stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / 100.0)
    }
}

struct Install {
    secs: f64,
    cpu_s: f64,
    hwm_mib: f64,
}

fn bench_install(env: &Env, n: u64, rep: usize) -> Result<Install> {
    let node = Node::start(env, &format!("i{rep}"))?;
    let cpu0 = node.cpu_s()?;
    let probe = match node.probe("INSTALL_PROBE") {
        Some(mut cmd) => Some(cmd.spawn()?),
        None => None,
    };
    let (secs, _inj) = node.learn(env, n)?;
    if let Some(mut p) = probe {
        eprintln!("[agent_bench] INSTALL_PROBE exited with {}", p.wait()?);
    }
    Ok(Install {
        secs,
        cpu_s: node.cpu_s()? - cpu0,
        hwm_mib: node.proc_status()?["VmHWM"],
    })
}

struct Endpoints {
    rss_mib: f64,
    hwm_mib: f64,
    anon_mib: f64,
    file_mib: f64,
    up_ms: Vec<f64>,
    alloc_ms: Vec<f64>,
    present_at_ack: usize,
    learn_s: f64,
}

fn attachment(i: usize) -> Option<Attachment> {
    Some(Attachment {
        handle_id: format!("net.bench-{i}"),
        container_id: format!("bench-{i}"),
        namespace: "default".into(),
        pod: format!("bench-{i}"),
        ifname: "eth0".into(),
    })
}

/// `/proc/net/route` key of a host route: `IFACE\tDEST` with DEST in the kernel's hex.
fn route_key(ifname: &str, ip: Ipv4Addr) -> String {
    format!("{ifname}\t{:08X}\t", u32::from_le_bytes(ip.octets()))
}

fn bench_endpoints(env: &Env, eps: usize, remote: u64, rep: usize) -> Result<Endpoints> {
    let node = Node::start(env, &format!("e{rep}"))?;
    // Real veth pairs: the host ends in the node namespace (as the CNI plugin leaves them), the
    // pod ends together in one "pods" namespace (a namespace per pod would only slow the setup;
    // the agent's work is the host end's sysctls and its /32 route).
    let pods = Netns::with_tag(&format!("ab-e{rep}-pods"))?;
    let batch = node.dir.join("veths.batch");
    let pod_batch = node.dir.join("pods.batch");
    let mut f = std::fs::File::create(&batch)?;
    let mut g = std::fs::File::create(&pod_batch)?;
    for i in 0..eps {
        writeln!(
            f,
            "link add mgyb{i}h type veth peer name mgyb{i}p netns {}",
            pods.name()
        )?;
        writeln!(f, "link set mgyb{i}h up")?;
        writeln!(g, "link set mgyb{i}p up")?;
    }
    drop((f, g));
    let t = Instant::now();
    node.ns
        .exec(&["ip", "-batch", batch.to_str().context("utf-8")?])?;
    pods.exec(&["ip", "-batch", pod_batch.to_str().context("utf-8")?])?;
    eprintln!(
        "[agent_bench] {eps} veth pairs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (learn_s, _inj) = node.learn(env, remote)?;
    let route_table = format!("/proc/{}/net/route", node.agent.pid());
    let mut up_ms = Vec::with_capacity(eps);
    let mut alloc_ms = Vec::with_capacity(eps);
    let mut present_at_ack = 0;
    let started = Instant::now();
    for i in 0..eps {
        let t = Instant::now();
        let got = node
            .client
            .allocate(Allocate {
                attachment: attachment(i),
                num_v4: 1,
                ..Default::default()
            })
            .with_context(|| format!("allocate for endpoint {i}"))?;
        alloc_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let cidr = got
            .addresses
            .first()
            .context("no address allocated")?
            .clone();
        let ifname = format!("mgyb{i}h");
        let t = Instant::now();
        node.client
            .endpoint_up(EndpointUp {
                attachment: attachment(i),
                host_ifname: ifname.clone(),
                addresses: vec![cidr.clone()],
                mac: String::new(),
            })
            .with_context(|| format!("endpoint_up for endpoint {i}"))?;
        up_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let ip: Ipv4Addr = cidr.trim_end_matches("/32").parse()?;
        if std::fs::read_to_string(&route_table)?.contains(&route_key(&ifname, ip)) {
            present_at_ack += 1;
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "[agent_bench] {} endpoints up, {:.1} s; last 100: allocate p50 {:.1} ms, endpoint_up p50 {:.1} ms",
                i + 1,
                started.elapsed().as_secs_f64(),
                percentile(&alloc_ms[i - 99..], 50.0),
                percentile(&up_ms[i - 99..], 50.0)
            );
        }
    }
    // Let the agent settle (WorkloadEndpoint watches, exports) before reading its memory.
    std::thread::sleep(Duration::from_secs(3));
    let st = node.proc_status()?;
    // For a profile of the memory (KEEP=1 keeps it): the agent's mappings at that moment.
    let pid = node.agent.pid();
    std::fs::copy(format!("/proc/{pid}/smaps"), node.dir.join("agent.smaps"))?;
    // AGENT_PROBE: a shell command run now with $AGENT_PID and $AGENT_LOG set (e.g. gdb calling
    // malloc_stats(), whose report lands in the agent's log), for a memory profile.
    if let Some(mut cmd) = node.probe("AGENT_PROBE") {
        eprintln!("[agent_bench] AGENT_PROBE exited with {}", cmd.status()?);
    }
    let local = node
        .ns
        .exec(&[
            "ip", "-4", "route", "show", "table", "main", "scope", "link",
        ])?
        .stdout
        .lines()
        .filter(|l| l.contains(" dev mgyb"))
        .count();
    ensure!(
        local == eps,
        "{local} of {eps} endpoint routes in the kernel"
    );
    Ok(Endpoints {
        rss_mib: st["VmRSS"],
        hwm_mib: st["VmHWM"],
        anon_mib: st.get("RssAnon").copied().unwrap_or(f64::NAN),
        file_mib: st.get("RssFile").copied().unwrap_or(f64::NAN),
        up_ms,
        alloc_ms,
        present_at_ack,
        learn_s,
    })
}

/// `fib_bench.sh N`: its key=value line.
fn fib_bench(env: &Env, n: u64) -> Result<BTreeMap<String, String>> {
    let script = env.shared.join("bench/fib_bench.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(n.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(out.status.success(), "{} {n} failed", script.display());
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
    s[i.min(s.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// `median (min–max)` of per-run values.
fn cell(v: &[f64], prec: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 {
        format!("{:.prec$}", v[0])
    } else {
        format!("{:.prec$} ({min:.prec$}–{max:.prec$})", median(v))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_num<T: std::str::FromStr>(k: &str, default: T) -> Result<T> {
    match std::env::var(k) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{k}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> Result<()> {
    // A test runner listing tests (`cargo nextest run --all-targets` runs `--list --format terse`
    // on every target, benches included): this benchmark holds no tests, so the list is empty.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // Ctrl-C or TERM: delete the namespaces made so far (their guards would not run).
    margay_harness::leftovers::clean_up_on_signal()?;
    // `cargo bench` passes `--bench`; the only positional argument is N.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: u64 = match args.first() {
        Some(a) => a
            .parse()
            .with_context(|| format!("N={a:?}: give the number of routes to inject"))?,
        None => 100_000,
    };
    ensure!((1..=4_000_000).contains(&n), "N={n}: use 1 to 4000000");
    let reps: usize = env_num("REPS", 3)?;
    let eps: usize = env_num("EPS", 1000)?;
    let remote: u64 = env_num("REMOTE", 10_000)?;
    ensure!(
        reps >= 1 && (1..=16_000).contains(&eps),
        "REPS ≥ 1, 1 ≤ EPS ≤ 16000"
    );
    margay_harness::require_root().context("the node agent bench needs root (namespaces)")?;
    let bin = PathBuf::from(
        std::env::var("MARGAY_NODE_BIN")
            .context("set MARGAY_NODE_BIN to the release margay-node (agent_bench.sh does)")?,
    );
    ensure!(
        bin.is_file(),
        "MARGAY_NODE_BIN={}: no such file",
        bin.display()
    );
    let shared = PathBuf::from(std::env::var("MARGAY_SHARED").unwrap_or("/work/shared".into()));
    ensure!(
        shared.join("bench/fib_bench.sh").is_file(),
        "MARGAY_SHARED={}: no bench/fib_bench.sh there",
        shared.display()
    );
    let work = tempfile::Builder::new().prefix("agent_bench.").tempdir()?;
    let env = Env { bin, shared, work };
    let load0 = loadavg();
    eprintln!("[agent_bench] N={n} EPS={eps} REMOTE={remote} REPS={reps}, load {load0}");

    let (mut inst, mut bird, mut nl) = (Vec::new(), Vec::new(), Vec::new());
    let mut epr = Vec::new();
    for rep in 0..reps {
        let i = bench_install(&env, n, rep)?;
        eprintln!(
            "[agent_bench] run {}: agent installed {n} routes in {:.3} s (cpu {:.2} s, hwm {:.1} MiB)",
            rep + 1,
            i.secs,
            i.cpu_s,
            i.hwm_mib
        );
        let e = bench_endpoints(&env, eps, remote, rep)?;
        eprintln!(
            "[agent_bench] run {}: {eps} endpoints + {remote} remote routes: rss {:.1} MiB hwm {:.1} MiB, endpoint_up p50 {:.2} ms p99 {:.2} ms, {}/{eps} routes present at the answer",
            rep + 1,
            e.rss_mib,
            e.hwm_mib,
            percentile(&e.up_ms, 50.0),
            percentile(&e.up_ms, 99.0),
            e.present_at_ack
        );
        let f = fib_bench(&env, n)?;
        let get = |k: &str| -> Result<f64> {
            f.get(k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("fib_bench gave no {k}: {f:?}"))
        };
        let (b, l) = (get("bird_install_s")?, get("nl_add_s")?);
        eprintln!(
            "[agent_bench] run {}: fib_bench bird_install_s={b} nl_add_s={l}",
            rep + 1
        );
        inst.push(i);
        epr.push(e);
        bird.push(b);
        nl.push(l);
    }
    let load1 = loadavg();

    let col = |f: &dyn Fn(usize) -> f64| -> Vec<f64> { (0..reps).map(f).collect() };
    let agent_s = col(&|r| inst[r].secs);
    let r_bird = col(&|r| inst[r].secs / bird[r]);
    let r_nl = col(&|r| inst[r].secs / nl[r]);
    let up50 = col(&|r| percentile(&epr[r].up_ms, 50.0));
    let up99 = col(&|r| percentile(&epr[r].up_ms, 99.0));
    let al50 = col(&|r| percentile(&epr[r].alloc_ms, 50.0));
    let rss = col(&|r| epr[r].rss_mib);
    let hwm = col(&|r| epr[r].hwm_mib);
    let anon = col(&|r| epr[r].anon_mib);
    let file = col(&|r| epr[r].file_mib);
    let present: usize = epr.iter().map(|e| e.present_at_ack).sum();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    // One machine-readable line of medians for integration/bench/report.py.
    println!(
        "agent n={n} reps={reps} install_s={:.3} bird_install_s={:.3} nl_add_s={:.3} rss_mib={:.1} anon_mib={:.1} \
         eps={eps} remote={remote} up_p50_ms={:.2} up_p99_ms={:.2}",
        median(&agent_s),
        median(&bird),
        median(&nl),
        median(&rss),
        median(&anon),
        median(&up50),
        median(&up99)
    );
    println!(
        "\n### margay-node, N={n}, {date}, load {load0} → {load1}, {reps} run(s): median (min–max)\n"
    );
    println!("| measure | margay-node | anchor (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| install {n} BGP routes (s) | {} | BIRD {} | {} | |",
        cell(&agent_s, 3),
        cell(&bird, 3),
        cell(&r_bird, 2)
    );
    println!(
        "| install {n} BGP routes (s) | {} | nl_add {} | {} | ≤ 1.25 |",
        cell(&agent_s, 3),
        cell(&nl, 3),
        cell(&r_nl, 2)
    );
    println!(
        "| RSS, {eps} endpoints + {remote} remote routes (MiB) | {} | goal 30 | {} | ≤ 1.00 |",
        cell(&rss, 1),
        cell(&col(&|r| rss[r] / 30.0), 2)
    );
    println!("| VmHWM, same (MiB) | {} | | | |", cell(&hwm, 1));
    println!("| of which RssAnon (MiB) | {} | | | |", cell(&anon, 1));
    println!("| of which RssFile (MiB) | {} | | | |", cell(&file, 1));
    println!(
        "| endpoint_up → route (ms), p50 | {} | | | |",
        cell(&up50, 2)
    );
    println!(
        "| endpoint_up → route (ms), p99 | {} | | | |",
        cell(&up99, 2)
    );
    println!("| allocate (ms), p50 | {} | | | |", cell(&al50, 2));
    println!(
        "\nAgent CPU during the install: {} s; its VmHWM after it: {} MiB. {remote} remote routes learned in {} s. \
         Routes found in the kernel right at endpoint_up's answer: {present}/{}.",
        cell(&col(&|r| inst[r].cpu_s), 2),
        cell(&col(&|r| inst[r].hwm_mib), 1),
        cell(&col(&|r| epr[r].learn_s), 3),
        eps * reps
    );
    if std::env::var("KEEP").as_deref() == Ok("1") {
        let kept = env.work.keep();
        eprintln!("[agent_bench] kept {}", kept.display());
    }
    Ok(())
}
