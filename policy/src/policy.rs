//! One NetworkPolicy compiled on its own: which pods it selects, which directions it isolates,
//! its ingress and egress chains for each family, and the ipsets its rules refer to. Nothing
//! here depends on which pods exist: membership lives in the sets, so a pod that starts or stops
//! matching a peer changes a set, never a chain.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use margay_api::Selector;
use margay_api::k8s::{
    IPBlock, IntOrString, LabelSelector, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use margay_api::selector::selector_from_label_selector;

use crate::model::{Family, PolicyKey, Protocol, proto_name};
use crate::names::{ACCEPT_MARK, policy_egress_chain, policy_ingress_chain, set_name};
use crate::rules::{Rule, SetType};

/// Which pods a pod peer's namespaces are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceMatch {
    /// The policy's own namespace (a peer with only a podSelector).
    Is(String),
    /// Namespaces whose labels match.
    Selected(Selector),
}

/// What a logical set holds; each is written as one ipset per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetSpec {
    /// The addresses of pods matching `pods` in namespaces matching `namespaces`.
    Pods {
        /// The namespaces.
        namespaces: NamespaceMatch,
        /// The pods within them.
        pods: Selector,
    },
    /// An ipBlock: `cidr` without `except` (only in the family of `cidr`).
    Block {
        /// The block.
        cidr: IpNet,
        /// Holes in it.
        except: Vec<IpNet>,
    },
    /// `address,proto:port` of every pod with a container port of this name and protocol.
    NamedPort {
        /// The port's name.
        name: String,
        /// Its protocol.
        protocol: Protocol,
    },
}

impl SetSpec {
    /// A text that identifies what the set holds; its hash names the set.
    pub fn identity(&self) -> String {
        match self {
            SetSpec::Pods { namespaces, pods } => match namespaces {
                NamespaceMatch::Is(ns) => format!("pods ns={ns} sel={pods}"),
                NamespaceMatch::Selected(s) => format!("pods nssel={s} sel={pods}"),
            },
            SetSpec::Block { cidr, except } => {
                let ex: Vec<String> = except.iter().map(ToString::to_string).collect();
                format!("block {cidr} except {}", ex.join(","))
            }
            SetSpec::NamedPort { name, protocol } => {
                format!("port {name}/{}", proto_name(*protocol))
            }
        }
    }

    /// The letter in the set's name for its kind.
    fn kind_letter(&self) -> char {
        match self {
            SetSpec::Pods { .. } => 's',
            SetSpec::Block { .. } => 'b',
            SetSpec::NamedPort { .. } => 'n',
        }
    }

    /// The ipset type.
    pub fn set_type(&self) -> SetType {
        match self {
            SetSpec::NamedPort { .. } => SetType::IpPort,
            _ => SetType::Net,
        }
    }

    /// The ipset of this set in `family`.
    pub fn name(&self, family: Family) -> String {
        set_name(family, self.kind_letter(), &self.identity())
    }

    /// The families this set exists in (an ipBlock only in its own).
    pub fn families(&self) -> Vec<Family> {
        match self {
            SetSpec::Block { cidr, .. } => vec![Family::of(&cidr.addr())],
            _ => Family::ALL.to_vec(),
        }
    }
}

/// A policy compiled on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    /// Its key.
    pub key: PolicyKey,
    /// The pods (of its namespace) it applies to.
    pub pod_selector: Selector,
    /// It isolates its pods for ingress.
    pub ingress: bool,
    /// It isolates its pods for egress.
    pub egress: bool,
    /// Its chains: (family, name) → rules.
    pub chains: BTreeMap<(Family, String), Vec<Rule>>,
    /// The sets its rules refer to, by identity.
    pub sets: BTreeMap<String, SetSpec>,
    /// Parts that could not be compiled (they match nothing, so they allow nothing).
    pub warnings: Vec<String>,
}

