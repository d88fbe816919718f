//! Daemons on the host (outside any namespace, e.g. etcd on loopback) of test processes that died
//! without unwinding (SIGKILL, a runner's timeout): found and stopped by the next test process.
//!
//! Daemons inside a namespace need none of this: the stale-namespace sweep stops what runs in a
//! dead process's namespaces. For host daemons each start writes a record
//! `/run/mgyt-daemons/<owner pid>-<daemon pid>` holding the daemon's start time (field 22 of
//! `/proc/PID/stat`), so that a PID reused by an unrelated process is never signalled.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const RECORD_DIR: &str = "/run/mgyt-daemons";
static SWEEP: Once = Once::new();

/// The start time of `pid` in clock ticks since boot, if it runs.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Records a host daemon just started by this process.
pub fn record(pid: u32) -> Option<PathBuf> {
    let start = start_time(pid)?;
    std::fs::create_dir_all(RECORD_DIR).ok()?;
    let path = Path::new(RECORD_DIR).join(format!("{}-{pid}", std::process::id()));
    std::fs::write(&path, start.to_string()).ok()?;
    Some(path)
}

/// Forgets a record once its daemon has stopped.
pub(crate) fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn parse_name(name: &str) -> Option<(u32, u32)> {
    let (owner, pid) = name.split_once('-')?;
    Some((owner.parse().ok()?, pid.parse().ok()?))
}

/// Sweeps once per process, before its first daemon or namespace.
pub(crate) fn sweep_once() {
    SWEEP.call_once(|| {
        sweep_host_daemons();
    });
}

/// Stops the host daemons of dead test processes (TERM, then KILL after 3 s) and returns their
/// PIDs.
pub fn sweep_host_daemons() -> Vec<u32> {
    stop_host_daemons(|owner| !Path::new(&format!("/proc/{owner}")).exists())
}

/// Stops the recorded host daemons whose owner `pick` chooses.
fn stop_host_daemons(pick: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(RECORD_DIR) else {
        return Vec::new();
    };
    let mut stopped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((owner, pid)) = parse_name(&name) else {
            continue;
        };
        if !pick(owner) {
            continue;
        }
        let recorded: Option<u64> = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if recorded.is_some() && recorded == start_time(pid) {
            tracing::warn!(pid, owner, "stopping a daemon left by dead test process");
            let p = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = kill(p, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while start_time(pid) == recorded && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if start_time(pid) == recorded {
                let _ = kill(p, Signal::SIGKILL);
            }
            stopped.push(pid);
        }
        let _ = std::fs::remove_file(entry.path());
    }
    stopped
}

/// Makes SIGINT, SIGTERM and SIGHUP clean up before the process ends: a benchmark or a tool
/// stopped with Ctrl-C or `kill` deletes the namespaces it made and stops the host daemons it
/// started (their guards' `Drop` would not run), then exits with 128 + the signal. The signals
/// are caught by a handler, not blocked: the daemons this process starts inherit neither (a
/// caught signal is reset to its default on exec, a blocked one would stay blocked).
pub fn clean_up_on_signal() -> crate::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| crate::Error::io("catching SIGINT, SIGTERM and SIGHUP", e))?;
    std::thread::Builder::new()
        .name("mgyt-signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
            eprintln!("signal {sig}: deleting this process's namespaces and daemons");
            let me = std::process::id();
            stop_host_daemons(|owner| owner == me);
            for name in crate::list_this_process().unwrap_or_default() {
                crate::delete_netns(&name);
            }
            std::process::exit(128 + sig);
        })
        .map_err(|e| crate::Error::io("starting the signal thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn processes_started_after_clean_up_on_signal_can_still_be_signalled() {
        clean_up_on_signal().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(str::trim);
        assert_eq!(blocked, Some("0000000000000000"), "{status}");
    }

    #[test]
    fn record_names_carry_owner_and_daemon() {
        assert_eq!(parse_name("12-34"), Some((12, 34)));
        assert_eq!(parse_name("x-34"), None);
        assert_eq!(parse_name("1234"), None);
    }
}
