//! `margay-node`: start-up, configuration and role dispatch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use margay_agent::config::{AgentConfig, Role};

/// Margay's node agent: pod routes, network policy and the BGP speaker on one node.
#[derive(Debug, Parser)]
#[command(name = "margay-node", version, about)]
struct Cli {
    /// Configuration file (TOML). For the node role: the agent's settings, which environment
    /// variables (NODENAME, DATASTORE_TYPE, ETCD_ENDPOINTS, …) and flags override. With
    /// `--role route-reflector`: the BGP speaker's own file (router id, AS, peers; see the
    /// margay-bgp `config` docs), run standalone with no datastore and no FIB. Without a file,
    /// `--role route-reflector` is a dedicated reflector peered from the datastore.
    #[arg(long, short = 'c', env = "MARGAY_CONFIG")]
    config: Option<PathBuf>,
    /// Run as a full node, only as a BGP route reflector, or as the cluster's controllers.
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// This node's name (default: $NODENAME, then the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Check the configuration, print the effective settings as JSON and exit.
    #[arg(long)]
    check_config: bool,
}

fn load(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut config = match &cli.config {
        Some(path) => AgentConfig::from_file(path)?,
        None => AgentConfig::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(role) = cli.role {
        config.role = role;
    }
    if let Some(name) = &cli.node_name {
        config.node_name = Some(name.clone());
    }
    config.validate()?;
    Ok(config)
}

/// jemalloc rather than glibc's malloc: the agent's memory comes in bursts (a peer's full table,
/// a policy recompile) on tokio's worker and blocking threads, and glibc's per-thread arenas kept
/// those bursts as resident memory long after they were freed (two thirds of the RSS measured in
/// `integration/bench/agent.rs`). jemalloc returns freed pages to the kernel after a decay time;
/// its defaults are set at build time in `.cargo/config.toml` (`JEMALLOC_SYS_WITH_MALLOC_CONF`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.role == Some(Role::RouteReflector)
        && let Some(path) = &cli.config
    {
        return run_standalone_reflector(path, cli.check_config);
    }
    let config = load(&cli).context("margay-node: invalid configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        .init();
    if cli.check_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let node = config.node_name_or_hostname()?;
    tracing::info!(node = %node, role = ?config.role, "margay-node starting");
    match config.role {
        Role::Node => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(margay_agent::run::run_node(config, shutdown_signal()))
        }
        Role::Controllers => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(margay_agent::controllers::run_controllers(
                config,
                shutdown_signal(),
            ))
        }
        Role::RouteReflector => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(margay_agent::reflector::run_reflector(
                config,
                shutdown_signal(),
            ))
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `--role route-reflector --config FILE`: only the BGP speaker, from its own config file.
fn run_standalone_reflector(path: &std::path::Path, check_only: bool) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    if check_only {
        let config = margay_bgp::config::Config::load(path)
            .with_context(|| format!("margay-node: invalid speaker config {}", path.display()))?;
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    margay_bgp::standalone::run(path)
        .with_context(|| format!("margay-node: route reflector from {}", path.display()))
}
