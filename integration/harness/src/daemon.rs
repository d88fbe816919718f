//! The [`Daemon`] guard: a background process started by a test, stopped by PID on drop.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd::describe;
use crate::error::{Error, Result};
use crate::netns::Netns;

/// How many log lines readiness errors quote.
const LOG_TAIL_LINES: usize = 40;
/// How often readiness conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// A condition that says a daemon is ready. Network conditions are checked from inside the
/// daemon's namespace when it runs in one.
pub enum Ready {
    /// A TCP connection to this address succeeds.
    TcpConnect(SocketAddr),
    /// Some socket listens on this TCP port (any address), seen in `/proc/thread-self/net/tcp*`;
    /// unlike [`Ready::TcpConnect`] this does not open a connection to the daemon.
    TcpListen(u16),
    /// This file (or socket) exists.
    File(PathBuf),
    /// The daemon's output (stdout and stderr) contains this text.
    LogContains(String),
    /// A custom check, polled until it returns `true`.
    Probe(String, Box<dyn FnMut() -> bool + Send>),
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ready::TcpConnect(a) => write!(f, "a TCP connection to {a}"),
            Ready::TcpListen(p) => write!(f, "a listening socket on TCP port {p}"),
            Ready::File(p) => write!(f, "file {}", p.display()),
            Ready::LogContains(s) => write!(f, "{s:?} in its output"),
            Ready::Probe(what, _) => write!(f, "{what}"),
        }
    }
}

impl Ready {
    fn check(&mut self, log: &Path) -> bool {
        match self {
            Ready::TcpConnect(a) => {
                TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok()
            }
            Ready::TcpListen(port) => is_listening(*port),
            Ready::File(p) => p.exists(),
            Ready::LogContains(s) => std::fs::read_to_string(log)
                .map(|l| l.contains(s.as_str()))
                .unwrap_or(false),
            Ready::Probe(_, f) => f(),
        }
    }
}

/// Whether a TCP socket of the calling thread's namespace listens on `port`.
fn is_listening(port: u16) -> bool {
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .any(|f| {
            std::fs::read_to_string(f)
                .map(|t| proc_net_tcp_listens(&t, port))
                .unwrap_or(false)
        })
}

/// Parses `/proc/net/tcp` text: is there a socket in state LISTEN (0A) on local `port`?
fn proc_net_tcp_listens(text: &str, port: u16) -> bool {
    let want = format!("{port:04X}");
    text.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        state == "0A" && local.rsplit(':').next() == Some(want.as_str())
    })
}

/// How to start a [`Daemon`]; made by [`Daemon::builder`].
#[derive(Debug)]
pub struct DaemonBuilder {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    netns: Option<Netns>,
    log: Option<PathBuf>,
    ready: Vec<Ready>,
    timeout: Duration,
    grace: Duration,
}

impl DaemonBuilder {
    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the daemon inside `ns` (`ip netns exec`); without this it runs on the host, which
    /// is only for daemons that use nothing but loopback.
    pub fn netns(mut self, ns: &Netns) -> Self {
        self.netns = Some(ns.clone());
        self
    }

    /// Writes stdout and stderr to this file (truncated). By default they go to a file in a
    /// temporary directory that lives as long as the [`Daemon`].
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Adds a readiness condition; [`DaemonBuilder::spawn`] returns once all of them hold.
    pub fn ready(mut self, r: Ready) -> Self {
        self.ready.push(r);
        self
    }

    /// How long to wait for readiness (default 20 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long to wait after SIGTERM before SIGKILL when stopping (default 5 s).
    pub fn stop_grace(mut self, t: Duration) -> Self {
        self.grace = t;
        self
    }

    /// Starts the daemon and waits until it is ready. If it exits or is not ready in time, it is
    /// stopped and the error quotes the end of its log.
    pub fn spawn(self) -> Result<Daemon> {
        crate::leftovers::sweep_once();
        let (log_path, log_dir) = match self.log {
            Some(p) => (p, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("mgyt-log-")
                    .tempdir()
                    .map_err(|e| Error::io("cannot create a log directory", e))?;
                (dir.path().join(format!("{}.log", self.name)), Some(dir))
            }
        };
        let log = File::create(&log_path)
            .map_err(|e| Error::io(format!("cannot create {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("cannot duplicate the log file", e))?;
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(&self.program),
            None => Command::new(&self.program),
        };
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(daemon = %self.name, pid, %command, "started");
        // Host daemons outlive a test process killed without unwinding: leave a record for the
        // next process's sweep (namespaced ones are stopped by the namespace sweep).
        let record = if self.netns.is_none() {
            crate::leftovers::record(pid)
        } else {
            None
        };
        let mut d = Daemon {
            name: self.name,
            pid,
            child,
            netns: self.netns,
            log_path,
            _log_dir: log_dir,
            grace: self.grace,
            exited: None,
            record,
        };
        d.wait_ready(self.ready, self.timeout)?;
        Ok(d)
    }
}

/// A process started by a test, stopped by PID (SIGTERM, then SIGKILL after a grace period)
/// when dropped. Its stdout and stderr go to a log file, quoted in readiness errors and
/// available through [`Daemon::log`] for failure messages.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    pid: u32,
    child: Child,
    netns: Option<Netns>,
    log_path: PathBuf,
    _log_dir: Option<tempfile::TempDir>,
    grace: Duration,
    exited: Option<ExitStatus>,
    record: Option<PathBuf>,
}

impl Daemon {
    /// Starts describing a daemon called `name` (used in logs and errors) running `program`.
    pub fn builder(name: &str, program: impl AsRef<OsStr>) -> DaemonBuilder {
        DaemonBuilder {
            name: name.to_owned(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            log: None,
            ready: Vec::new(),
            timeout: Duration::from_secs(20),
            grace: Duration::from_secs(5),
        }
    }

    /// The daemon's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon's PID (with `ip netns exec`, the program's own PID: ip execs it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The namespace it runs in, if any.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its whole output so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits until every condition in `ready` holds, for at most `timeout`. On failure the
    /// daemon is stopped and the error carries the end of its log.
    pub fn wait_ready(&mut self, ready: Vec<Ready>, timeout: Duration) -> Result<()> {
        if ready.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let log = self.log_path.clone();
        let outcome = match self.netns.clone() {
            Some(ns) => ns.run(|| poll_ready(&mut self.child, ready, &log, timeout))?,
            None => poll_ready(&mut self.child, ready, &log, timeout),
        };
        let result = match outcome {
            Poll::Ready => return Ok(()),
            Poll::Exited(status) => {
                self.exited = Some(status);
                Err(Error::Exited {
                    name: self.name.clone(),
                    pid: self.pid,
                    status,
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                })
            }
            Poll::TimedOut(pending) => Err(Error::NotReady {
                name: self.name.clone(),
                pid: self.pid,
                waited: start.elapsed(),
                reason: format!("still waiting for {pending}"),
                log: self.log_path.clone(),
                log_tail: self.log_tail(LOG_TAIL_LINES),
            }),
        };
        let _ = self.stop();
        result
    }

    /// Stops the daemon by PID: SIGTERM, then SIGKILL if it is still running after the grace
    /// period. Returns its exit status. Idempotent.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let st = self.stop_by_pid()?;
        if let Some(record) = self.record.take() {
            crate::leftovers::forget(&record);
        }
        Ok(st)
    }

