//! The [`Netns`] guard: a uniquely named network namespace that is deleted when dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd::{self, Output};
use crate::error::{Error, Result};

/// Every namespace the harness creates is named `mgyt-<pid>-<counter>[-<tag>]`.
pub const NETNS_PREFIX: &str = "mgyt-";

/// How long processes left in a namespace get between SIGTERM and SIGKILL when it is dropped.
const LEFTOVER_GRACE: Duration = Duration::from_secs(3);

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Fails with [`Error::NotRoot`] unless the process runs as root.
pub fn require_root() -> Result<()> {
    let uid = nix::unistd::Uid::effective();
    if uid.is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot { uid: uid.as_raw() })
    }
}

/// A network namespace made for one test, deleted when the last clone of the guard is dropped.
///
/// The guard is cheap to clone (it is reference-counted): [`crate::Daemon`]s keep a clone of the
/// namespace they run in, so the namespace outlives them whatever order a test drops things in.
/// Dropping the last clone stops, by PID, any process still inside (SIGTERM, then SIGKILL), then
/// runs `ip netns del`. Drops run during unwinding, so a panicking test leaves nothing behind.
#[derive(Debug, Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// Whether dropping the last guard deletes the namespace; false for [`Netns::persistent`]
    /// and [`Netns::adopt`], whose namespaces outlive the process (a lab's).
    owned: bool,
}

impl Netns {
    /// Creates a namespace named `mgyt-<pid>-<n>` with its loopback up.
    pub fn new() -> Result<Netns> {
        Self::create(None)
    }

    /// Creates a namespace named `mgyt-<pid>-<n>-<tag>`; `tag` (up to 12 of `[a-z0-9-]`) shows
    /// which test or role a namespace belongs to in `ip netns list`.
    pub fn with_tag(tag: &str) -> Result<Netns> {
        Self::create(Some(tag))
    }

    fn create(tag: Option<&str>) -> Result<Netns> {
        require_root()?;
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 12
                && tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(Error::invalid(
                    "namespace tag",
                    format!("{tag:?}: use 1 to 12 of [a-z0-9-]"),
                ));
            }
        }
        // Before our first namespace, one named after our own PID can only be a leftover of an
        // earlier process that had the same PID; it would make `ip netns add` fail.
        SWEEP.call_once(|| {
            let _ = sweep(true);
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("{NETNS_PREFIX}{}-{n}", std::process::id());
        if let Some(tag) = tag {
            name.push('-');
            name.push_str(tag);
        }
        cmd::run(&["ip", "netns", "add", &name])?;
        // From here on the guard owns the namespace: any error below deletes it.
        let ns = Netns {
            inner: Arc::new(Inner { name, owned: true }),
        };
        ns.link_up("lo")?;
        tracing::debug!(netns = %ns.name(), "created network namespace");
        Ok(ns)
    }

    /// Creates a namespace called exactly `name` (loopback up) that outlives this guard and
    /// this process: for a lab whose namespaces live until its `down`, which deletes them with
    /// [`delete`]. `name` is 1 to 64 of `[a-z0-9.-]`; pick a prefix other tools recognise (the
    /// lab's `mgyl-`). If setting up the loopback fails, the namespace is deleted again.
    pub fn persistent(name: &str) -> Result<Netns> {
        require_root()?;
        check_name(name)?;
        cmd::run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                owned: false,
            }),
        };
        if let Err(e) = ns.link_up("lo") {
            delete(name);
            return Err(e);
        }
        tracing::debug!(netns = %name, "created persistent network namespace");
        Ok(ns)
    }

    /// A guard for the existing namespace `name` that never deletes it (e.g. a lab's node,
    /// found again by a later command). Fails if no such namespace exists.
    pub fn adopt(name: &str) -> Result<Netns> {
        check_name(name)?;
        let path = Path::new("/run/netns").join(name);
        if !path.exists() {
            return Err(Error::invalid(
                "namespace",
                format!("{name:?} does not exist (no {})", path.display()),
            ));
        }
        Ok(Netns {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                owned: false,
            }),
        })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name())
    }

    /// Runs `f` on a new thread that has entered this namespace (`setns`) and returns its result.
    ///
    /// Sockets and netlink handles opened by `f` belong to the namespace. The calling thread is not
    /// affected. A panic in `f` is propagated to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let name = self.name();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{name}"))
                .spawn_scoped(s, move || -> Result<T> {
                    enter(&path, name)?;
                    Ok(f())
                })
                .map_err(|e| Error::Thread {
                    ns: name.to_owned(),
                    reason: e.to_string(),
                })?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a background thread that has entered this namespace, e.g. a speaker under
    /// test that runs while the test thread queries its peers. The thread does not keep the guard
    /// alive: finish it (join the handle) before the namespace is dropped.
    pub fn spawn<F, T>(&self, f: F) -> Result<std::thread::JoinHandle<Result<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        let name = self.name().to_owned();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || -> Result<T> {
                enter(&path, &name)?;
                Ok(f())
            })
            .map_err(|e| Error::Thread {
                ns: self.name().to_owned(),
                reason: e.to_string(),
            })
    }

    /// Runs `fut` to completion on a tokio current-thread runtime inside this namespace.
    ///
    /// Tasks spawned on the runtime (and its blocking pool) run inside the namespace too, as
    /// threads inherit their creator's namespace.
    pub fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("cannot build a tokio runtime", e))?;
            Ok(rt.block_on(fut))
        })?
    }

    /// A [`Command`] that runs `program` inside this namespace (`ip netns exec <name> program`).
    ///
    /// `ip netns exec` execs the program, so a spawned child's PID is the program's PID.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec"]).arg(self.name()).arg(program);
        c
    }

    /// Runs `argv` (program first) inside this namespace and returns its output; the error names
    /// the command, its exit status and stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::invalid("command", "empty argument list"))?;
        cmd::run_checked(self.command(prog).args(args))
    }

    /// PIDs of the processes whose network namespace is this one (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        pids_in(self.name())
    }
}

