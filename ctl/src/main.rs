//! `margayctl`: argument parsing and dispatch.

use clap::{Parser, Subcommand};
use margay_ctl::output::{self, Format, Table};
use serde::Serialize;

/// Manage Margay: pools, nodes, BGP peers, IPAM.
#[derive(Debug, Parser)]
#[command(name = "margayctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the client's version.
    Version {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    client_version: &'static str,
    git_commit: &'static str,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version { output } => {
            let info = VersionInfo {
                client_version: env!("CARGO_PKG_VERSION"),
                git_commit: option_env!("MARGAY_GIT_COMMIT").unwrap_or("unknown"),
            };
            let text = match output {
                Format::Table | Format::Wide => {
                    let mut t = Table::new(["client version", "git commit"]);
                    t.row([info.client_version, info.git_commit]);
                    t.render()
                }
                f => output::serialise(&info, f)?,
            };
            print!("{text}");
        }
    }
    Ok(())
}
