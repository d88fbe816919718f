//! `margayctl`: argument parsing and dispatch. Exit codes: 0 ok, 1 error, 2 usage.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command, DatastoreFlags, FileArgs, IpamCommand, NodeCommand};
use margay_ctl::apply::{self, Outcome, Verb};
use margay_ctl::get::{self, GetArgs, GetOutput};
use margay_ctl::kinds::Kind;
use margay_ctl::{docs, ipam, node_status, version};

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