/// Moves the calling thread into the namespace mounted at `path`.
fn enter(path: &Path, name: &str) -> Result<()> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
        ns: name.to_owned(),
        source,
    })
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.owned {
            delete(&self.name);
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "namespace name",
            format!("{name:?}: use 1 to 64 of [a-z0-9.-]"),
        ))
    }
}

/// Deletes namespace `name`: stops, by PID, whatever still runs inside (SIGTERM, then SIGKILL
/// after 3 s), then `ip netns del`. Returns whether it is gone (also when it did not exist).
pub fn delete(name: &str) -> bool {
    if !Path::new("/run/netns").join(name).exists() {
        return true;
    }
    stop_processes_in(name);
    match cmd::run(&["ip", "netns", "del", name]) {
        Ok(_) => {
            tracing::debug!(netns = %name, "deleted network namespace");
            true
        }
        Err(e) => {
            tracing::warn!(netns = %name, error = %e, "cannot delete network namespace");
            false
        }
    }
}

/// Names of every network namespace, from `ip netns list`.
pub fn list_all() -> Result<Vec<String>> {
    let out = cmd::run(&["ip", "netns", "list"])?;
    Ok(parse_netns_list(&out.stdout))
}

fn pids_in(name: &str) -> Result<Vec<u32>> {
    let out = cmd::run(&["ip", "netns", "pids", name])?;
    Ok(out
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Stops, by PID, whatever still runs in a namespace we are about to delete: a namespace with
/// processes in it outlives `ip netns del`, with its links and addresses.
fn stop_processes_in(name: &str) {
    // Never ourselves (only threads of ours enter namespaces, but be sure).
    let me = std::process::id();
    let Ok(mut pids) = pids_in(name) else { return };
    pids.retain(|&p| p != me);
    if pids.is_empty() {
        return;
    }
    tracing::warn!(netns = %name, ?pids, "processes left in namespace; stopping them");
    for &p in &pids {
        signal(p, Signal::SIGTERM);
    }
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while Instant::now() < deadline {
        match pids_in(name) {
            Ok(left) if left.iter().all(|&p| p == me) => return,
            Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    for p in pids_in(name).unwrap_or_default() {
        if p == me {
            continue;
        }
        signal(p, Signal::SIGKILL);
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // The process may have exited meanwhile; nothing to do then.
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Names of the namespaces that look like ours (`mgyt-` prefix), from `ip netns list`.
pub fn list_ours() -> Result<Vec<String>> {
    Ok(list_all()?
        .into_iter()
        .filter(|n| n.starts_with(NETNS_PREFIX))
        .collect())
}

/// Names of the namespaces created by this process (`mgyt-<our pid>-...`).
pub fn list_this_process() -> Result<Vec<String>> {
    let mine = format!("{NETNS_PREFIX}{}-", std::process::id());
    Ok(list_ours()?
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect())
}

fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The PID embedded in one of our namespace names.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NETNS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Deletes namespaces left by test processes that died without unwinding (SIGKILL, abort):
/// only those whose owner PID no longer exists, so parallel test processes are not disturbed.
/// Processes still inside them are stopped first. Returns the names deleted. Runs once per
/// process before the first namespace is created.
pub fn sweep_stale() -> Result<Vec<String>> {
    sweep(false)
}

fn sweep(including_own_pid: bool) -> Result<Vec<String>> {
    let me = std::process::id();
    let mut swept = Vec::new();
    for name in list_ours()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        let stale =
            (including_own_pid && pid == me) || !Path::new(&format!("/proc/{pid}")).exists();
        if !stale {
            continue;
        }
        tracing::warn!(netns = %name, "deleting namespace left by dead test process {pid}");
        delete(&name);
        swept.push(name);
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_list_parsing_takes_the_first_word() {
        let out = "mgyt-12-3-br (id: 4)\nmgyt-12-2\nother (id: 0)\n";
        assert_eq!(
            parse_netns_list(out),
            vec!["mgyt-12-3-br", "mgyt-12-2", "other"]
        );
    }

    #[test]
    fn persistent_names_are_checked() {
        assert!(check_name("mgyl-1a2b3c-node-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("Upper").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn owner_pid_is_read_from_the_name() {
        assert_eq!(owner_pid("mgyt-4242-7-bird"), Some(4242));
        assert_eq!(owner_pid("mgyt-4242-7"), Some(4242));
        assert_eq!(owner_pid("mgyt-x-7"), None);
        assert_eq!(owner_pid("rrb12br"), None);
    }
}
