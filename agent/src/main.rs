//! `margay-node`: start-up, configuration and role dispatch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use margay_agent::config::{AgentConfig, Role};

/// Margay's node agent: pod routes, network policy and the BGP speaker on one node.
#[derive(Debug, Parser)]
#[command(name = "margay-node", version, about)]
struct Cli {
    /// Configuration file (TOML). Environment variables (NODENAME, DATASTORE_TYPE,
    /// ETCD_ENDPOINTS, …) override it, and flags override both.
    #[arg(long, short = 'c', env = "MARGAY_CONFIG")]
    config: Option<PathBuf>,
    /// Run as a full node, or only as a BGP route reflector.
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        Role::Node | Role::RouteReflector => anyhow::bail!(
            "margay-node: role {:?} cannot run yet in this build; only --check-config is available",
            config.role
        ),
    }
}
