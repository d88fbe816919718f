//! The pod's wiring, over rtnetlink: a veth whose host side (`mgy…`, MAC ee:ee:ee:ee:ee:ee) stays
//! in the plugin's namespace and whose other side becomes `CNI_IFNAME` in the pod's namespace,
//! with the pod's /32 (/128) addresses and a default route via 169.254.1.1 (IPv6: via the host
//! side's link-local `fe80::ecee:eeff:feee:eeee`). The route *to* the pod is the agent's.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::naming::HOST_MAC;

/// The pod's default gateway (answered by proxy ARP on the host side).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 default gateway: the host side's link-local address from its fixed MAC.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

type Result<T> = std::result::Result<T, String>;

/// Runs `f` with an rtnetlink handle in the calling thread's namespace (`ns` None) or in the
/// namespace at `ns` (on a thread of its own, which enters it).
fn with_handle<T: Send>(
    ns: Option<&Path>,
    f: impl AsyncFnOnce(Handle) -> Result<T> + Send,
) -> Result<T> {
    let run = move || -> Result<T> {
        if let Some(path) = ns {
            let file = File::open(path)
                .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter network namespace {}: {e}", path.display()))?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        rt.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| format!("cannot open netlink: {e}"))?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    };
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .unwrap_or_else(|_| Err("netlink thread panicked".into()))
    })
}

async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(format!("cannot read link {name}: {e}")),
    }
}

fn mac_of(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Creates the veth and configures the pod side; returns the pod side's MAC. On error, what was
/// created is removed (deleting the host side deletes the pair).
pub fn create(
    netns: &Path,
    host_if: &str,
    pod_if: &str,
    addrs: &[IpNet],
    mtu: Option<u32>,
) -> Result<String> {
    let ns_file = File::open(netns)
        .map_err(|e| format!("cannot open network namespace {}: {e}", netns.display()))?;
    let fd = ns_file.as_raw_fd();
    let (h, p) = (host_if.to_owned(), pod_if.to_owned());
    // One request creates both ends, each with its final name in its own namespace (as the
    // reference ptp plugin does): moving a device between namespaces afterwards waits for an RCU
    // grace period under the RTNL lock, which serialised concurrent ADDs. The host side comes up
    // with it; the pod side cannot (the kernel pairs the ends only after creating the peer).
    with_handle(None, async move |handle| {
        let mut peer = LinkUnspec::new_with_name(&p).setns_by_fd(fd);
        let mut b = LinkVeth::new(&h, &p).address(HOST_MAC.to_vec()).up();
        if let Some(m) = mtu {
            peer = peer.mtu(m);
            b = b.mtu(m);
        }
        handle
            .link()
            .add(
                b.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("cannot create veth {h} with {p} in the pod's namespace: {e}"))
    })?;
    let (p, addrs) = (pod_if.to_owned(), addrs.to_vec());
    with_handle(Some(netns), async move |handle| {
        let l = link(&handle, &p)
            .await?
            .ok_or_else(|| format!("{p} is not in the pod's namespace"))?;
        let idx = l.header.index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| format!("cannot bring {p} up: {e}"))?;
        for a in &addrs {
            let mut req = handle.address().add(idx, a.addr(), a.max_prefix_len());
            if a.addr().is_ipv6() {
                // No duplicate address detection (as Calico): the address is ours alone on a
                // point-to-point veth, and a tentative address carries no traffic, so the pod
                // would not be reachable over IPv6 for a second or two after ADD returns.
                req.message_mut().attributes.push(
                    netlink_packet_route::address::AddressAttribute::Flags(
                        netlink_packet_route::address::AddressFlags::Nodad,
                    ),
                );
            }
            req.execute()
                .await
                .map_err(|e| format!("cannot add {a} to {p}: {e}"))?;
        }
        if addrs.iter().any(|a| a.addr().is_ipv4()) {
            let gw = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(GATEWAY_V4, 32)
                .output_interface(idx)
                .scope(RouteScope::Link)
                .build();
            handle
                .route()
                .add(gw)
                .execute()
                .await
                .map_err(|e| format!("cannot add the route to {GATEWAY_V4}: {e}"))?;
            let default = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(GATEWAY_V4)
                .output_interface(idx)
                .build();
            handle
                .route()
                .add(default)
                .execute()
                .await
                .map_err(|e| format!("cannot add the default route: {e}"))?;
        }
        if addrs.iter().any(|a| a.addr().is_ipv6()) {
            let default = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(GATEWAY_V6)
                .output_interface(idx)
                .build();
            handle
                .route()
                .add(default)
                .execute()
                .await
                .map_err(|e| format!("cannot add the IPv6 default route: {e}"))?;
        }
        Ok(mac_of(&l))
    })
    .inspect_err(|_| {
        let _ = delete(host_if);
    })
}

/// Deletes the host side (and with it the pod side); `Ok(false)` if it was not there.
pub fn delete(host_if: &str) -> Result<bool> {
    let h = host_if.to_owned();
    with_handle(None, async move |handle| match link(&handle, &h).await? {
        None => Ok(false),
        Some(l) => handle
            .link()
            .del(l.header.index)
            .execute()
            .await
            .map(|()| true)
            .map_err(|e| format!("cannot delete {h}: {e}")),
    })
}

/// Checks the pod side exists in `netns` with every address in `addrs`.
pub fn check(netns: &Path, pod_if: &str, addrs: &[IpAddr]) -> Result<()> {
    let (p, want) = (pod_if.to_owned(), addrs.to_vec());
    with_handle(Some(netns), async move |handle| {
        let l = link(&handle, &p)
            .await?
            .ok_or_else(|| format!("interface {p} is missing in the pod"))?;
        let mut have = Vec::new();
        let mut list = handle
            .address()
            .get()
            .set_link_index_filter(l.header.index)
            .execute();
        while let Some(m) = list
            .try_next()
            .await
            .map_err(|e| format!("cannot read addresses of {p}: {e}"))?
        {
            for a in &m.attributes {
                if let netlink_packet_route::address::AddressAttribute::Address(ip) = a {
                    have.push(*ip);
                }
            }
        }
        match want.iter().find(|w| !have.contains(w)) {
            Some(missing) => Err(format!("address {missing} is missing on {p} in the pod")),
            None => Ok(()),
        }
    })
}