/// Compiles a policy. Parts the API server would have refused (a bad selector operator, a bad
/// CIDR, an unknown protocol) match nothing and are reported in `warnings`: an invalid rule
/// never allows more than it says.
pub fn compile(key: &PolicyKey, spec: &NetworkPolicySpec) -> CompiledPolicy {
    let mut c = Compiling {
        key: key.clone(),
        sets: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let pod_selector = spec
        .pod_selector
        .as_ref()
        .map(|s| c.selector(s, "spec.podSelector"))
        .unwrap_or_else(|| Some(Selector::all()));
    let types: Option<Vec<&str>> = spec
        .policy_types
        .as_ref()
        .map(|t| t.iter().map(String::as_str).collect());
    // Kubernetes' defaults: Ingress always, Egress when the policy has egress rules.
    let (ingress, egress) = match &types {
        Some(t) => (t.contains(&"Ingress"), t.contains(&"Egress")),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    };
    let mut chains = BTreeMap::new();
    for family in Family::ALL {
        if ingress {
            let mut rules = Vec::new();
            for (i, r) in spec.ingress.iter().flatten().enumerate() {
                rules.extend(c.rule(
                    family,
                    Direction::In,
                    i,
                    r.from.as_deref(),
                    r.ports.as_deref(),
                ));
            }
            chains.insert((family, policy_ingress_chain(key)), rules);
        }
        if egress {
            let mut rules = Vec::new();
            for (i, r) in spec.egress.iter().flatten().enumerate() {
                rules.extend(c.rule(
                    family,
                    Direction::Out,
                    i,
                    r.to.as_deref(),
                    r.ports.as_deref(),
                ));
            }
            chains.insert((family, policy_egress_chain(key)), rules);
        }
    }
    let mut seen = BTreeSet::new();
    c.warnings.retain(|w| seen.insert(w.clone()));
    CompiledPolicy {
        key: key.clone(),
        // A pod selector that cannot be compiled selects no pod (so isolates none).
        pod_selector: pod_selector.unwrap_or_else(|| Selector::from_expr(never())),
        ingress,
        egress,
        chains,
        sets: c.sets,
        warnings: c.warnings,
    }
}

fn never() -> margay_api::selector::Expr {
    use margay_api::selector::Expr;
    Expr::Not(Box::new(Expr::All))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

impl Direction {
    fn peer_dir(self) -> &'static str {
        match self {
            Direction::In => "src",
            Direction::Out => "dst",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
    fn field(self) -> (&'static str, &'static str) {
        match self {
            Direction::In => ("ingress", "from"),
            Direction::Out => ("egress", "to"),
        }
    }
}

struct Compiling {
    key: PolicyKey,
    sets: BTreeMap<String, SetSpec>,
    warnings: Vec<String>,
}

impl Compiling {
    fn selector(&mut self, s: &LabelSelector, field: &str) -> Option<Selector> {
        match selector_from_label_selector(s) {
            Ok(s) => Some(s),
            Err(e) => {
                self.warnings
                    .push(format!("{field}.{}: {}", e.field(), e.reason()));
                None
            }
        }
    }

    fn use_set(&mut self, spec: SetSpec, family: Family) -> String {
        let name = spec.name(family);
        self.sets.entry(spec.identity()).or_insert(spec);
        name
    }

    /// The match of one peer in `family`: `Some(None)` for any address, `Some(Some(m))` a
    /// match, `None` when the peer matches nothing in this family.
    fn peer(
        &mut self,
        family: Family,
        dir: Direction,
        field: &str,
        p: &NetworkPolicyPeer,
    ) -> Option<String> {
        if let Some(b) = &p.ip_block {
            let spec = self.block(b, field)?;
            if !spec.families().contains(&family) {
                return None;
            }
            let name = self.use_set(spec, family);
            return Some(format!("-m set --match-set {name} {}", dir.peer_dir()));
        }
        let namespaces = match &p.namespace_selector {
            Some(s) => {
                NamespaceMatch::Selected(self.selector(s, &format!("{field}.namespaceSelector"))?)
            }
            None => NamespaceMatch::Is(self.key.0.clone()),
        };
        let pods = match &p.pod_selector {
            Some(s) => self.selector(s, &format!("{field}.podSelector"))?,
            None => Selector::all(),
        };
        let name = self.use_set(SetSpec::Pods { namespaces, pods }, family);
        Some(format!("-m set --match-set {name} {}", dir.peer_dir()))
    }

    fn block(&mut self, b: &IPBlock, field: &str) -> Option<SetSpec> {
        let cidr = match b.cidr.parse::<IpNet>() {
            Ok(c) => c.trunc(),
            Err(_) => {
                self.warnings
                    .push(format!("{field}.ipBlock.cidr: {:?} is not a CIDR", b.cidr));
                return None;
            }
        };
        let mut except = Vec::new();
        for (i, e) in b.except.iter().flatten().enumerate() {
            match e.parse::<IpNet>() {
                Ok(e) if cidr.contains(&e.trunc()) => except.push(e.trunc()),
                _ => self.warnings.push(format!(
                    "{field}.ipBlock.except[{i}]: {e:?} is not a CIDR within {cidr}; ignored"
                )),
            }
        }
        except.sort();
        except.dedup();
        Some(SetSpec::Block { cidr, except })
    }

    /// The match of one port in `family`, or `None` when it matches nothing.
    fn port(&mut self, family: Family, field: &str, p: &NetworkPolicyPort) -> Option<String> {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                self.warnings.push(format!(
                    "{field}.protocol: {other:?} is not one of TCP, UDP, SCTP"
                ));
                return None;
            }
        };
        let proto = proto_name(protocol);
        match &p.port {
            None => Some(format!("-p {proto}")),
            Some(IntOrString::Int(n)) => {
                let Ok(start) = u16::try_from(*n) else {
                    self.warnings
                        .push(format!("{field}.port: {n} is not a port number"));
                    return None;
                };
                match p.end_port {
                    Some(end) if end > *n => match u16::try_from(end) {
                        Ok(end) => Some(format!("-p {proto} -m {proto} --dport {start}:{end}")),
                        Err(_) => {
                            self.warnings
                                .push(format!("{field}.endPort: {end} is not a port number"));
                            None
                        }
                    },
                    Some(end) if end < *n => {
                        self.warnings.push(format!(
                            "{field}.endPort: {end} is below port {n}; the range is empty"
                        ));
                        None
                    }
                    _ => Some(format!("-p {proto} -m {proto} --dport {start}")),
                }
            }
            Some(IntOrString::String(name)) => {
                if p.end_port.is_some() {
                    self.warnings.push(format!(
                        "{field}.endPort: not allowed with the named port {name:?}"
                    ));
                    return None;
                }
                let set = self.use_set(
                    SetSpec::NamedPort {
                        name: name.clone(),
                        protocol,
                    },
                    family,
                );
                Some(format!("-p {proto} -m set --match-set {set} dst,dst"))
            }
        }
    }

    /// The rules of one ingress or egress rule in `family`: for each peer and each port, a rule
    /// that marks the packet allowed; then a return if it is.
    fn rule(
        &mut self,
        family: Family,
        dir: Direction,
        index: usize,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Vec<Rule> {
        let (section, peer_field) = dir.field();
        let base = format!("spec.{section}[{index}]");
        let peer_matches: Vec<Option<String>> = match peers {
            None | Some([]) => vec![None],
            Some(peers) => {
                let found: Vec<Option<String>> = peers
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| {
                        self.peer(family, dir, &format!("{base}.{peer_field}[{j}]"), p)
                            .map(Some)
                    })
                    .collect();
                if found.is_empty() {
                    return Vec::new();
                }
                found
            }
        };
        let port_matches: Vec<Option<String>> = match ports {
            None | Some([]) => vec![None],
            Some(ports) => {
                let found: Vec<Option<String>> = ports
                    .iter()
                    .enumerate()
                    .filter_map(|(k, p)| {
                        self.port(family, &format!("{base}.ports[{k}]"), p)
                            .map(Some)
                    })
                    .collect();
                if found.is_empty() {
                    return Vec::new();
                }
                found
            }
        };
        let id = format!("pol={}/{} {}{index}", self.key.0, self.key.1, dir.label());
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for peer in &peer_matches {
            for port in &port_matches {
                let matches: Vec<&str> = [port.as_deref(), peer.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let mut body = matches.join(" ");
                if !body.is_empty() {
                    body.push(' ');
                }
                body.push_str(&format!(
                    "-j MARK --set-xmark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x}"
                ));
                if seen.insert(body.clone()) {
                    out.push(Rule::new(body, id.clone()));
                }
            }
        }
        out.push(Rule::new(
            format!("-m mark --mark {ACCEPT_MARK:#x}/{ACCEPT_MARK:#x} -j RETURN"),
            id,
        ));
        out
    }
}
