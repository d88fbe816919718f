//! The pod server (what each pod runs, like the upstream e2e agnhost pods) and the probes
//! between pods.
//!
//! The server answers on each of its ports over TCP and UDP with the pod's `NS/NAME` and a
//! newline: on TCP it writes that and closes; on UDP it answers every datagram. A probe from
//! pod A to pod B runs on a thread inside A's namespace and works when B's answer arrives
//! within the timeout; anything else (no answer, a reset, an ICMP error) is "blocked".

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use margay_harness::Netns;

use super::state::{PodState, State};

/// The protocols a probe can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP connection that reads the server's answer.
    Tcp,
    /// A UDP datagram and its answer.
    Udp,
}

/// `PORT/PROTO`, protocol case-insensitive, TCP when absent.
pub fn parse_port(s: &str) -> anyhow::Result<(u16, Proto)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        anyhow::anyhow!("{s:?}: the port must be 1 to 65535 (PORT/PROTO, e.g. 80/TCP)")
    })?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => anyhow::bail!("{s:?}: protocol {other:?} is not probed; use TCP or UDP"),
    };
    Ok((port, proto))
}

/// Runs the pod server until killed: TCP and UDP on every port, on all addresses.
/// With `echo_peer`, a TCP answer also names the address the connection came from (the
/// internet host, to show what natOutgoing makes of a pod's address).
pub async fn serve(name: String, ports: Vec<u16>, echo_peer: bool) -> anyhow::Result<()> {
    let answer = format!("{name}\n");
    let mut tasks = Vec::new();
    for port in ports {
        let tcp = bind_tcp(port).await?;
        let udp = bind_udp(port).await?;
        let a = answer.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    // Out of file descriptors or the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let a = match s.peer_addr() {
                    Ok(peer) if echo_peer => {
                        format!("{} {}\n", a.trim_end(), peer.ip().to_canonical())
                    }
                    _ => a.clone(),
                };
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.write_all(a.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }));
        let a = answer.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                if let Ok((_, from)) = udp.recv_from(&mut buf).await {
                    let _ = udp.send_to(a.as_bytes(), from).await;
                }
            }
        }));
        tracing::info!(port, "serving TCP and UDP");
    }
    futures::future::join_all(tasks).await;
    Ok(())
}

/// `[::]:port` (which takes IPv4 too), or `0.0.0.0:port` where IPv6 is off.
async fn bind_tcp(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(("::", port)).await {
        Ok(l) => Ok(l),
        Err(_) => Ok(tokio::net::TcpListener::bind(("0.0.0.0", port)).await?),
    }
}

async fn bind_udp(port: u16) -> anyhow::Result<tokio::net::UdpSocket> {
    match tokio::net::UdpSocket::bind(("::", port)).await {
        Ok(s) => Ok(s),
        Err(_) => Ok(tokio::net::UdpSocket::bind(("0.0.0.0", port)).await?),
    }
}

/// One probe, from the calling thread's namespace: whether `to` answers within `timeout`.
pub fn probe_here(to: SocketAddr, proto: Proto, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    match proto {
        Proto::Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&to, timeout) else {
                return false;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            !buf.is_empty()
        }
        Proto::Udp => {
            let bind: SocketAddr = if to.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(s) = UdpSocket::bind(bind) else {
                return false;
            };
            if s.connect(to).is_err() {
                return false;
            }
            let mut buf = [0u8; 1500];
            // Datagrams may be lost (the first while neighbours resolve): resend every 200 ms.
            while Instant::now() < deadline {
                let _ = s.send(b"probe\n");
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200));
                if wait.is_zero() || s.set_read_timeout(Some(wait)).is_err() {
                    break;
                }
                if let Ok(n) = s.recv(&mut buf)
                    && n > 0
                {
                    return true;
                }
            }
            false
        }
    }
}

/// The address family a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// The pod's IPv4 address, else its IPv6 one (single-stack IPv6 pods).
    #[default]
    Any,
    /// The pod's IPv6 address (dual-stack labs, `up --ipv6`).
    V6,
}

/// The address a probe to `pod` uses: IPv4, else IPv6.
pub fn pod_ip(pod: &PodState) -> Option<IpAddr> {
    pod_addr(pod, Family::Any)
}

/// The address a probe to `pod` over `family` uses.
pub fn pod_addr(pod: &PodState, family: Family) -> Option<IpAddr> {
    let ips: Vec<IpAddr> = pod.ips.iter().filter_map(|i| i.parse().ok()).collect();
    match family {
        Family::Any => ips.iter().find(|i| i.is_ipv4()).or_else(|| ips.first()),
        Family::V6 => ips.iter().find(|i| i.is_ipv6()),
    }
    .copied()
}

