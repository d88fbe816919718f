//! The namespace guard, links and sysctls, against the real kernel. Needs root: without it
//! every test fails with the harness's "must run as root" error rather than skipping.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::time::Duration;

use ipnet::IpNet;
use margay_harness::{Bridge, Error, Netns, list_this_process};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn exists(name: &str) -> bool {
    margay_harness::list_ours()
        .unwrap()
        .iter()
        .any(|n| n == name)
}

#[test]
fn fifty_namespaces_are_created_and_all_deleted_on_drop() {
    let all: Vec<Netns> = (0..50).map(|_| Netns::with_tag("many").unwrap()).collect();
    let names: Vec<String> = all.iter().map(|n| n.name().to_owned()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    for n in &names {
        assert!(
            n.starts_with(&format!("mgyt-{}-", std::process::id())),
            "{n}"
        );
        assert!(exists(n), "{n} missing from ip netns list");
    }
    drop(all);
    // Other tests may run in this process (cargo test), so look for these 50 only.
    let left: Vec<String> = list_this_process()
        .unwrap()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let listed = margay_harness::cmd::run(&["ip", "netns", "list"])
        .unwrap()
        .stdout;
    for n in &names {
        assert!(
            !listed.split_whitespace().any(|w| w == n),
            "{n} still in ip netns list"
        );
    }
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    // Panic in this thread, with a namespace and a process inside it alive.
    let name = std::panic::catch_unwind(|| {
        let ns = Netns::with_tag("panic").unwrap();
        let name = ns.name().to_owned();
        let _sleeper = margay_harness::Daemon::builder("sleeper", "sleep")
            .arg("60")
            .netns(&ns)
            .spawn()
            .unwrap();
        std::panic::panic_any(name);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(!exists(&name), "{name} survived a panic");

    // Panic in another thread.
    let handle = std::thread::spawn(|| {
        let ns = Netns::with_tag("panic2").unwrap();
        std::panic::panic_any(ns.name().to_owned());
    });
    let name = handle.join().unwrap_err().downcast::<String>().unwrap();
    assert!(!exists(&name), "{name} survived a panic in a thread");

    // Panic inside `run`, on the namespace's own thread: propagated to the caller.
    let ns = Netns::with_tag("panic3").unwrap();
    let name = ns.name().to_owned();
    let r = std::panic::catch_unwind(move || ns.run(|| panic!("inside")).unwrap());
    assert!(r.is_err());
    assert!(!exists(&name), "{name} survived a panic inside run");
}

#[test]
fn processes_left_inside_are_stopped_when_the_namespace_is_dropped() {
    let ns = Netns::with_tag("leftover").unwrap();
    let mut child = ns.command("sleep").arg("60").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ns.pids().unwrap(), vec![child.id()]);
    let name = ns.name().to_owned();
    drop(ns);
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!exists(&name));
}

#[test]
fn run_enters_the_namespace_and_leaves_the_caller_alone() {
    let ns = Netns::with_tag("run").unwrap();
    ns.add_veth("v0", &ns, "v1").unwrap();
    ns.add_addr("v0", net("198.18.7.1/24")).unwrap();
    ns.link_up("v0").unwrap();
    ns.link_up("v1").unwrap();
    // Binding an address that exists only inside the namespace works there and nowhere else.
    let port = ns
        .run(|| {
            let l = TcpListener::bind("198.18.7.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            TcpStream::connect(("198.18.7.1", port)).unwrap();
            port
        })
        .unwrap();
    assert!(port > 0);
    assert!(TcpListener::bind("198.18.7.1:0").is_err());
    let links = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert!(
        !links.contains("v0:"),
        "caller thread sees the namespace's links"
    );
}

#[test]
fn block_on_runs_a_tokio_runtime_inside() {
    let ns = Netns::with_tag("tokio").unwrap();
    let echoed = ns
        .block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 5];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
            });
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).await.unwrap();
            server.await.unwrap();
            b
        })
        .unwrap();
    assert_eq!(&echoed, b"hello");
}

#[test]
fn exec_runs_inside_and_reports_failures_with_stderr() {
    let ns = Netns::with_tag("exec").unwrap();
    let links = ns.exec(&["ip", "-o", "link"]).unwrap().stdout;
    assert_eq!(
        links.lines().count(),
        1,
        "a new namespace has only lo: {links}"
    );
    let err = ns.exec(&["ip", "route", "get", "198.18.0.1"]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::CommandFailed { .. }), "{msg}");
    assert!(msg.contains("ip netns exec"), "{msg}");
    assert!(msg.contains("unreachable"), "{msg}");
}

#[test]
fn veth_between_two_namespaces_carries_ping_v4_and_v6() {
    let a = Netns::with_tag("ping-a").unwrap();
    let b = Netns::with_tag("ping-b").unwrap();
    a.connect(
        "eth0",
        &[net("198.18.0.1/24"), net("fd00:18::1/64")],
        &b,
        "eth0",
        &[net("198.18.0.2/24"), net("fd00:18::2/64")],
    )
    .unwrap();
    a.exec(&["ping", "-c", "1", "-W", "5", "198.18.0.2"])
        .unwrap();
    b.exec(&["ping", "-c", "1", "-W", "5", "fd00:18::1"])
        .unwrap();
}

