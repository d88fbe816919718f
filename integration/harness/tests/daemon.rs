//! The daemon guard against real processes and namespaces. Needs root.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use margay_harness::{Daemon, Error, Netns, Ready};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; the guard reaps what it stops.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn readiness_timeout_error_quotes_the_daemon_log() {
    let start = Instant::now();
    let err = Daemon::builder("slowpoke", "sh")
        .args([
            "-c",
            "echo 'starting up'; echo 'listening soon, honest' >&2; exec sleep 60",
        ])
        .ready(Ready::TcpListen(4999))
        .timeout(Duration::from_millis(700))
        .spawn()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotReady { .. }), "{msg}");
    assert!(msg.contains("slowpoke"), "{msg}");
    assert!(msg.contains("TCP port 4999"), "{msg}");
    assert!(msg.contains("starting up"), "{msg}");
    assert!(msg.contains("listening soon, honest"), "{msg}");
    // It was stopped, by PID, before the error came back.
    let Error::NotReady { pid, .. } = err else {
        unreachable!()
    };
    assert!(!alive(pid), "pid {pid} still alive");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn tcp_readiness_is_checked_inside_the_daemons_namespace() {
    let ns = Netns::with_tag("tcpready").unwrap();
    // The server binds the namespace's loopback: only a check from inside can see it.
    let d = Daemon::builder("server", "python3")
        .args([
            "-c",
            "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',4711))\ns.listen()\nprint('up',flush=True)\ntime.sleep(60)",
        ])
        .netns(&ns)
        .ready(Ready::TcpConnect(SocketAddr::from(([127, 0, 0, 1], 4711))))
        .ready(Ready::TcpListen(4711))
        .ready(Ready::LogContains("up".into()))
        .timeout(Duration::from_secs(15))
        .spawn()
        .unwrap();
    assert_eq!(
        ns.pids().unwrap(),
        vec![d.pid()],
        "the child PID is the program's own"
    );
    let pid = d.pid();
    drop(d);
    assert!(!alive(pid));
    assert!(ns.pids().unwrap().is_empty());
}

#[test]
fn a_daemon_ignoring_sigterm_is_killed_after_the_grace_period() {
    let ns = Netns::with_tag("stubborn").unwrap();
    let mut d = Daemon::builder("stubborn", "sh")
        .args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .netns(&ns)
        .ready(Ready::LogContains("ready".into()))
        .stop_grace(Duration::from_millis(500))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = d.stop().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(500));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(!d.is_running());
}

#[test]
fn a_daemon_keeps_its_namespace_alive_until_it_is_stopped() {
    let ns = Netns::with_tag("keep").unwrap();
    let name = ns.name().to_owned();
    let d = Daemon::builder("sleeper", "sleep")
        .arg("60")
        .netns(&ns)
        .spawn()
        .unwrap();
    drop(ns);
    let listed = margay_harness::list_ours().unwrap();
    assert!(
        listed.contains(&name),
        "namespace deleted under a running daemon"
    );
    assert_eq!(d.netns().unwrap().name(), name);
    drop(d);
    assert!(!margay_harness::list_ours().unwrap().contains(&name));
}

#[test]
fn file_readiness_and_log_access() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready.flag");
    let script = format!(
        "sleep 0.3; echo made >&2; touch {}; exec sleep 60",
        flag.display()
    );
    let d = Daemon::builder("toucher", "sh")
        .args(["-c", &script])
        .log_file(dir.path().join("toucher.log"))
        .ready(Ready::File(flag.clone()))
        .spawn()
        .unwrap();
    assert!(flag.exists());
    assert_eq!(d.log_path(), dir.path().join("toucher.log"));
    assert!(d.log().contains("made"));
    assert_eq!(d.log_tail(1), "made");
}

#[test]
fn a_host_daemon_of_a_dead_test_process_is_stopped_by_the_next_sweep() {
    margay_harness::require_root().unwrap();
    // A daemon whose owner is gone: record it as started by a PID that no longer exists.
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let start = margay_harness::leftovers::start_time(orphan.id()).unwrap();
    let record =
        std::path::Path::new("/run/mgyt-daemons").join(format!("{dead_pid}-{}", orphan.id()));
    std::fs::create_dir_all("/run/mgyt-daemons").unwrap();
    std::fs::write(&record, start.to_string()).unwrap();
    // A live daemon of ours must survive the sweep.
    let mut ours = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let our_record = margay_harness::leftovers::record(ours.id()).unwrap();

    let stopped = margay_harness::leftovers::sweep_host_daemons();
    assert!(stopped.contains(&orphan.id()), "{stopped:?}");
    assert!(
        orphan.wait().unwrap().signal().is_some(),
        "the orphan was signalled"
    );
    assert!(!record.exists());
    assert!(
        ours.try_wait().unwrap().is_none(),
        "our own daemon was stopped"
    );
    let _ = ours.kill();
    let _ = ours.wait();
    std::fs::remove_file(our_record).unwrap();
}
