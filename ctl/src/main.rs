//! `margayctl`: argument parsing and dispatch. Exit codes: 0 ok, 1 error, 2 usage.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Parser, Subcommand};
use margay_ctl::apply::{self, Outcome, Verb};
use margay_ctl::config::{DEFAULT_CONFIG_FILE, DatastoreSettings};
use margay_ctl::get::{self, GetArgs, GetOutput};
use margay_ctl::kinds::Kind;
use margay_ctl::output::Format;
use margay_ctl::store::Store;
use margay_ctl::{docs, ipam, node_status, version};

/// Manage Margay: pools, nodes, BGP peers, IPAM.
///
/// The datastore comes from --config FILE (default /etc/margay/margayctl.cfg if it exists) and
/// from flags or environment variables, which override the file: DATASTORE_TYPE (etcdv3 or
/// kubernetes), ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_USERNAME,
/// ETCD_PASSWORD, KUBECONFIG.
#[derive(Debug, Parser)]
#[command(name = "margayctl", version, about)]
struct Cli {
    #[command(flatten)]
    datastore: DatastoreFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DatastoreFlags {
    /// Config file (MargayAPIConfig / CalicoAPIConfig YAML, or just its spec's fields).
    #[arg(short = 'c', long, global = true, env = "MARGAYCTL_CONFIG")]
    config: Option<PathBuf>,
    /// etcdv3 or kubernetes.
    #[arg(long, global = true, env = "DATASTORE_TYPE")]
    datastore_type: Option<String>,
    /// Comma-separated etcd URLs.
    #[arg(long, global = true, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
    /// CA bundle for etcd's TLS.
    #[arg(long, global = true, env = "ETCD_CA_CERT_FILE")]
    etcd_ca_cert_file: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, global = true, env = "ETCD_CERT_FILE")]
    etcd_cert_file: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, global = true, env = "ETCD_KEY_FILE")]
    etcd_key_file: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, global = true, env = "ETCD_USERNAME")]
    etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, global = true, env = "ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// kubeconfig for the kubernetes datastore.
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print resources: ippool, node, bgppeer, bgpconfiguration, workloadendpoint (wep),
    /// networkpolicy, ipamblock, … (plural and short names work too).
    Get {
        /// The kind.
        kind: String,
        /// Names (all when none).
        names: Vec<String>,
        /// Output: wide, json, yaml or custom-columns=HEADER:.json.path,…
        #[arg(short = 'o', long, default_value = "")]
        output: String,
        /// Namespace of namespaced kinds.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only objects whose labels match this selector (e.g. "zone == 'a'").
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Create or change the resources of files (multi-document YAML or JSON, `-` for stdin).
    Apply(FileArgs),
    /// Create the resources of files; an existing one is an error.
    Create(FileArgs),
    /// Replace existing resources with those of files; a missing one is an error.
    Replace(FileArgs),
    /// Delete the resources of files, or KIND NAME...
    Delete {
        /// Files, directories or `-`.
        #[arg(short = 'f', long = "filename", conflicts_with = "kind")]
        files: Vec<String>,
        /// The kind (with names).
        #[arg(required_unless_present = "files", requires = "names")]
        kind: Option<String>,
        /// Names.
        names: Vec<String>,
        /// Namespace of namespaced kinds.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Node commands.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// IP address management.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// Print the client's version and the agents' versions.
    Version {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Only the client's version; do not read the datastore.
        #[arg(long)]
        client: bool,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct FileArgs {
    /// Files, directories or `-`.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Namespace for namespaced resources without one.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// The BGP sessions of a node (default: this one) or of all nodes.
    Status {
        /// The node.
        #[arg(conflicts_with = "all")]
        node: Option<String>,
        /// Every node.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// Pool usage; with --show-blocks per block; with --ip what holds an address.
    Show {
        /// Show every block.
        #[arg(long)]
        show_blocks: bool,
        /// Show one address.
        #[arg(long)]
        ip: Option<IpAddr>,
    },
    /// Look for leaked addresses and orphaned blocks.
    Check {
        /// Write the report (JSON) here, for `ipam release --from-report`.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Seconds between the two looks; only what both see is confirmed.
        #[arg(long, default_value_t = 5)]
        grace_seconds: u64,
    },
    /// Free addresses, or what a report of `ipam check` confirmed.
    Release {
        /// Addresses to free.
        #[arg(
            long,
            required_unless_present = "from_report",
            conflicts_with = "from_report"
        )]
        ip: Vec<IpAddr>,
        /// A report of `ipam check -o`.
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
    /// Change the IPAM configuration.
    Configure {
        /// Never borrow addresses from other nodes' blocks.
        #[arg(long = "strictaffinity")]
        strict_affinity: Option<bool>,
        /// The most blocks one node may claim (0: no limit).
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
    },
    /// Free the blocks of a node that is gone (blocks still in use are kept).
    ReleaseNode {
        /// The node.
        node: String,
    },
}

impl DatastoreFlags {
    fn settings(&self) -> anyhow::Result<DatastoreSettings> {
        let file = match &self.config {
            Some(p) => DatastoreSettings::from_file(p)?,
            None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => {
                DatastoreSettings::from_file(std::path::Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => DatastoreSettings::default(),
        };
        Ok(file.overridden_by(DatastoreSettings {
            datastore_type: self.datastore_type.clone(),
            etcd_endpoints: self.etcd_endpoints.clone(),
            etcd_ca_cert_file: self.etcd_ca_cert_file.clone(),
            etcd_cert_file: self.etcd_cert_file.clone(),
            etcd_key_file: self.etcd_key_file.clone(),
            etcd_username: self.etcd_username.clone(),
            etcd_password: self.etcd_password.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }))
    }

    async fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::new(self.settings()?.connect().await?))
    }
}

fn warn(lines: &[String]) {
    for w in lines {
        eprintln!("warning: {w}");
    }
}

fn read_all(files: &[String]) -> anyhow::Result<Vec<docs::Doc>> {
    let mut all = Vec::new();
    for f in files {
        all.extend(docs::read_path(f)?);
    }
    Ok(all)
}

fn finish(outcome: Outcome) -> anyhow::Result<()> {
    print!("{}", outcome.stdout);
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ds = &cli.datastore;
    match cli.command {
        Command::Get {
            kind,
            names,
            output,
            namespace,
            all_namespaces,
            selector,
        } => {
            let args = GetArgs {
                kind: Kind::parse(&kind)?,
                names,
                namespace,
                all_namespaces,
                selector,
                output: GetOutput::parse(&output)?,
            };
            let (text, missing) = get::get(&ds.store().await?, &args).await?;
            print!("{text}");
            if !missing.is_empty() {
                let msg: Vec<String> = missing.iter().map(ToString::to_string).collect();
                anyhow::bail!("{}", msg.join("\n"));
            }
        }
        Command::Apply(f) => file_verb(ds, Verb::Apply, f).await?,
        Command::Create(f) => file_verb(ds, Verb::Create, f).await?,
        Command::Replace(f) => file_verb(ds, Verb::Replace, f).await?,
        Command::Delete {
            files,
            kind,
            names,
            namespace,
        } => {
            if let Some(kind) = kind {
                let kind = Kind::parse(&kind)?;
                let store = ds.store().await?;
                finish(apply::delete_names(&store, kind, &names, &namespace).await?)?;
            } else {
                file_verb(ds, Verb::Delete, FileArgs { files, namespace }).await?;
            }
        }
        Command::Node {
            command: NodeCommand::Status { node, all },
        } => {
            let node = if all {
                None
            } else {
                Some(
                    node.or_else(node_status::local_node)
                        .context("cannot tell which node this is: give a node name or --all")?,
                )
            };
            let store = ds.store().await?;
            let now = margay_ctl::node_status::now();
            let report = node_status::node_status(&store, node.as_deref(), now).await?;
            print!("{}", report.stdout);
            warn(&report.warnings);
        }
        Command::Ipam { command } => {
            let store = ds.store().await?;
            let text = match command {
                IpamCommand::Show { show_blocks, ip } => {
                    ipam::show(&store, show_blocks, ip).await?
                }
                IpamCommand::Check {
                    output,
                    grace_seconds,
                } => {
                    let (report, text) =
                        ipam::check(&store, Duration::from_secs(grace_seconds)).await?;
                    if let Some(path) = output {
                        let json = serde_json::to_string_pretty(&report)? + "\n";
                        std::fs::write(&path, json)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    text
                }
                IpamCommand::Release { ip, from_report } => match from_report {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        let report: ipam::Report =
                            serde_json::from_str(&text).with_context(|| {
                                format!(
                                    "{} is not a report of `margayctl ipam check -o`",
                                    path.display()
                                )
                            })?;
                        ipam::release_report(&store, &report).await?
                    }
                    None => ipam::release_ips(&store, &ip).await?,
                },
                IpamCommand::Configure {
                    strict_affinity,
                    max_blocks_per_host,
                } => {
                    if strict_affinity.is_none() && max_blocks_per_host.is_none() {
                        anyhow::bail!(
                            "nothing to configure: give --strictaffinity=true|false or --max-blocks-per-host N"
                        );
                    }
                    ipam::configure(&store, strict_affinity, max_blocks_per_host).await?
                }
                IpamCommand::ReleaseNode { node } => ipam::release_node(&store, &node).await?,
            };
            print!("{text}");
        }
        Command::Version { output, client } => {
            let mut info = version::VersionInfo::client();
            let mut warnings = Vec::new();
            if !client {
                match ds.store().await {
                    Ok(store) => match info.clone().with_agents(&store).await {
                        Ok(i) => info = i,
                        Err(e) => warnings.push(format!("cannot read the agents' versions: {e}")),
                    },
                    Err(e) => warnings.push(format!("cannot read the agents' versions: {e:#}")),
                }
            }
            print!("{}", info.render(output)?);
            warnings.extend(info.mismatches());
            warn(&warnings);
        }
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "margayctl", &mut out);
            out.flush()?;
        }
    }
    Ok(())
}

async fn file_verb(ds: &DatastoreFlags, verb: Verb, f: FileArgs) -> anyhow::Result<()> {
    let docs = read_all(&f.files)?;
    let store = ds.store().await?;
    finish(apply::run(&store, verb, &docs, &f.namespace).await?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line per problem: the chain of causes on the same line.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
