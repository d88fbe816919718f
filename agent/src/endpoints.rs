//! The agent's side of the local API: addresses from IPAM, pod routes and sysctls in the
//! kernel, WorkloadEndpoints in the datastore.
//!
//! `allocate` takes addresses under the attachment's handle and remembers the attachment as
//! pending; `endpoint_up` records the endpoint and answers only once the pod's routes are
//! in the kernel (so a pod is reachable when CNI ADD returns); `endpoint_down` removes both;
//! how an endpoint is recorded depends on the datastore ([`Workloads`]): a stored
//! WorkloadEndpoint in etcd, annotations on the Pod in Kubernetes mode;
//! `release` frees exactly the handle's addresses. Every operation is idempotent, as CNI DEL must
//! be.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use margay_api::{WorkloadEndpoint, WorkloadEndpointSpec};
use margay_datastore::{EndpointId, Workloads};
use margay_ipam::{AssignArgs, IpamError, NodeAllocator, PodRequest};
use tokio::sync::Mutex;
use tracing::{info, instrument};

use crate::dataplane::sysctls::interface_sysctls;
use crate::dataplane::{RouteDriver, RouteTarget, SysctlDriver};
use crate::health::Readiness;
use crate::localapi::proto::{
    Allocate, Allocated, Applied, AppliedReply, Attachment, Done, EndpointDown, EndpointUp,
    ErrorKind, Gc, Release, StatusReply,
};
use crate::localapi::{ApiError, Handler};
use crate::policy::AppliedIndex;

/// One pod attachment the agent knows.
#[derive(Debug, Clone)]
struct Endpoint {
    namespace: String,
    wep_name: String,
    pod: String,
    container_id: Option<String>,
    host_ifname: Option<String>,
    addresses: Vec<IpNet>,
}

impl Endpoint {
    /// The endpoint a WorkloadEndpoint describes.
    fn of(w: &WorkloadEndpoint) -> Self {
        Endpoint {
            namespace: w.metadata.namespace.clone().unwrap_or_default(),
            wep_name: w.metadata.name.clone().unwrap_or_default(),
            pod: w.spec.pod.clone(),
            container_id: w.spec.container_id.clone(),
            host_ifname: Some(w.spec.interface_name.clone()),
            addresses: w
                .spec
                .ip_networks
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        }
    }

    fn id(&self) -> EndpointId {
        EndpointId {
            namespace: self.namespace.clone(),
            name: self.wep_name.clone(),
            pod: self.pod.clone(),
            container_id: self.container_id.clone(),
        }
    }
}

/// What the node announces for its pods over BGP beyond its blocks: the /32 (/128) of every
/// local pod whose address lies outside the node's own blocks (borrowed from another node's
/// block), since that block's route points at its owner.
struct Exports {
    speaker: margay_bgp::Speaker,
    own_blocks: Arc<Mutex<std::collections::BTreeSet<IpNet>>>,
    announced: Mutex<std::collections::BTreeSet<IpNet>>,
}

/// The local API over IPAM, the route and sysctl drivers and the endpoints' source.
pub struct LocalAgent {
    node: String,
    exports: Option<Exports>,
    ipam: NodeAllocator,
    workloads: Workloads,
    routes: Arc<Mutex<RouteDriver>>,
    sysctls: Arc<Mutex<SysctlDriver>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    readiness: Readiness,
    applied: Option<AppliedIndex>,
}

impl std::fmt::Debug for LocalAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAgent")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn ipam_error(e: IpamError) -> ApiError {
    let kind = match &e {
        IpamError::NoPool { .. }
        | IpamError::PoolsExhausted { .. }
        | IpamError::NodeAtMaxBlocks { .. } => ErrorKind::Exhausted,
        IpamError::NotInAnyPool { .. }
        | IpamError::AddressInUse { .. }
        | IpamError::StrictBlock { .. }
        | IpamError::BadAnnotation { .. }
        | IpamError::BadHandle { .. } => ErrorKind::Invalid,
        IpamError::Datastore { .. } | IpamError::TooManyConflicts { .. } => ErrorKind::NotReady,
        _ => ErrorKind::Internal,
    };
    ApiError::new(kind, with_causes(&e))
}

/// An error's message followed by its causes (`listing IP pools: datastore unavailable: …`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn datastore_error(what: &str, e: margay_datastore::Error) -> ApiError {
    let kind = if e.is_retryable() {
        ErrorKind::NotReady
    } else {
        ErrorKind::Internal
    };
    ApiError::new(kind, format!("{what}: {e}"))
}

fn attachment(a: Option<Attachment>) -> Result<Attachment, ApiError> {
    let a =
        a.ok_or_else(|| ApiError::new(ErrorKind::Invalid, "the request names no attachment"))?;
    if a.handle_id.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            "the attachment has an empty handle id",
        ));
    }
    Ok(a)
}