    fn stop_by_pid(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.try_exit_status() {
            return Ok(st);
        }
        let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        let signal_err = |source| Error::Signal {
            name: self.name.clone(),
            pid: self.pid,
            source,
        };
        kill(pid, Signal::SIGTERM).map_err(signal_err)?;
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_exit_status() {
                tracing::debug!(daemon = %self.name, pid = self.pid, status = %st, "stopped");
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(daemon = %self.name, pid = self.pid, "no exit after SIGTERM; sending SIGKILL");
        if let Some(st) = self.try_exit_status() {
            return Ok(st);
        }
        kill(pid, Signal::SIGKILL).map_err(|source| Error::Signal {
            name: self.name.clone(),
            pid: self.pid,
            source,
        })?;
        let st = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("cannot reap {} (pid {})", self.name, self.pid), e))?;
        self.exited = Some(st);
        Ok(st)
    }

    /// Sends `sig` to the daemon (e.g. SIGHUP to reload), by PID.
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.try_exit_status().is_some() {
            return Err(Error::invalid(
                "signal",
                format!("{} (pid {}) has exited", self.name, self.pid),
            ));
        }
        kill(
            Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX)),
            sig,
        )
        .map_err(|source| Error::Signal {
            name: self.name.clone(),
            pid: self.pid,
            source,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(daemon = %self.name, pid = self.pid, error = %e, "cannot stop daemon");
        }
    }
}

enum Poll {
    Ready,
    Exited(ExitStatus),
    TimedOut(String),
}

fn poll_ready(child: &mut Child, mut ready: Vec<Ready>, log: &Path, timeout: Duration) -> Poll {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Poll::Exited(st);
        }
        ready.retain_mut(|r| !r.check(log));
        if ready.is_empty() {
            return Poll::Ready;
        }
        if Instant::now() >= deadline {
            let pending: Vec<String> = ready.iter().map(|r| format!("{r:?}")).collect();
            return Poll::TimedOut(pending.join(", "));
        }
        std::thread::sleep(POLL);
    }
}

/// The last `lines` lines of a file (reading at most its last 64 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if tail.is_empty() {
                "(empty)".to_owned()
            } else {
                tail.join("\n")
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0112A8C6:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0112A8C6:D2A4 0212A8C6:00B3 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_are_found_by_port() {
        assert!(proc_net_tcp_listens(PROC_NET_TCP, 179));
        assert!(proc_net_tcp_listens(PROC_NET_TCP, 50051));
        assert!(!proc_net_tcp_listens(PROC_NET_TCP, 53924));
        assert!(!proc_net_tcp_listens(PROC_NET_TCP, 2379));
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), "c\nd");
        assert_eq!(tail(&p, 10), "a\nb\nc\nd");
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail(&p, 2), "(empty)");
    }

    #[test]
    fn a_host_daemon_becomes_ready_on_a_log_line_and_stops_by_pid() {
        let mut d = Daemon::builder("sleeper", "sh")
            .args(["-c", "echo hello-ready; exec sleep 30"])
            .ready(Ready::LogContains("hello-ready".into()))
            .timeout(Duration::from_secs(10))
            .spawn()
            .unwrap();
        assert!(d.is_running());
        assert!(d.log().contains("hello-ready"));
        let st = d.stop().unwrap();
        assert!(!st.success());
        assert!(!d.is_running());
    }

    #[test]
    fn a_daemon_that_exits_early_reports_its_log() {
        let err = Daemon::builder("quitter", "sh")
            .args(["-c", "echo 'cannot bind: address in use' >&2; exit 7"])
            .ready(Ready::LogContains("never".into()))
            .timeout(Duration::from_secs(10))
            .spawn()
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Exited { .. }), "{msg}");
        assert!(msg.contains("address in use"), "{msg}");
        assert!(msg.contains("exit status: 7"), "{msg}");
    }
}
