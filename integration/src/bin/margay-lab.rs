//! `margay-lab`: a multi-node Margay cluster on one Linux host, in network namespaces.
//! See docs/lab.md.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use margay_integration::lab::bins::Bins;
use margay_integration::lab::pods::{self, PodSpec, PortDecl, find_pod, parse_pod_id};
use margay_integration::lab::state::{DatastoreKind, LabDir, RouterKind, State};
use margay_integration::lab::sync::{Confirmation, confirm};
use margay_integration::lab::up::{INTERNET_PORT, UpOptions, datastore_env, delete_node, down, up};
use margay_integration::lab::{objects, probe, status, supervisor};

/// A multi-node Margay cluster on one Linux host: etcd, agents and pods in network namespaces.
///
/// The lab's state lives in $MARGAY_LAB_DIR (default /run/margay-lab), so commands work from any
/// directory. Exit codes: 0 success; 1 a probe found the connection blocked; 2 an error (or a
/// policy stored but not enforced by the agents); `ping`, `exec` and `ctl` pass on their command's code.
#[derive(Debug, Parser)]
#[command(name = "margay-lab", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring a lab up: etcd, N nodes with margay-node, M pods per node wired by margay-cni.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Pods per node (namespace default, named pod-NODE-N); 0 for none.
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// Dual stack: IPv6 underlay addresses and an IPv6 pool too.
        #[arg(long)]
        ipv6: bool,
        /// Dedicated route reflectors (rr-1…, `margay-node --role route-reflector`); turns the
        /// node-to-node mesh off.
        #[arg(long, default_value_t = 0)]
        route_reflectors: usize,
        /// A top-of-rack router (AS 65001) peering eBGP with every node.
        #[arg(long, value_enum)]
        external_router: Option<RouterKind>,
        /// Where Margay keeps its data: etcd, or the test Kubernetes API server.
        #[arg(long, value_enum, default_value_t = DatastoreKind::Etcdv3)]
        datastore: DatastoreKind,
        /// Seconds each stage may take before up gives up and cleans up.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// Remove everything the lab made (also after a crash of its supervisor).
    Down,
    /// Nodes, blocks, pods and BGP sessions.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Print the topology as a Graphviz graph.
        #[arg(long, conflicts_with = "svg")]
        dot: bool,
        /// Print the topology as SVG (rendered by Graphviz's dot when installed).
        #[arg(long)]
        svg: bool,
    },
    /// Nodes: `node delete NODE` removes one as Calico's `calicoctl delete node` does.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Connect from a pod or node to the internet host (198.19.0.1:80) and print the source
    /// address it saw (a pod's node address with natOutgoing); exit 1 when it does not answer.
    Internet {
        /// A pod NS/NAME or a node.
        from: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
    /// Kubernetes namespaces.
    Ns {
        #[command(subcommand)]
        cmd: NsCmd,
    },
    /// Pods.
    Pod {
        #[command(subcommand)]
        cmd: PodCmd,
    },
    /// Kubernetes NetworkPolicies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Exit 0 when FROM reaches TO on PORT/PROTO, 1 when blocked; or --matrix PORT/PROTO.
    Probe {
        /// Probe every ordered pod pair in parallel; takes only PORT/PROTO.
        #[arg(long)]
        matrix: bool,
        /// FROM TO PORT/PROTO (FROM a pod NS/NAME or a node, TO a pod), or PORT/PROTO with --matrix.
        #[arg(required = true, num_args = 1..=3)]
        args: Vec<String>,
        /// Probe the pods' IPv6 addresses (a lab brought up with --ipv6); IPv4 by default.
        #[arg(long)]
        ipv6: bool,
        /// Seconds without an answer after which a connection counts as blocked.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
        /// Output format (for --matrix).
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ping B (a pod NS/NAME, a node, or an address) from A (a pod or a node).
    Ping {
        /// Source: NS/NAME or a node.
        from: String,
        /// Destination: NS/NAME, a node, or an IP address.
        to: String,
        /// Number of pings.
        #[arg(short, long, default_value_t = 3)]
        count: u32,
    },
    /// Run a command inside a node (node-1), a pod (NS/NAME) or `infra`.
    Exec {
        /// Where.
        target: String,
        /// The command (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// margayctl pointed at the lab's etcd, e.g. `margay-lab ctl get node -o wide`.
    Ctl {
        /// margayctl's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The supervisor (started by `up`).
    #[command(hide = true)]
    Supervise,
    /// The server each pod runs (started by the supervisor).
    #[command(hide = true)]
    PodServer {
        /// The pod's NS/NAME, which it answers with.
        #[arg(long)]
        name: String,
        /// Ports to serve on TCP and UDP.
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// Answer TCP connections with the name and the address they came from.
        #[arg(long)]
        echo_peer: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Remove a node as if its machine were gone, as `calicoctl delete node` does: stop its
    /// agent and pods, delete its Node and WorkloadEndpoints, release its addresses and blocks.
    Delete {
        /// The node (node-N).
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum NsCmd {
    /// Create a namespace (it carries kubernetes.io/metadata.name=NAME).
    Create {
        /// Its name.
        name: String,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Set (KEY=VALUE) or remove (KEY-) labels.
    Label {
        /// The namespace.
        name: String,
        /// Edits.
        #[arg(required = true)]
        edits: Vec<String>,
    },
    /// Delete a namespace with its pods and NetworkPolicies.
    Delete {
        /// The namespace.
        name: String,
    },
    /// List namespaces and their labels.
    List,
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create a pod NS/NAME serving TCP and UDP on its ports (80 and 81 when none declared).
    Create {
        /// NS/NAME.
        id: String,
        /// The node (as `status` names it); the one with the fewest pods by default.
        #[arg(long)]
        node: Option<String>,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A named port NAME=PORT/PROTO (repeatable; protocol case-insensitive).
        #[arg(long = "port")]
        ports: Vec<PortDecl>,
    },
    /// Set (KEY=VALUE) or remove (KEY-) labels.
    Label {
        /// NS/NAME.
        id: String,
        /// Edits.
        #[arg(required = true)]
        edits: Vec<String>,
    },
    /// Delete a pod (CNI DEL, its server, its namespace).
    Delete {
        /// NS/NAME.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Create or replace a networking.k8s.io/v1 NetworkPolicy from a YAML or JSON file.
    Apply {
        /// The file (- for stdin).
        file: String,
    },
    /// Delete NetworkPolicy NS/NAME.
    Delete {
        /// NS/NAME.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("margay-lab: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The state, read under the lock and released at once (for commands that only read it).
fn snapshot(lab: &LabDir) -> anyhow::Result<State> {
    let lock = lab.lock()?;
    let st = lab.load_existing(&lock)?;
    Ok(st)
}

fn labels_of(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        if !a.contains('=') {
            anyhow::bail!("--label {a:?}: use KEY=VALUE");
        }
    }
    pods::edit_labels(&mut out, args)?;
    Ok(out)
}

fn report(what: &str, c: Confirmation) {
    match c {
        Confirmation::Agents => eprintln!("{what}; every agent's policy has it"),
        Confirmation::DatastoreOnly => eprintln!("{what}"),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let lab = LabDir::from_env();
    match cli.cmd {
        Cmd::Up {
            nodes,
            pods_per_node,
            ipv6,
            route_reflectors,
            external_router,
            datastore,
            timeout,
        } => {
            up(
                &lab,
                &UpOptions {
                    nodes,
                    pods_per_node,
                    ipv6,
                    route_reflectors,
                    external_router,
                    datastore,
                    timeout: Duration::from_secs(timeout),
                },
            )?;
        }
        Cmd::Node {
            cmd: NodeCmd::Delete { name },
        } => {
            let lock = lab.lock()?;
            let mut st = lab.load_existing(&lock)?;
            let c = delete_node(&lab, &lock, &mut st, &name)?;
            eprintln!(
                "node {name} deleted: {} endpoints deleted, {} addresses and {} blocks released{}",
                c.endpoints_deleted,
                c.addresses_released,
                c.blocks_released,
                if c.blocks_in_use > 0 {
                    format!(", {} blocks kept (addresses still in use)", c.blocks_in_use)
                } else {
                    String::new()
                }
            );
        }
        Cmd::Internet { from, timeout } => {
            let timeout = Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .context("--timeout must be a positive number of seconds")?;
            let st = snapshot(&lab)?;
            let inet = st
                .internet
                .clone()
                .context("this lab has no internet host (made by an older margay-lab)")?;
            let ns = netns_of(&st, &from)?;
            let to = std::net::SocketAddr::new(inet.address.parse()?, INTERNET_PORT);
            return Ok(match probe::internet(&ns, to, timeout)? {
                Some(seen) => {
                    println!("{from} -> internet {to}: seen as {seen}");
                    ExitCode::SUCCESS
                }
                None => {
                    println!("{from} -> internet {to}: no answer");
                    ExitCode::from(1)
                }
            });
        }
        Cmd::Down => down(&lab)?,
        Cmd::Status { output, dot, svg } => {
            let st = snapshot(&lab)?;
            let mut online = true;
            let s = match status::gather(&st) {
                Ok(s) => s,
                // People still get what the state knows; scripts get the error.
                Err(e) if output == Output::Text && !dot && !svg => {
                    eprintln!(
                        "margay-lab: {e:#}\n(showing what the lab's state file knows; blocks and BGP sessions come from etcd)"
                    );
                    online = false;
                    status::offline(&st)
                }
                Err(e) => return Err(e),
            };
            if dot {
                print!("{}", status::dot(&st, &s));
            } else if svg {
                print!("{}", status::svg(&st, &s));
            } else if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let objects = online.then(|| status::objects(&st).ok()).flatten();
                print!("{}", status::picture(&lab, &st, &s, objects.as_ref()));
            }
        }
        Cmd::Ns { cmd } => return ns(&lab, cmd),
        Cmd::Pod { cmd } => return pod(&lab, cmd),
        Cmd::Policy { cmd } => return policy(&lab, cmd),
        Cmd::Probe {
            matrix,
            args,
            ipv6,
            timeout,
            output,
        } => {
            let timeout = Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .context("--timeout must be a positive number of seconds")?;
            let family = if ipv6 {
                probe::Family::V6
            } else {
                probe::Family::Any
            };
            let st = snapshot(&lab)?;
            let (pair, port) = match (matrix, args.as_slice()) {
                (true, [port]) => (None, port),
                (false, [from, to, port]) => (Some((from, to)), port),
                (true, _) => {
                    anyhow::bail!("probe --matrix takes one argument, PORT/PROTO (e.g. 80/TCP)")
                }
                (false, _) => anyhow::bail!(
                    "probe takes FROM TO PORT/PROTO (e.g. default/pod-1-1 default/pod-2-1 80/TCP)"
                ),
            };
            let (port, proto) = probe::parse_port(port)?;
            let target = probe::Target {
                port,
                proto,
                family,
                timeout,
            };
            match pair {
                None => {
                    let m = probe::matrix(&st, target)?;
                    if output == Output::Json {
                        println!("{}", serde_json::to_string_pretty(&m)?);
                    } else {
                        print!("{}", probe::matrix_table(&st, &m));
                    }
                }
                Some((from, to)) => {
                    let (from_ns, to) = (netns_of(&st, from)?, find_pod(&st, to)?);
                    let ok = probe::probe(&from_ns, to, target)?;
                    println!(
                        "{from} -> {} {}: {}",
                        to.id(),
                        args[2],
                        if ok { "connected" } else { "blocked" }
                    );
                    return Ok(if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    });
                }
            }
        }
        Cmd::Ping { from, to, count } => {
            let st = snapshot(&lab)?;
            let ns = netns_of(&st, &from)?;
            let ip = address_of(&st, &to)?;
            return passthrough(
                std::process::Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "ping", "-n", "-i", "0.2", "-W", "2", "-c",
                    ])
                    .arg(count.to_string())
                    .arg(ip),
            );
        }
        Cmd::Exec { target, cmd } => {
            let st = snapshot(&lab)?;
            let ns = netns_of(&st, &target)?;
            return passthrough(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &ns])
                    .args(&cmd),
            );
        }
        Cmd::Ctl { args } => {
            let st = snapshot(&lab)?;
            let bins = Bins::find()?;
            return passthrough(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &st.infra])
                    .arg(&bins.ctl)
                    .args(&args)
                    .env_remove("ETCD_ENDPOINTS")
                    .env_remove("MARGAYCTL_CONFIG")
                    .env_remove("KUBECONFIG")
                    .envs(datastore_env(&st)),
            );
        }
        Cmd::Supervise => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(supervisor::run(lab))?;
        }
        Cmd::PodServer {
            name,
            ports,
            echo_peer,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(probe::serve(name, ports, echo_peer))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn passthrough(cmd: &mut std::process::Command) -> anyhow::Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(2),
    ))
}

/// The namespace of a pod (NS/NAME), a node, or `infra`.
fn netns_of(st: &State, target: &str) -> anyhow::Result<String> {
    if target == "infra" {
        return Ok(st.infra.clone());
    }
    if let Some(i) = st.internet.as_ref().filter(|_| target == "internet") {
        return Ok(i.netns.clone());
    }
    if let Some(r) = st.router.as_ref().filter(|_| target == "tor") {
        return Ok(r.netns.clone());
    }
    if let Some(r) = st.reflectors.iter().find(|r| r.name == target) {
        return Ok(r.netns.clone());
    }
    if let Some(n) = st.node(target) {
        return Ok(n.netns.clone());
    }
    if target.contains('/') {
        return Ok(find_pod(st, target)?.netns.clone());
    }
    let nodes: Vec<&str> = st.nodes.iter().map(|n| n.name.as_str()).collect();
    anyhow::bail!(
        "{target:?} is neither a node ({}), a pod (NS/NAME), a reflector (rr-N), tor, internet nor infra",
        nodes.join(", ")
    )
}

fn address_of(st: &State, target: &str) -> anyhow::Result<String> {
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    if let Some(n) = st.node(target) {
        return Ok(n.ipv4.clone());
    }
    if let Some(i) = st.internet.as_ref().filter(|_| target == "internet") {
        return Ok(i.address.clone());
    }
    if let Some(r) = st.router.as_ref().filter(|_| target == "tor") {
        return Ok(r.ipv4.clone());
    }
    let pod = find_pod(st, target)?;
    probe::pod_ip(pod)
        .map(|i| i.to_string())
        .with_context(|| format!("pod {target} has no address"))
}

fn ns(lab: &LabDir, cmd: NsCmd) -> anyhow::Result<ExitCode> {
    let lock = lab.lock()?;
    let mut st = lab.load_existing(&lock)?;
    match cmd {
        NsCmd::Create { name, labels } => {
            let w = objects::create_namespace(&st, &name, labels_of(&labels)?)?;
            report(
                &format!("namespace {name} created"),
                confirm(lab, &st, &[w])?,
            );
        }
        NsCmd::Label { name, edits } => {
            let w = objects::label_namespace(&st, &name, &edits)?;
            report(
                &format!("namespace {name} labelled"),
                confirm(lab, &st, &[w])?,
            );
        }
        NsCmd::Delete { name } => {
            let bins = Bins::find()?;
            let ids: Vec<String> = st
                .pods
                .values()
                .filter(|p| p.namespace == name)
                .map(|p| p.id())
                .collect();
            let mut w = Vec::new();
            for id in &ids {
                w.extend(pods::delete(lab, &lock, &mut st, &bins, id)?);
            }
            w.extend(objects::delete_namespace(&st, &name)?);
            report(
                &format!("namespace {name} deleted with {} pods", ids.len()),
                confirm(lab, &st, &w)?,
            );
        }
        NsCmd::List => {
            for (n, labels) in objects::namespaces(&st)? {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{n}\t{}", l.join(","));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pod(lab: &LabDir, cmd: PodCmd) -> anyhow::Result<ExitCode> {
    let lock = lab.lock()?;
    let mut st = lab.load_existing(&lock)?;
    let bins = Bins::find()?;
    match cmd {
        PodCmd::Create {
            id,
            node,
            labels,
            ports,
        } => {
            let (namespace, name) = parse_pod_id(&id)?;
            let spec = PodSpec {
                namespace,
                name,
                node,
                labels: labels_of(&labels)?,
                ports,
            };
            let (p, w) = pods::create(lab, &lock, &mut st, &bins, &spec, true)?;
            report(
                &format!("pod {id} on {} at {}", p.node, p.ips.join(" ")),
                confirm(lab, &st, &[w])?,
            );
        }
        PodCmd::Label { id, edits } => {
            let mut p = find_pod(&st, &id)?.clone();
            pods::edit_labels(&mut p.labels, &edits)?;
            let w = objects::write_pod(&st, &p)?;
            st.pods.insert(id.clone(), p);
            lab.save(&lock, &st)?;
            report(&format!("pod {id} labelled"), confirm(lab, &st, &[w])?);
        }
        PodCmd::Delete { id } => {
            let w = pods::delete(lab, &lock, &mut st, &bins, &id)?;
            report(
                &format!("pod {id} deleted"),
                confirm(lab, &st, &Vec::from_iter(w))?,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy(lab: &LabDir, cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    let lock = lab.lock()?;
    let st = lab.load_existing(&lock)?;
    let (what, written) = match cmd {
        PolicyCmd::Apply { file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let p = objects::parse_policy(&text, &file)?;
            let w = objects::apply_policy(&st, p)?;
            (
                format!("NetworkPolicy {}/{} stored", w.namespace, w.name),
                w,
            )
        }
        PolicyCmd::Delete { id } => {
            let (ns, name) = parse_pod_id(&id)
                .map_err(|_| anyhow::anyhow!("{id:?}: use NAMESPACE/NAME of the NetworkPolicy"))?;
            let w = objects::delete_policy(&st, &ns, &name)?;
            (format!("NetworkPolicy {id} deleted"), w)
        }
    };
    let deleted = written.revision.is_none();
    match confirm(lab, &st, &[written])? {
        Confirmation::Agents => {
            if deleted {
                eprintln!("{what}; no agent enforces it any more");
            } else {
                eprintln!("{what}; every agent enforces it");
            }
            Ok(ExitCode::SUCCESS)
        }
        Confirmation::DatastoreOnly => {
            eprintln!(
                "{what} in the datastore, but the agents do not enforce NetworkPolicy (a margay-node without network policy); it takes effect once they do"
            );
            Ok(ExitCode::from(2))
        }
    }
}