/// The labels the agent itself puts on a WorkloadEndpoint (the pod's own come from others).
fn own_labels(namespace: &str) -> [(String, String); 2] {
    [
        (
            margay_api::workload::LABEL_NAMESPACE.to_owned(),
            namespace.to_owned(),
        ),
        (
            margay_api::workload::LABEL_ORCHESTRATOR.to_owned(),
            margay_api::workload::ORCHESTRATOR_K8S.to_owned(),
        ),
    ]
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl LocalAgent {
    /// The handler of node `node`; endpoints are recorded in `workloads`.
    pub fn new(
        node: &str,
        ipam: NodeAllocator,
        workloads: Workloads,
        routes: Arc<Mutex<RouteDriver>>,
        sysctls: Arc<Mutex<SysctlDriver>>,
        readiness: Readiness,
    ) -> Self {
        Self {
            node: node.to_owned(),
            exports: None,
            ipam,
            workloads,
            routes,
            sysctls,
            endpoints: Mutex::new(HashMap::new()),
            readiness,
            applied: None,
        }
    }

    /// Answers `Applied` requests from what the policy task last programmed.
    pub fn with_applied(mut self, applied: AppliedIndex) -> Self {
        self.applied = Some(applied);
        self
    }

    /// Announces borrowed pod addresses through `speaker`; `own_blocks` are the node's blocks.
    pub fn with_exports(
        mut self,
        speaker: margay_bgp::Speaker,
        own_blocks: Arc<Mutex<std::collections::BTreeSet<IpNet>>>,
    ) -> Self {
        self.exports = Some(Exports {
            speaker,
            own_blocks,
            announced: Mutex::new(Default::default()),
        });
        self
    }

    /// Adds the endpoints this node already has (from the datastore, after a restart).
    pub async fn restore(&self, weps: &[WorkloadEndpoint]) {
        let mut known = self.endpoints.lock().await;
        for w in weps.iter().filter(|w| w.spec.node == self.node) {
            let Some(handle) = w.spec.ipam_handle_id.clone() else {
                continue;
            };
            known.insert(handle, Endpoint::of(w));
        }
    }

    /// Makes the announced borrowed addresses match the live endpoints and the node's blocks.
    pub async fn sync_exports(&self) {
        let Some(x) = &self.exports else { return };
        let own = x.own_blocks.lock().await.clone();
        let want: std::collections::BTreeSet<IpNet> = self
            .endpoints
            .lock()
            .await
            .values()
            .filter(|e| e.host_ifname.is_some())
            .flat_map(|e| e.addresses.iter().copied())
            .filter(|a| !own.iter().any(|b| b.contains(a)))
            .collect();
        let mut announced = x.announced.lock().await;
        for gone in announced.difference(&want) {
            let _ = x.speaker.withdraw(*gone);
        }
        for new in want.difference(&announced) {
            info!(address = %new, "announcing a borrowed address");
            let _ = x.speaker.originate(*new, None);
        }
        *announced = want;
    }

    /// The namespace, WorkloadEndpoint name and pod name of an attachment.
    fn identity(&self, a: &Attachment) -> (String, String, String) {
        let namespace = if a.namespace.is_empty() {
            "default".to_owned()
        } else {
            a.namespace.clone()
        };
        let workload = if a.pod.is_empty() {
            &a.container_id
        } else {
            &a.pod
        };
        let ifname = if a.ifname.is_empty() {
            "eth0"
        } else {
            &a.ifname
        };
        (
            namespace,
            WorkloadEndpoint::name_for(&self.node, workload, ifname),
            workload.clone(),
        )
    }

    /// Programs (or removes, with `None`) the routes of `addresses` and returns once the kernel
    /// has them, naming any that failed.
    async fn program(
        &self,
        addresses: &[IpNet],
        host_ifname: Option<&str>,
    ) -> Result<(), ApiError> {
        // Group commit: state what this endpoint needs, let go of the lock, then apply. Calls
        // that queue up meanwhile add theirs, so one batch to the kernel carries many pods and
        // the later calls find their routes written already.
        {
            let mut routes = self.routes.lock().await;
            for a in addresses {
                match host_ifname {
                    Some(dev) => routes.set(*a, RouteTarget::Device(dev.to_owned())),
                    None => routes.remove(a),
                }
            }
        }
        let mut routes = self.routes.lock().await;
        let report = routes.apply().await.map_err(|e| {
            ApiError::new(ErrorKind::Internal, format!("cannot program routes: {e}"))
        })?;
        let want = host_ifname.map(|dev| RouteTarget::Device(dev.to_owned()));
        let ours: Vec<String> = addresses
            .iter()
            .filter(|a| routes.applied(a) != want.as_ref())
            .map(|a| {
                let why = report
                    .failed
                    .iter()
                    .find(|(d, _)| d == a)
                    .map_or("not applied", |(_, e)| e.as_str());
                format!("{a}: {why}")
            })
            .collect();
        if ours.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::Internal,
                format!("the kernel refused routes: {}", ours.join("; ")),
            ))
        }
    }
}

