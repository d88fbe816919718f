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
/// session with a Cease; on SIGUSR2 it stops for a graceful restart instead (closes
/// without a NOTIFICATION, so that peers keep its routes: start it again with
/// `graceful_restart.restarting = true`). Builds its own tokio runtime; call it from
/// a plain `main`.
pub fn run(config_path: &Path) -> Result<(), Error> {
    let config = Config::load(config_path).map_err(Error::Config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(serve(config))
}

/// Runs the speaker of `config` until SIGINT or SIGTERM (Cease) or SIGUSR2 (stop for
/// a graceful restart).
pub async fn serve(config: Config) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let speaker = start(&config).await?;
    let mut term = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(Error::Runtime)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
        _ = usr2.recv() => {
            info!("SIGUSR2: stopping for a graceful restart");
            speaker.stop_for_restart().await;
            return Ok(());
        }
    }
    speaker.shutdown().await;
    Ok(())
}

/// Starts the speaker of `config` with its peers and originated prefixes.
pub async fn start(config: &Config) -> Result<Speaker, Error> {
    let speaker = Speaker::start_with(config.speaker(), config.graceful_restart())
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
    // Every route of ours is in: End-of-RIB may go out (RFC 4724 §4.1).
    speaker.initial_routes_done().map_err(Error::Speaker)?;
    info!(router_id = ?config.router_id, asn = config.asn, peers = config.peers.len(), "speaker running");
    Ok(speaker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_config_file_starts_a_speaker_with_its_peers_and_routes() {
        let dir =
            std::env::temp_dir().join(format!("margay-bgp-standalone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rr.toml");
        std::fs::write(
            &path,
            r#"
router_id = "198.18.0.1"
asn = 64512
listen_address = "127.0.0.41"
listen_port = 0

[[peers]]
address = "127.0.0.42"
asn = 64512
passive = true
rr_client = true

[[originate]]
prefix = "100.64.0.0/26"
"#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let sp = start(&config).await.unwrap();
        let peers = sp.peers().await.unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].addr,
            "127.0.0.42".parse::<std::net::IpAddr>().unwrap()
        );
        // Passive: it waits (Idle until its task has started, then Active).
        assert!(matches!(
            peers[0].state,
            crate::fsm::State::Idle | crate::fsm::State::Active
        ));
        sp.shutdown().await;
    }

    #[test]
    fn a_bad_file_is_reported_with_its_path() {
        let e = run(Path::new("/nonexistent/margay.toml")).unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(chain.contains("/nonexistent/margay.toml"), "{chain}");
    }
}
