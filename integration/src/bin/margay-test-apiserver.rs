//! `margay-test-apiserver`: Margay's small Kubernetes API server for tests, on its own.
//!
//! ```text
//! margay-test-apiserver --listen 127.0.0.1:6443 [--token SECRET] [--kubeconfig FILE]
//!                       [--tls-cert CERT.pem --tls-key KEY.pem] [--access-log FILE]
//! ```
//!
//! It prints `listening on http://ADDR` once it serves, writes a kubeconfig for it when asked,
//! and runs until killed. `POST /margay-test/compact` throws away the watch history.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use margay_integration::apiserver::tls::TlsFiles;
use margay_integration::apiserver::{ApiServer, Config};

/// Margay's test Kubernetes API server (in memory; never for production).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer TOKEN`.
    #[arg(long, env = "MARGAY_TEST_APISERVER_TOKEN")]
    token: Option<String>,
    /// Write a kubeconfig pointing at the server to this file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve HTTPS with this certificate (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that signed the certificate, named in the kubeconfig (default: the certificate).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_seconds: u64,
    /// Append `PEER METHOD PATH?QUERY` for every request to this file.
    #[arg(long)]
    access_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let server = ApiServer::start(Config {
        listen: args.listen,
        token: args.token,
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
            cert,
            key,
            ca: args.tls_ca,
        }),
        bookmark_interval: std::time::Duration::from_secs(args.bookmark_seconds.max(1)),
        access_log: args.access_log,
        ..Config::default()
    })
    .await?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, server.kubeconfig())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
