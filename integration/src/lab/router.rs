//! The external (top-of-rack) router: BIRD 2, FRR or GoBGP in its own namespace on the underlay,
//! peering eBGP (AS 65001) with every node — the nodes peer with it through a BGPPeer with its
//! address and AS, as Calico documents. Its configuration is generated into the lab directory
//! (pure functions below); the supervisor runs it like the lab's other daemons, and `down` stops
//! it by PID. BIRD and FRR install what they learn in the router's routing table, so the router
//! reaches every pod; GoBGP has no FIB and only learns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use margay_harness::fixtures::{NeighborStatus, RouteMap, parse};

use super::state::{LabDir, Lock, RouterKind, RouterState, State};
use super::supervisor::{self, StartSpec};
use super::{log_tail, wait_for};

/// GoBGP's API port inside the router's namespace.
const GOBGP_API: u16 = 50051;
/// Where Debian installs FRR's daemons.
const FRR_LIBEXEC: &str = "/usr/lib/frr";

/// What the router's configuration needs: who it is and whom it peers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Its IPv4 address (router id, IPv4 sessions).
    pub ipv4: IpAddr,
    /// Its IPv6 address (IPv6 sessions), dual stack.
    pub ipv6: Option<IpAddr>,
    /// Its AS.
    pub asn: u32,
    /// The nodes' addresses (IPv4 and IPv6 ones) and their AS.
    pub peers: Vec<(IpAddr, u32)>,
}

/// The name of BIRD's protocol for a peer (`n198_18_0_11`, `nfd00_198_18__11`).
fn bird_proto(a: IpAddr) -> String {
    format!("n{}", a.to_string().replace(['.', ':'], "_"))
}

/// BIRD 2's configuration: a kernel protocol per family exporting every learned route, one eBGP
/// protocol per peer carrying the peer's family.
pub fn bird_config(c: &RouterConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "log stderr all;\nrouter id {};", c.ipv4);
    let _ = writeln!(s, "protocol device {{ scan time 10; }}");
    let _ = writeln!(
        s,
        "protocol kernel k4 {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}"
    );
    if c.ipv6.is_some() {
        let _ = writeln!(
            s,
            "protocol kernel k6 {{ ipv6 {{ import none; export where source = RTS_BGP; }}; }}"
        );
    }
    for (addr, asn) in &c.peers {
        let (local, fam) = match addr {
            IpAddr::V4(_) => (Some(c.ipv4), "ipv4"),
            IpAddr::V6(_) => (c.ipv6, "ipv6"),
        };
        let Some(local) = local else { continue };
        let _ = writeln!(
            s,
            "protocol bgp {} {{\n  local {local} as {};\n  neighbor {addr} as {asn};\n  connect delay time 1;\n  connect retry time 5;\n  error wait time 1, 10;\n  {fam} {{ import all; export all; }};\n}}",
            bird_proto(*addr),
            c.asn
        );
    }
    s
}

/// FRR bgpd's configuration: one eBGP neighbour per peer, activated in its own family; zebra
/// installs what bgpd learns.
pub fn frr_config(c: &RouterConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "frr defaults traditional\nhostname margay-lab-tor\nlog stdout informational\n!\nrouter bgp {}\n bgp router-id {}\n no bgp default ipv4-unicast\n no bgp ebgp-requires-policy\n no bgp network import-check",
        c.asn, c.ipv4
    );
    for (addr, asn) in &c.peers {
        let _ = writeln!(s, " neighbor {addr} remote-as {asn}");
        let _ = writeln!(s, " neighbor {addr} timers connect 5");
    }
    for v6 in [false, true] {
        let fam: Vec<&IpAddr> = c
            .peers
            .iter()
            .map(|(a, _)| a)
            .filter(|a| a.is_ipv6() == v6)
            .collect();
        if fam.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            " address-family {} unicast",
            if v6 { "ipv6" } else { "ipv4" }
        );
        for a in fam {
            let _ = writeln!(s, "  neighbor {a} activate");
        }
        let _ = writeln!(s, " exit-address-family");
    }
    s
}

