//! The supervisor: a detached process (a new session, re-executed `margay-lab supervise`) that
//! owns the lab's daemons — etcd, the agents and the pod servers — so that they outlive the
//! command that started them and are stopped together.
//!
//! Commands talk to it over `$MARGAY_LAB_DIR/supervisor.sock`, one JSON request and one JSON
//! answer per connection. It starts a program (inside a namespace, with `ip netns exec`, which
//! execs: the PID answered is the program's), stops one by name, or shuts down, stopping every
//! child by PID. The caller records each PID with its start time in the lab's state, so that
//! `down` can stop them by PID even after the supervisor was killed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::state::{LabDir, Proc};

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a command waits for the supervisor's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Is it there?
    Ping,
    /// Start a program.
    Start(StartSpec),
    /// Stop the child called this.
    Stop {
        /// The child's name.
        name: String,
    },
    /// Stop every child and exit.
    Shutdown,
}

/// What to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartSpec {
    /// A unique name (`etcd`, `agent-node-1`, `pod-default-a`).
    pub name: String,
    /// The namespace to run in, if any.
    pub netns: Option<String>,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
}

/// The supervisor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// Started: the process's PID and start time.
    Started(Proc),
    /// Failed, with why.
    Error(String),
}

/// Sends one request to the supervisor of `lab` and returns its answer.
pub fn call(lab: &LabDir, req: &Request) -> anyhow::Result<Reply> {
    call_at(&lab.supervisor_socket(), req)
}

fn call_at(sock: &Path, req: &Request) -> anyhow::Result<Reply> {
    let mut s = UnixStream::connect(sock).with_context(|| {
        format!(
            "cannot reach the lab's supervisor at {}; is the lab up (`margay-lab status`)?",
            sock.display()
        )
    })?;
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    s.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .context("no answer from the lab's supervisor")?;
    serde_json::from_str(&answer)
        .with_context(|| format!("the supervisor answered {answer:?}, not a reply"))
}

/// Starts a child through the supervisor; returns its PID and start time.
pub fn start(lab: &LabDir, spec: StartSpec) -> anyhow::Result<Proc> {
    let name = spec.name.clone();
    match call(lab, &Request::Start(spec))? {
        Reply::Started(p) => Ok(p),
        Reply::Error(e) => anyhow::bail!("the supervisor cannot start {name}: {e}"),
        Reply::Ok => anyhow::bail!("the supervisor did not say how {name} started"),
    }
}

/// Stops a child through the supervisor (nothing happens if it is not running).
pub fn stop(lab: &LabDir, name: &str) -> anyhow::Result<()> {
    match call(
        lab,
        &Request::Stop {
            name: name.to_owned(),
        },
    )? {
        Reply::Error(e) => anyhow::bail!("the supervisor cannot stop {name}: {e}"),
        _ => Ok(()),
    }
}

/// Starts the supervisor for `lab` in a new session (`setsid`), with its log in the lab
/// directory, and waits until it answers. Returns its PID and start time.
pub fn launch(lab: &LabDir) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("cannot find the margay-lab binary")?;
    let log_path = lab.join("supervisor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let _ = std::fs::remove_file(lab.supervisor_socket());
    // `setsid` execs the program (it is not a process-group leader), so the PID is ours to keep.
    let child = std::process::Command::new("setsid")
        .arg(&exe)
        .arg("supervise")
        .env("MARGAY_LAB_DIR", lab.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the supervisor (setsid margay-lab supervise)")?;
    let pid = child.id();
    let proc = Proc::of(pid).context("the supervisor exited at once; see supervisor.log")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if matches!(call(lab, &Request::Ping), Ok(Reply::Ok)) {
            return Ok(proc);
        }
        if !proc.alive() || std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the supervisor did not answer within 10 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Children = Arc<Mutex<BTreeMap<String, (tokio::process::Child, Proc)>>>;

/// Runs the supervisor until a shutdown request or SIGTERM/SIGINT; then stops every child.
pub async fn run(lab: LabDir) -> anyhow::Result<()> {
    let sock = lab.supervisor_socket();
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("cannot listen on {}", sock.display()))?;
    info!(socket = %sock.display(), pid = std::process::id(), "supervisor listening");
    let children: Children = Arc::default();
    let (quit_tx, mut quit_rx) = tokio::sync::watch::channel(false);

    // Reap children that exit on their own, and say so in the log.
    let reaper = {
        let children = Arc::clone(&children);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut c = children.lock().await;
                let mut gone = Vec::new();
                for (name, (child, _)) in c.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        warn!(child = %name, %status, "child exited");
                        gone.push(name.clone());
                    }
                }
                for name in gone {
                    c.remove(&name);
                }
            }
        })
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = quit_rx.changed() => break,
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let children = Arc::clone(&children);
                let quit = quit_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, children, quit).await {
                        warn!(error = %e, "request failed");
                    }
                });
            }
        }
    }
    reaper.abort();
    info!("shutting down: stopping every child");
    let all: Vec<String> = children.lock().await.keys().cloned().collect();
    futures::future::join_all(all.iter().map(|n| stop_child(&children, n))).await;
    let _ = std::fs::remove_file(&sock);
    info!("supervisor stopped");
    Ok(())
}

async fn serve(
    stream: tokio::net::UnixStream,
    children: Children,
    quit: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(r).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply::Error(format!("not a request: {e}")),
        Ok(Request::Ping) => Reply::Ok,
        Ok(Request::Start(spec)) => match spawn(&spec) {
            Ok((child, proc)) => {
                info!(child = %spec.name, pid = proc.pid, "started");
                let mut c = children.lock().await;
                if let Some((mut old, _)) = c.insert(spec.name.clone(), (child, proc.clone())) {
                    warn!(child = %spec.name, "replaced a running child of the same name");
                    let _ = old.start_kill();
                }
                Reply::Started(proc)
            }
            Err(e) => Reply::Error(format!("{e:#}")),
        },
        Ok(Request::Stop { name }) => {
            stop_child(&children, &name).await;
            Reply::Ok
        }
        Ok(Request::Shutdown) => {
            let _ = quit.send(true);
            Reply::Ok
        }
    };
    let mut out = serde_json::to_string(&reply)?;
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    Ok(())
}

fn spawn(spec: &StartSpec) -> anyhow::Result<(tokio::process::Child, Proc)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&spec.program);
            c
        }
        None => tokio::process::Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", spec.program.display()))?;
    let pid = child.id().context("the child exited at once")?;
    let proc = Proc::of(pid).with_context(|| {
        format!(
            "{} exited at once; see {}",
            spec.program.display(),
            spec.log.display()
        )
    })?;
    Ok((child, proc))
}

async fn stop_child(children: &Children, name: &str) {
    let Some((mut child, proc)) = children.lock().await.remove(name) else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(proc.pid).unwrap_or(i32::MAX)),
        nix::sys::signal::Signal::SIGTERM,
    );
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => info!(child = %name, "stopped"),
        Err(_) => {
            warn!(child = %name, "did not stop on SIGTERM; killing");
            let _ = child.kill().await;
        }
    }
}