#[test]
fn a_bridge_joins_three_namespaces_and_routes_work_through_a_router() {
    let br = Bridge::new().unwrap();
    let r = Netns::with_tag("router").unwrap();
    let n1 = Netns::with_tag("n1").unwrap();
    let n2 = Netns::with_tag("n2").unwrap();
    br.attach(&r, "eth0", &[net("198.18.0.1/24")]).unwrap();
    br.attach(&n1, "eth0", &[net("198.18.0.11/24")]).unwrap();
    br.attach(&n2, "eth0", &[net("198.18.0.12/24")]).unwrap();
    n1.exec(&["ping", "-c", "1", "-W", "5", "198.18.0.12"])
        .unwrap();

    // A pod-like address behind n2, reached from n1 through the router.
    n2.add_veth("pod", &n2, "podpeer").unwrap();
    n2.add_addr("pod", net("100.64.0.5/32")).unwrap();
    n2.link_up("pod").unwrap();
    n2.link_up("podpeer").unwrap();
    r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(r.read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    r.add_route(
        net("100.64.0.0/26"),
        Some("198.18.0.12".parse().unwrap()),
        None,
    )
    .unwrap();
    n1.add_route(net("0.0.0.0/0"), Some("198.18.0.1".parse().unwrap()), None)
        .unwrap();
    n1.exec(&["ping", "-c", "1", "-W", "5", "100.64.0.5"])
        .unwrap();
}

#[test]
fn sysctls_change_only_inside_the_namespace() {
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns = Netns::with_tag("sysctl").unwrap();
    let want = if host_before.trim() == "1" { "0" } else { "1" };
    ns.sysctl("net.ipv4.ip_forward", want).unwrap();
    assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), want);
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(host_before, host_after);
    let err = ns.sysctl("kernel.pid_max", "4194304").unwrap_err();
    assert!(err.to_string().contains("only net.*"), "{err}");
}

#[test]
fn addresses_outside_the_test_ranges_are_refused() {
    let ns = Netns::with_tag("addr").unwrap();
    ns.add_veth("v0", &ns, "v1").unwrap();
    for bad in ["10.1.2.3/24", "192.168.0.1/24", "2001:db8::1/64"] {
        let err = ns.add_addr("v0", net(bad)).unwrap_err();
        assert!(
            err.to_string().contains("outside the test ranges"),
            "{bad}: {err}"
        );
    }
    let err = ns
        .add_route(
            net("10.0.0.0/8"),
            Some("198.18.0.1".parse::<IpAddr>().unwrap()),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("outside the test ranges"), "{err}");
    let addrs = ns
        .exec(&["ip", "-o", "addr", "show", "dev", "v0"])
        .unwrap()
        .stdout;
    assert!(!addrs.contains("inet "), "{addrs}");
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("mgyt-{dead}-0-stale");
    margay_harness::cmd::run(&["ip", "netns", "add", &name]).unwrap();
    // A live owner (us) is never swept. (Creating a namespace sweeps too, and so may other test
    // processes running in parallel, so the stale one may be gone before our explicit sweep.)
    let ours = Netns::with_tag("live").unwrap();
    let swept = margay_harness::sweep_stale().unwrap();
    assert!(!swept.iter().any(|n| n == ours.name()), "{swept:?}");
    assert!(!exists(&name), "{name} was not swept");
    assert!(exists(ours.name()));
}

#[test]
fn spawn_runs_a_background_thread_inside() {
    let ns = Netns::with_tag("spawn").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns
        .spawn(move || {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            l.accept().unwrap().1
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    // The listener is on the namespace's loopback, not the host's.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err());
    ns.run(|| TcpStream::connect(addr).unwrap()).unwrap();
    let peer = h.join().unwrap().unwrap();
    assert!(peer.ip().is_loopback());
}

#[test]
fn a_persistent_namespace_outlives_its_guards_until_deleted() {
    let name = format!("mgyl-harness-{}", std::process::id());
    let ns = Netns::persistent(&name).unwrap();
    ns.exec(&["ip", "link", "show", "lo"]).unwrap();
    drop(ns);
    let all = margay_harness::list_all().unwrap();
    assert!(all.contains(&name), "{name} was deleted with its guard");
    // Adopted again (as a later command does), still not deleted on drop.
    let again = Netns::adopt(&name).unwrap();
    let out = again.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    assert!(out.unwrap().contains("lo:"));
    drop(again);
    assert!(margay_harness::list_all().unwrap().contains(&name));
    assert!(margay_harness::delete_netns(&name));
    assert!(!margay_harness::list_all().unwrap().contains(&name));
    assert!(Netns::adopt(&name).is_err());
    // Deleting what is not there is fine.
    assert!(margay_harness::delete_netns(&name));
}