/// What a probe goes to: a pod's port over one protocol and address family.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The port.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
    /// The address family.
    pub family: Family,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// Probes pod `to` from inside network namespace `from` (a pod's or a node's).
pub fn probe(from: &str, to: &PodState, t: Target) -> anyhow::Result<bool> {
    let ip = pod_addr(to, t.family).ok_or_else(|| match t.family {
        Family::Any => anyhow::anyhow!("pod {} has no address", to.id()),
        Family::V6 => anyhow::anyhow!(
            "pod {} has no IPv6 address (bring the lab up with --ipv6)",
            to.id()
        ),
    })?;
    let ns = Netns::adopt(from)?;
    Ok(ns.run(move || probe_here(SocketAddr::new(ip, t.port), t.proto, t.timeout))?)
}

/// Connects from namespace `netns` to the internet host and returns the source address it saw
/// (its server answers `internet ADDR`), or `None` when no answer came within `timeout`.
pub fn internet(netns: &str, to: SocketAddr, timeout: Duration) -> anyhow::Result<Option<String>> {
    let ns = Netns::adopt(netns)?;
    Ok(ns.run(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&to, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_whitespace().nth(1).map(str::to_owned)
    })?)
}

/// At most this many probes run at once: enough for a 9 × 9 matrix (the upstream e2e shape)
/// in one round, so that a matrix with blocked pairs costs about one timeout.
const PARALLEL: usize = 128;

/// Probes every ordered pair of pods (a pod to itself too), in parallel. Keys are
/// `FROM->TO` (`x/a->y/b`).
pub fn matrix(st: &State, t: Target) -> anyhow::Result<BTreeMap<String, bool>> {
    let pods: Vec<&PodState> = st.pods.values().collect();
    let pairs: Vec<(&PodState, &PodState)> = pods
        .iter()
        .flat_map(|a| pods.iter().map(move |b| (*a, *b)))
        .collect();
    // A pool of workers taking the next pair: a slow probe holds up only its own worker.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<anyhow::Result<(String, bool)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL.min(pairs.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((a, b)) = pairs.get(i) else {
                            return done;
                        };
                        done.push(
                            probe(&a.netns, b, t).map(|ok| (format!("{}->{}", a.id(), b.id()), ok)),
                        );
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a probe thread panicked"))])
            })
            .collect()
    });
    results.into_iter().collect()
}

/// The matrix as a table: rows are sources, columns destinations; `.` connects, `X` blocked.
pub fn matrix_table(st: &State, m: &BTreeMap<String, bool>) -> String {
    let ids: Vec<String> = st.pods.keys().cloned().collect();
    let w = ids.iter().map(String::len).max().unwrap_or(4).max(4);
    let mut out = format!("{:w$}", "from\\to");
    for id in &ids {
        out.push_str(&format!("  {id:^w$}"));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    for a in &ids {
        out.push_str(&format!("{a:w$}"));
        for b in &ids {
            let cell = match m.get(&format!("{a}->{b}")) {
                Some(true) => ".",
                Some(false) => "X",
                None => "?",
            };
            out.push_str(&format!("  {cell:^w$}"));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    let blocked = m.values().filter(|v| !**v).count();
    out.push_str(&format!(
        "{} pairs, {} connect (.), {} blocked (X)\n",
        m.len(),
        m.len() - blocked,
        blocked
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ports_parse() {
        assert_eq!(parse_port("80/TCP").unwrap(), (80, Proto::Tcp));
        assert_eq!(parse_port("53/udp").unwrap(), (53, Proto::Udp));
        assert_eq!(parse_port("81").unwrap(), (81, Proto::Tcp));
        assert!(parse_port("0/tcp").is_err());
        assert!(
            parse_port("80/sctp")
                .unwrap_err()
                .to_string()
                .contains("TCP or UDP")
        );
    }

    #[test]
    fn a_server_on_loopback_answers_tcp_and_udp_probes() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        // A free port (bind, note, release; the server binds it again at once).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        rt.spawn(serve("x/a".into(), vec![port], false));
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !probe_here(to, Proto::Tcp, Duration::from_millis(200)) {
            assert!(Instant::now() < deadline, "the server never answered");
        }
        assert!(probe_here(to, Proto::Udp, Duration::from_secs(1)));
        // Nothing listens on the port after ours... most likely; a closed port is blocked.
        let closed: SocketAddr = ([127, 0, 0, 1], 1).into();
        assert!(!probe_here(closed, Proto::Tcp, Duration::from_millis(300)));
    }
}
