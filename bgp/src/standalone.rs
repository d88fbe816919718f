//! Standalone speaker: `margay-node --role route-reflector --config FILE` runs only
//! this, from a [`crate::config`] file, with no FIB.

use std::path::Path;

use tracing::{error, info};

use crate::config::{Config, ConfigError};
use crate::driver::{Error as DriverError, Speaker};

/// Why the standalone speaker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("bad configuration")]
    Config(#[source] ConfigError),
    /// The speaker could not start.
    #[error("the speaker failed")]
    Speaker(#[source] DriverError),
    /// The runtime could not be built or signals could not be watched.
    #[error("runtime")]
    Runtime(#[source] std::io::Error),
}

/// Loads `config_path`, runs the speaker until SIGINT or SIGTERM, then closes every
/// session with a Cease. Builds its own tokio runtime; call it from a plain `main`.
pub fn run(config_path: &Path) -> Result<(), Error> {
    let config = Config::load(config_path).map_err(Error::Config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve(config))
}

/// Runs the speaker of `config` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), Error> {
    let speaker = start(&config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Runtime)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
    }
    speaker.shutdown().await;
    Ok(())
}

/// Starts the speaker of `config` with its peers and originated prefixes.
pub async fn start(config: &Config) -> Result<Speaker, Error> {
    let speaker = Speaker::start(config.speaker())
        .await
        .map_err(Error::Speaker)?;
    for p in config.peer_configs() {
        let addr = p.addr;
        if let Err(e) = speaker.add_peer(p).await {
            error!(%addr, error = %e, "cannot add peer");
            return Err(Error::Speaker(e));
        }
    }
    for o in &config.originate {
        speaker
            .originate(o.prefix, o.next_hop)
            .map_err(Error::Speaker)?;
    }
    info!(router_id = ?config.router_id, asn = config.asn, peers = config.peers.len(), "speaker running");
    Ok(speaker)
}
