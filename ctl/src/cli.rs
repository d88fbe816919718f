//! The command line: every subcommand and flag (clap derive).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use margay_ctl::config::{DEFAULT_CONFIG_FILE, DatastoreSettings};
use margay_ctl::output::Format;
use margay_ctl::store::Store;

/// Manage Margay: pools, nodes, BGP peers, IPAM.
///
/// The datastore comes from --config FILE (default /etc/margay/margayctl.cfg if it exists) and
/// from flags or environment variables, which override the file: DATASTORE_TYPE (etcdv3 or
/// kubernetes), ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_USERNAME,
/// ETCD_PASSWORD, KUBECONFIG.
#[derive(Debug, Parser)]
#[command(name = "margayctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub datastore: DatastoreFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct DatastoreFlags {
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
pub enum Command {
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
pub struct FileArgs {
    /// Files, directories or `-`.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Namespace for namespaced resources without one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
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
pub enum IpamCommand {
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

    pub async fn store(&self) -> anyhow::Result<Store> {
        let (ds, kube) = self.settings()?.connect_with_kube().await?;
        let workloads =
            margay_datastore::Workloads::for_datastore(std::sync::Arc::clone(&ds), kube);
        Ok(Store::new(ds).with_workloads(workloads))
    }
}