/// GoBGP's TOML: one neighbour per peer with its family.
pub fn gobgp_config(c: &RouterConfig) -> String {
    let mut s = String::new();
    let locals: Vec<String> = std::iter::once(c.ipv4)
        .chain(c.ipv6)
        .map(|a| format!("\"{a}\""))
        .collect();
    let _ = writeln!(
        s,
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  local-address-list = [{}]\n  port = 179",
        c.asn,
        c.ipv4,
        locals.join(", ")
    );
    for (addr, asn) in &c.peers {
        let fam = if addr.is_ipv6() {
            "ipv6-unicast"
        } else {
            "ipv4-unicast"
        };
        let _ = writeln!(
            s,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {asn}\n  [neighbors.timers.config]\n    connect-retry = 5\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\""
        );
    }
    s
}

fn spec(
    st: &RouterState,
    name: &str,
    program: impl Into<std::path::PathBuf>,
    args: Vec<String>,
) -> StartSpec {
    StartSpec {
        name: format!("router-{name}"),
        netns: Some(st.netns.clone()),
        program: program.into(),
        args,
        env: Vec::new(),
        log: st.dir.join(format!("{name}.log")),
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Writes the router's configuration into its directory and starts its daemons through the
/// supervisor; returns once it answers its control interface.
pub fn start(
    lab: &LabDir,
    lock: &Lock,
    st: &mut State,
    config: &RouterConfig,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = st
        .router
        .clone()
        .context("the lab has no external router")?;
    std::fs::create_dir_all(&r.dir)
        .with_context(|| format!("cannot create {}", r.dir.display()))?;
    let mut started = |name: &str, s: StartSpec| -> anyhow::Result<()> {
        let p = supervisor::start(lab, s)?;
        st.procs.insert(format!("router-{name}"), p);
        lab.save(lock, st)?;
        Ok(())
    };
    match r.kind {
        RouterKind::Bird => {
            let conf = r.dir.join("bird.conf");
            std::fs::write(&conf, bird_config(config))?;
            let args = vec![
                "-f".into(),
                "-c".into(),
                path(&conf),
                "-s".into(),
                path(&r.dir.join("bird.ctl")),
            ];
            started("bird", spec(&r, "bird", "bird", args))?;
        }
        RouterKind::Frr => {
            std::fs::write(
                r.dir.join("zebra.conf"),
                "hostname margay-lab-tor\nlog stdout informational\n",
            )?;
            std::fs::write(r.dir.join("bgpd.conf"), frr_config(config))?;
            // FRR drops privileges to user frr, which owns its directory (outside the lab
            // directory, which may sit in a private temporary directory frr cannot traverse).
            chown_to_frr(&r.dir)?;
            let common = |name: &str| -> Vec<String> {
                vec![
                    "-i".into(),
                    path(&r.dir.join(format!("{name}.pid"))),
                    "--vty_socket".into(),
                    path(&r.dir),
                    "-z".into(),
                    path(&r.dir.join("zserv.api")),
                    "-u".into(),
                    "frr".into(),
                    "-g".into(),
                    "frr".into(),
                    "-f".into(),
                    path(&r.dir.join(format!("{name}.conf"))),
                ]
            };
            started(
                "zebra",
                spec(
                    &r,
                    "zebra",
                    Path::new(FRR_LIBEXEC).join("zebra"),
                    common("zebra"),
                ),
            )?;
            let zserv = r.dir.join("zserv.api");
            wait_for(
                "FRR's zebra opens its zserv socket",
                timeout,
                || zserv.exists().then_some(()),
                || log_tail(&r.dir.join("zebra.log"), 10),
            )?;
            let mut args = common("bgpd");
            args.extend(["-l".into(), config.ipv4.to_string()]);
            if let Some(v6) = config.ipv6 {
                args.extend(["-l".into(), v6.to_string()]);
            }
            started(
                "bgpd",
                spec(&r, "bgpd", Path::new(FRR_LIBEXEC).join("bgpd"), args),
            )?;
        }
        RouterKind::Gobgp => {
            let conf = r.dir.join("gobgpd.toml");
            std::fs::write(&conf, gobgp_config(config))?;
            let args = vec![
                "-f".into(),
                path(&conf),
                "-t".into(),
                "toml".into(),
                "-p".into(),
                "-l".into(),
                "info".into(),
                "--pprof-disable".into(),
                format!("--api-hosts=127.0.0.1:{GOBGP_API}"),
            ];
            started("gobgpd", spec(&r, "gobgpd", "gobgpd", args))?;
        }
    }
    let log = r.dir.join(match r.kind {
        RouterKind::Bird => "bird.log",
        RouterKind::Frr => "bgpd.log",
        RouterKind::Gobgp => "gobgpd.log",
    });
    wait_for(
        &format!("the external router ({}) answers", r.kind.as_str()),
        timeout,
        || sessions(&r).ok().map(drop),
        || log_tail(&log, 15),
    )
}

fn chown_to_frr(dir: &Path) -> anyhow::Result<()> {
    use nix::unistd::{Group, User, chown};
    use std::os::unix::fs::PermissionsExt;
    let user =
        User::from_name("frr")?.context("no user frr: install frr (scripts/install-deps.sh)")?;
    let group =
        Group::from_name("frr")?.context("no group frr: install frr (scripts/install-deps.sh)")?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut paths = vec![dir.to_owned()];
    paths.extend(std::fs::read_dir(dir)?.filter_map(|e| Some(e.ok()?.path())));
    for p in paths {
        chown(&p, Some(user.uid), Some(group.gid))
            .with_context(|| format!("cannot chown {} to frr", p.display()))?;
    }
    Ok(())
}

fn query(r: &RouterState, argv: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &r.netns])
        .args(argv)
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cli(r: &RouterState, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = match r.kind {
        RouterKind::Bird => vec!["birdc".into(), "-s".into(), path(&r.dir.join("bird.ctl"))],
        RouterKind::Frr => vec!["vtysh".into(), "--vty_socket".into(), path(&r.dir)],
        RouterKind::Gobgp => vec![
            "gobgp".into(),
            "-u".into(),
            "127.0.0.1".into(),
            "-p".into(),
            GOBGP_API.to_string(),
        ],
    };
    if r.kind == RouterKind::Frr {
        for a in args {
            v.extend(["-c".into(), (*a).to_owned()]);
        }
    } else {
        v.extend(args.iter().map(|a| (*a).to_owned()));
    }
    v
}

/// The router's BGP sessions, as it reports them.
pub fn sessions(r: &RouterState) -> anyhow::Result<Vec<NeighborStatus>> {
    Ok(match r.kind {
        RouterKind::Bird => {
            let text = query(r, &cli(r, &["show", "protocols"]))?;
            let by_proto: BTreeMap<String, IpAddr> = peers_in_config(r)?
                .into_iter()
                .map(|a| (bird_proto(a), a))
                .collect();
            parse::bird_protocols(&text)
                .into_iter()
                .filter_map(|(name, state)| {
                    by_proto
                        .get(&name)
                        .map(|&address| NeighborStatus { address, state })
                })
                .collect()
        }
        RouterKind::Frr => parse::frr_neighbors(&query(r, &cli(r, &["show bgp neighbors json"]))?)?,
        RouterKind::Gobgp => parse::gobgp_neighbors(&query(r, &cli(r, &["neighbor", "-j"]))?)?,
    })
}

/// The best paths the router learned from the nodes (both families with `--ipv6`).
pub fn learned(r: &RouterState) -> anyhow::Result<RouteMap> {
    let fams: &[&str] = if r.ipv6.is_some() {
        &["ipv4", "ipv6"]
    } else {
        &["ipv4"]
    };
    Ok(match r.kind {
        RouterKind::Bird => {
            let by_proto: BTreeMap<String, IpAddr> = peers_in_config(r)?
                .into_iter()
                .map(|a| (bird_proto(a), a))
                .collect();
            parse::bird_routes(&query(r, &cli(r, &["show", "route", "all"]))?, &by_proto)?
        }
        RouterKind::Frr => {
            let mut m = RouteMap::new();
            for f in fams {
                let text = query(r, &cli(r, &[&format!("show bgp {f} unicast json")]))?;
                m.extend(parse::frr_routes(&text)?);
            }
            m
        }
        RouterKind::Gobgp => {
            let mut m = RouteMap::new();
            for f in fams {
                let text = query(r, &cli(r, &["global", "rib", "-j", "-a", f]))?;
                m.extend(parse::gobgp_rib(&text)?);
            }
            m
        }
    })
}

/// The peers named in BIRD's generated configuration (`neighbor ADDR as N;`).
fn peers_in_config(r: &RouterState) -> anyhow::Result<Vec<IpAddr>> {
    let text = std::fs::read_to_string(r.dir.join("bird.conf"))
        .with_context(|| format!("cannot read {}", r.dir.join("bird.conf").display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("neighbor ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v6: bool) -> RouterConfig {
        let mut peers = vec![
            ("198.18.0.11".parse().unwrap(), 64512),
            ("198.18.0.12".parse().unwrap(), 64512),
        ];
        if v6 {
            peers.push(("fd00:198:18::b".parse().unwrap(), 64512));
        }
        RouterConfig {
            ipv4: "198.18.0.1".parse().unwrap(),
            ipv6: v6.then(|| "fd00:198:18::1".parse().unwrap()),
            asn: 65001,
            peers,
        }
    }

    #[test]
    fn bird_peers_each_node_in_its_own_family_and_installs_what_it_learns() {
        let c = bird_config(&config(true));
        assert!(
            c.contains(
                "protocol kernel k4 { ipv4 { import none; export where source = RTS_BGP; }; }"
            ),
            "{c}"
        );
        assert!(c.contains("protocol kernel k6"), "{c}");
        assert!(
            c.contains("protocol bgp n198_18_0_11 {\n  local 198.18.0.1 as 65001;\n  neighbor 198.18.0.11 as 64512;"),
            "{c}"
        );
        assert!(
            c.contains("protocol bgp nfd00_198_18__b {\n  local fd00:198:18::1 as 65001;\n  neighbor fd00:198:18::b as 64512;"),
            "{c}"
        );
        let v6 = &c[c.find("nfd00_198_18__b").unwrap()..];
        assert!(v6.contains("ipv6 { import all; export all; }"), "{v6}");
        assert!(!bird_config(&config(false)).contains("k6"));
    }

    #[test]
    fn frr_activates_each_neighbour_in_its_family_only() {
        let c = frr_config(&config(true));
        let v4 = &c[c.find("address-family ipv4").unwrap()..c.find("address-family ipv6").unwrap()];
        assert!(v4.contains("neighbor 198.18.0.12 activate"), "{c}");
        assert!(!v4.contains("fd00"), "{c}");
        assert!(
            c.contains(" neighbor fd00:198:18::b remote-as 64512"),
            "{c}"
        );
        assert!(!frr_config(&config(false)).contains("address-family ipv6"));
    }

    #[test]
    fn gobgp_lists_both_local_addresses_and_a_family_per_neighbour() {
        let c = gobgp_config(&config(true));
        assert!(
            c.contains("local-address-list = [\"198.18.0.1\", \"fd00:198:18::1\"]"),
            "{c}"
        );
        assert_eq!(c.matches("[[neighbors]]").count(), 3);
        assert_eq!(c.matches("ipv6-unicast").count(), 1);
    }
}