#[async_trait::async_trait]
impl Handler for LocalAgent {
    #[instrument(skip_all, fields(handle = ?req.attachment.as_ref().map(|a| &a.handle_id)))]
    async fn allocate(&self, req: Allocate) -> Result<Allocated, ApiError> {
        let a = attachment(req.attachment)?;
        let ip_addrs = req
            .ip_addrs
            .iter()
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    ApiError::new(
                        ErrorKind::Invalid,
                        format!("requested address {s:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let mut attrs = BTreeMap::new();
        if !a.namespace.is_empty() {
            attrs.insert("namespace".to_owned(), a.namespace.clone());
        }
        attrs.insert(
            "pod".to_owned(),
            if a.pod.is_empty() {
                a.container_id.clone()
            } else {
                a.pod.clone()
            },
        );
        let args = AssignArgs {
            handle: a.handle_id.clone(),
            attrs,
            num_v4: req.num_v4 as usize,
            num_v6: req.num_v6 as usize,
            request: PodRequest {
                ipv4_pools: some(req.ipv4_pools),
                ipv6_pools: some(req.ipv6_pools),
                ip_addrs: (!ip_addrs.is_empty()).then_some(ip_addrs),
            },
        };
        // A repeated ADD (the runtime retried, or the plugin crashed after allocating) gets what
        // the handle already holds, never a second set of addresses.
        let held = self
            .ipam
            .ipam()
            .addresses_of(&a.handle_id)
            .await
            .map_err(ipam_error)?;
        let addresses: Vec<IpNet> = if held.is_empty() {
            let got = self
                .ipam
                .auto_assign_with(&args)
                .await
                .map_err(ipam_error)?;
            got.ips().into_iter().map(host_net).collect()
        } else {
            held.into_iter().map(host_net).collect()
        };
        let (namespace, wep_name, pod) = self.identity(&a);
        self.endpoints.lock().await.insert(
            a.handle_id.clone(),
            Endpoint {
                namespace,
                wep_name,
                pod,
                container_id: Some(a.container_id.clone()),
                host_ifname: None,
                addresses: addresses.clone(),
            },
        );
        info!(addresses = ?addresses, "allocated");
        Ok(Allocated {
            addresses: addresses.iter().map(ToString::to_string).collect(),
        })
    }

    #[instrument(skip_all, fields(handle = ?req.attachment.as_ref().map(|a| &a.handle_id), host = %req.host_ifname))]
    async fn endpoint_up(&self, req: EndpointUp) -> Result<Done, ApiError> {
        let a = attachment(req.attachment)?;
        let addresses = req
            .addresses
            .iter()
            .map(|s| {
                s.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                    ApiError::new(ErrorKind::Invalid, format!("address {s:?} is not a CIDR"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if req.host_ifname.is_empty() {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "endpoint_up needs the host-side interface name",
            ));
        }
        {
            let mut sysctls = self.sysctls.lock().await;
            let v4 = addresses.iter().any(|a| a.addr().is_ipv4());
            let v6 = addresses.iter().any(|a| a.addr().is_ipv6());
            sysctls.set(interface_sysctls(&req.host_ifname, v4, v6));
            let failed = sysctls.apply();
            if !failed.is_empty() {
                let names: Vec<String> = failed
                    .iter()
                    .map(|f| format!("{}: {}", f.name, f.error))
                    .collect();
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    format!("cannot set sysctls: {}", names.join("; ")),
                ));
            }
        }
        self.program(&addresses, Some(&req.host_ifname)).await?;
        let (namespace, wep_name, pod) = self.identity(&a);
        let spec = WorkloadEndpointSpec {
            orchestrator: "k8s".into(),
            node: self.node.clone(),
            pod: pod.clone(),
            container_id: Some(a.container_id.clone()),
            endpoint: if a.ifname.is_empty() {
                "eth0".into()
            } else {
                a.ifname.clone()
            },
            interface_name: req.host_ifname.clone(),
            mac: (!req.mac.is_empty()).then(|| req.mac.clone()),
            ip_networks: addresses.iter().map(ToString::to_string).collect(),
            ipam_handle_id: Some(a.handle_id.clone()),
            profiles: vec![format!("kns.{namespace}")],
            service_account_name: None,
            ports: Vec::new(),
        };
        let mut wep = WorkloadEndpoint::new(&wep_name, spec);
        wep.metadata.namespace = Some(namespace.clone());
        wep.metadata.labels = Some(own_labels(&namespace).into_iter().collect());
        // The pod's labels and named ports are written by others (the controller that copies
        // them in etcd mode; the Pod itself in Kubernetes mode): recording keeps them.
        self.workloads
            .record(&wep)
            .await
            .map_err(|e| datastore_error("cannot record the endpoint", e))?;
        self.endpoints.lock().await.insert(
            a.handle_id.clone(),
            Endpoint {
                namespace,
                wep_name,
                pod,
                container_id: Some(a.container_id.clone()),
                host_ifname: Some(req.host_ifname.clone()),
                addresses,
            },
        );
        self.sync_exports().await;
        Ok(Done {
            detail: format!("routes via {} programmed", req.host_ifname),
        })
    }

    #[instrument(skip_all, fields(handle = ?req.attachment.as_ref().map(|a| &a.handle_id)))]
    async fn endpoint_down(&self, req: EndpointDown) -> Result<Done, ApiError> {
        let a = attachment(req.attachment)?;
        let known = self.endpoints.lock().await.remove(&a.handle_id);
        let id = match &known {
            Some(e) => e.id(),
            None => {
                let (namespace, name, pod) = self.identity(&a);
                EndpointId {
                    namespace,
                    name,
                    pod,
                    container_id: (!a.container_id.is_empty()).then(|| a.container_id.clone()),
                }
            }
        };
        // After a restart the agent knows the endpoint from the datastore only.
        let (addresses, host) = match known {
            Some(e) => (e.addresses, e.host_ifname),
            None => match self.workloads.get(&id).await {
                // Another sandbox of the same pod owns the endpoint by now: not ours.
                Ok(Some(w))
                    if id.container_id.is_some()
                        && w.spec.container_id.is_some()
                        && w.spec.container_id != id.container_id =>
                {
                    return Ok(Done {
                        detail: "the endpoint belongs to another sandbox; left alone".into(),
                    });
                }
                Ok(Some(w)) => (
                    w.spec
                        .ip_networks
                        .iter()
                        .filter_map(|s| s.parse().ok())
                        .collect(),
                    Some(w.spec.interface_name.clone()),
                ),
                Ok(None) => (Vec::new(), None),
                Err(e) => return Err(datastore_error("cannot read the endpoint", e)),
            },
        };
        self.program(&addresses, None).await?;
        if let Some(host) = &host {
            self.sysctls.lock().await.forget_interface(host);
        }
        self.sync_exports().await;
        self.workloads
            .remove(&id)
            .await
            .map_err(|e| datastore_error("cannot remove the endpoint", e))?;
        Ok(Done {
            detail: format!("{} route(s) removed", addresses.len()),
        })
    }

    async fn release(&self, req: Release) -> Result<Done, ApiError> {
        let freed = self
            .ipam
            .release_handle(&req.handle_id)
            .await
            .map_err(ipam_error)?;
        Ok(Done {
            detail: format!("released {} address(es)", freed.len()),
        })
    }

    async fn status(&self) -> StatusReply {
        // Pods can be set up once the datastore and dataplane are in sync; BGP sessions matter to
        // the node's /readiness, not to whether a pod on it can be wired.
        let missing: Vec<String> = self
            .readiness
            .missing()
            .into_iter()
            .filter(|m| m.starts_with("datastore") || m.starts_with("dataplane"))
            .collect();
        StatusReply {
            ready: missing.is_empty(),
            reason: missing.join("; "),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    async fn gc(&self, req: Gc) -> Result<Done, ApiError> {
        // Only this node's endpoints of this network: another node's attachments are not ours.
        let weps = self
            .workloads
            .list()
            .await
            .map_err(|e| datastore_error("cannot list the endpoints", e))?;
        let prefix = format!("{}.", req.network);
        let mut released = 0;
        for w in weps {
            let Some(handle) = w.spec.ipam_handle_id.clone() else {
                continue;
            };
            if w.spec.node != self.node
                || !handle.starts_with(&prefix)
                || req.valid_handles.contains(&handle)
            {
                continue;
            }
            let att = Attachment {
                handle_id: handle.clone(),
                ..Default::default()
            };
            self.endpoints
                .lock()
                .await
                .insert(handle.clone(), Endpoint::of(&w));
            self.endpoint_down(EndpointDown {
                attachment: Some(att),
            })
            .await?;
            released += self
                .ipam
                .release_handle(&handle)
                .await
                .map_err(ipam_error)?
                .len();
        }
        Ok(Done {
            detail: format!("released {released} address(es) of stale attachments"),
        })
    }

    async fn applied(&self, req: Applied) -> Result<AppliedReply, ApiError> {
        match &self.applied {
            Some(idx) => idx.lookup(&req.kind, &req.namespace, &req.name),
            None => Err(ApiError::new(
                ErrorKind::NotReady,
                "network policy is not enforced by this agent",
            )),
        }
    }
}
