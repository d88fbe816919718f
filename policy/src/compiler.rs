//! The incremental compiler: holds the model and indexes over it, and keeps the desired chains
//! and ipsets up to date as objects come and go, noting which chains and sets changed.
//!
//! Set membership is kept per set as a count of contributions per member, so a pod that enters
//! a selector adds its addresses to that selector's sets and marks only those sets dirty; chains
//! change only when a policy changes or a local pod starts or stops being selected by one.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Endpoint, EndpointKey, Family, PolicyKey, namespace_labels, proto_name};
use crate::names::{
    ACCEPT_MARK, FORWARD_CHAIN, FROM_WL_DISPATCH, IFACE_WILDCARD, TO_WL_DISPATCH,
    from_workload_chain, policy_egress_chain, policy_ingress_chain, source_check_chain,
    to_workload_chain,
};
use crate::policy::{CompiledPolicy, NamespaceMatch, SetSpec, compile};
use crate::rules::{Rule, SetDesc, ip_port_member, net_entries, net_member};
use margay_api::k8s::NetworkPolicySpec;

type Labels = BTreeMap<String, String>;
/// A chain's key: its family (table) and name.
pub type ChainKey = (Family, String);

#[derive(Debug, Clone)]
struct SetState {
    spec: SetSpec,
    /// Its ipset per family (hashing the identity is not free).
    names: BTreeMap<Family, String>,
    refs: usize,
    /// Per family: member → how many endpoints (or the block) contribute it.
    members: BTreeMap<Family, BTreeMap<String, usize>>,
}

/// What changed since the last [`Compiler::take_dirty`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Chains whose rules changed, appeared or went away.
    pub chains: BTreeSet<ChainKey>,
    /// ipsets (by name) whose members changed, or that appeared or went away.
    pub sets: BTreeSet<String>,
}

impl Dirty {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }
}

/// Everything desired at one moment, for tests and golden files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// ipset name → what it is and its members.
    pub sets: BTreeMap<String, (SetDesc, BTreeSet<String>)>,
    /// (family, chain) → rules.
    pub chains: BTreeMap<ChainKey, Vec<Rule>>,
}

impl Snapshot {
    /// A readable rendering: sets with members, then chains per family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, (desc, members)) in &self.sets {
            out.push_str(&format!(
                "set {name} {} {}\n",
                desc.kind.ipset_type(),
                desc.family.ipset_family()
            ));
            for m in members {
                out.push_str(&format!("  {m}\n"));
            }
        }
        for ((family, chain), rules) in &self.chains {
            out.push_str(&format!("chain {family:?} {chain}\n"));
            for r in rules {
                out.push_str(&format!("  {}  # {}\n", r.body, r.comment));
            }
        }
        out
    }
}

/// The incremental policy compiler.
#[derive(Debug, Clone)]
pub struct Compiler {
    endpoints: BTreeMap<EndpointKey, Endpoint>,
    by_namespace: BTreeMap<String, BTreeSet<EndpointKey>>,
    namespaces: BTreeMap<String, Labels>,
    policies: BTreeMap<PolicyKey, CompiledPolicy>,
    sets: BTreeMap<String, SetState>,
    /// Pod sets of one namespace (a peer with only a podSelector), by namespace.
    sets_in_ns: BTreeMap<String, BTreeSet<String>>,
    /// Sets any endpoint may contribute to (namespace selectors, named ports).
    global_sets: BTreeSet<String>,
    set_names: BTreeMap<String, (String, Family)>,
    local_chains: BTreeMap<EndpointKey, BTreeMap<ChainKey, Vec<Rule>>>,
    chains: BTreeMap<ChainKey, Vec<Rule>>,
    dirty: Dirty,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

impl Compiler {
    /// An empty model: the fixed chains (FORWARD's and the dispatch chains) only.
    pub fn new() -> Self {
        let mut c = Compiler {
            endpoints: BTreeMap::new(),
            by_namespace: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            sets: BTreeMap::new(),
            sets_in_ns: BTreeMap::new(),
            global_sets: BTreeSet::new(),
            set_names: BTreeMap::new(),
            local_chains: BTreeMap::new(),
            chains: BTreeMap::new(),
            dirty: Dirty::default(),
        };
        for family in Family::ALL {
            c.put_chain((family, FORWARD_CHAIN.to_owned()), forward_chain());
        }
        c.refresh_dispatch();
        c
    }

    /// The rules that hook our chains into the built-in chains of the filter table:
    /// (built-in chain, rule).
    pub fn hooks() -> Vec<(String, Rule)> {
        vec![(
            "FORWARD".to_owned(),
            Rule::new(format!("-j {FORWARD_CHAIN}"), "hook forward"),
        )]
    }

    // ---- inputs ----

    /// Adds or replaces an endpoint. Its namespace is the key's.
    pub fn upsert_endpoint(&mut self, key: EndpointKey, mut ep: Endpoint) {
        if ep.namespace != key.0 {
            ep.namespace = key.0.clone();
        }
        let old = self.endpoints.get(&key).cloned();
        if old.as_ref() == Some(&ep) {
            return;
        }
        if let Some(o) = &old
            && o.namespace != ep.namespace
        {
            self.unindex(&key, &o.namespace);
        }
        self.by_namespace
            .entry(ep.namespace.clone())
            .or_default()
            .insert(key.clone());
        self.endpoints.insert(key.clone(), ep.clone());
        let old_ns = old.as_ref().map(|o| self.ns_labels(&o.namespace));
        let new_ns = self.ns_labels(&ep.namespace);
        self.refresh_sets_for(old.as_ref().zip(old_ns.as_ref()), Some((&ep, &new_ns)));
        self.refresh_local(&key);
    }

    /// Removes an endpoint.
    pub fn remove_endpoint(&mut self, key: &EndpointKey) {
        let Some(old) = self.endpoints.remove(key) else {
            return;
        };
        self.unindex(key, &old.namespace);
        let ns = self.ns_labels(&old.namespace);
        self.refresh_sets_for(Some((&old, &ns)), None);
        self.refresh_local(key);
    }

    /// Adds or replaces a namespace's labels.
    pub fn upsert_namespace(&mut self, name: &str, labels: Labels) {
        let new = namespace_labels(name, &labels);
        let old = self.ns_labels(name);
        self.namespaces.insert(name.to_owned(), new.clone());
        if old != new {
            self.namespace_changed(name, &old, &new);
        }
    }

    /// Removes a namespace (its pods keep only the implicit name label).
    pub fn remove_namespace(&mut self, name: &str) {
        let old = self.ns_labels(name);
        self.namespaces.remove(name);
        let new = self.ns_labels(name);
        if old != new {
            self.namespace_changed(name, &old, &new);
        }
    }

    /// Adds or replaces a policy.
    pub fn upsert_policy(&mut self, key: PolicyKey, spec: &NetworkPolicySpec) {
        let compiled = compile(&key, spec);
        let old = self.policies.get(&key).cloned();
        if old.as_ref() == Some(&compiled) {
            return;
        }
        for (id, spec) in &compiled.sets {
            self.ref_set(id, spec);
        }
        self.policies.insert(key.clone(), compiled.clone());
        if let Some(o) = &old {
            for id in o.sets.keys() {
                self.unref_set(id);
            }
            for ck in o.chains.keys() {
                if !compiled.chains.contains_key(ck) {
                    self.drop_chain(ck);
                }
            }
        }
        for (ck, rules) in &compiled.chains {
            self.put_chain(ck.clone(), rules.clone());
        }
        self.refresh_namespace_locals(&key.0);
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, key: &PolicyKey) {
        let Some(old) = self.policies.remove(key) else {
            return;
        };
        for id in old.sets.keys() {
            self.unref_set(id);
        }
        for ck in old.chains.keys() {
            self.drop_chain(ck);
        }
        self.refresh_namespace_locals(&key.0);
    }

    // ---- outputs ----

    /// Every desired chain.
    pub fn chains(&self) -> &BTreeMap<ChainKey, Vec<Rule>> {
        &self.chains
    }

    /// One ipset: what it is and its members, if desired.
    pub fn set(&self, name: &str) -> Option<(SetDesc, BTreeSet<String>)> {
        let (id, family) = self.set_names.get(name)?;
        let st = self.sets.get(id)?;
        let members = st
            .members
            .get(family)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        Some((
            SetDesc {
                family: *family,
                kind: st.spec.set_type(),
            },
            members,
        ))
    }

    /// Every desired ipset's name.
    pub fn set_names(&self) -> impl Iterator<Item = &String> {
        self.set_names.keys()
    }

    /// Everything desired.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sets: self
                .set_names
                .keys()
                .filter_map(|n| self.set(n).map(|s| (n.clone(), s)))
                .collect(),
            chains: self.chains.clone(),
        }
    }

    /// What changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// Problems in policies: (policy, what could not be compiled).
    pub fn warnings(&self) -> Vec<(PolicyKey, String)> {
        self.policies
            .iter()
            .flat_map(|(k, p)| p.warnings.iter().map(move |w| (k.clone(), w.clone())))
            .collect()
    }

    // ---- internals ----

    fn ns_labels(&self, name: &str) -> Labels {
        self.namespaces
            .get(name)
            .cloned()
            .unwrap_or_else(|| namespace_labels(name, &Labels::new()))
    }

    fn unindex(&mut self, key: &EndpointKey, ns: &str) {
        if let Some(s) = self.by_namespace.get_mut(ns) {
            s.remove(key);
            if s.is_empty() {
                self.by_namespace.remove(ns);
            }
        }
    }

    fn put_chain(&mut self, key: ChainKey, rules: Vec<Rule>) {
        if self.chains.get(&key) != Some(&rules) {
            self.chains.insert(key.clone(), rules);
            self.dirty.chains.insert(key);
        }
    }

    fn drop_chain(&mut self, key: &ChainKey) {
        if self.chains.remove(key).is_some() {
            self.dirty.chains.insert(key.clone());
        }
    }

    fn namespace_changed(&mut self, name: &str, old: &Labels, new: &Labels) {
        let keys: Vec<EndpointKey> = self
            .by_namespace
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        // Only namespace selectors look at a namespace's labels.
        let ids: Vec<String> = self
            .global_sets
            .iter()
            .filter(|id| matches!(self.sets[*id].spec, SetSpec::Pods { .. }))
            .cloned()
            .collect();
        for k in keys {
            let ep = self.endpoints[&k].clone();
            for id in &ids {
                let spec = &self.sets[id].spec;
                let before = contribution(spec, &ep, old);
                let after = contribution(spec, &ep, new);
                if before != after {
                    self.change_members(id, &before, &after);
                }
            }
        }
    }

    /// Moves an endpoint's contributions to every set from `old` to `new`. Only sets the
    /// endpoint can be in are looked at: its namespace's pod sets and the global ones.
    fn refresh_sets_for(
        &mut self,
        old: Option<(&Endpoint, &Labels)>,
        new: Option<(&Endpoint, &Labels)>,
    ) {
        let mut ids: BTreeSet<String> = self.global_sets.clone();
        for ep in [old.map(|o| o.0), new.map(|n| n.0)].into_iter().flatten() {
            if let Some(s) = self.sets_in_ns.get(&ep.namespace) {
                ids.extend(s.iter().cloned());
            }
        }
        for id in ids {
            let spec = &self.sets[&id].spec;
            let before = old
                .map(|(e, l)| contribution(spec, e, l))
                .unwrap_or_default();
            let after = new
                .map(|(e, l)| contribution(spec, e, l))
                .unwrap_or_default();
            if before != after {
                self.change_members(&id, &before, &after);
            }
        }
    }

    fn change_members(&mut self, id: &str, remove: &[(Family, String)], add: &[(Family, String)]) {
        let Some(st) = self.sets.get_mut(id) else {
            return;
        };
        let mut touched = BTreeSet::new();
        for (f, m) in add {
            let c = st
                .members
                .entry(*f)
                .or_default()
                .entry(m.clone())
                .or_insert(0);
            *c += 1;
            if *c == 1 {
                touched.insert(*f);
            }
        }
        for (f, m) in remove {
            let fam = st.members.entry(*f).or_default();
            if let Some(c) = fam.get_mut(m) {
                *c -= 1;
                if *c == 0 {
                    fam.remove(m);
                    touched.insert(*f);
                }
            }
        }
        for f in touched {
            if let Some(name) = st.names.get(&f) {
                self.dirty.sets.insert(name.clone());
            }
        }
    }

    fn ref_set(&mut self, id: &str, spec: &SetSpec) {
        if let Some(st) = self.sets.get_mut(id) {
            st.refs += 1;
            return;
        }
        let mut members: BTreeMap<Family, BTreeMap<String, usize>> = BTreeMap::new();
        if let SetSpec::Block { cidr, except } = spec {
            let f = Family::of(&cidr.addr());
            let m = members.entry(f).or_default();
            for n in net_entries(*cidr) {
                m.insert(net_member(n), 1);
            }
            for e in except {
                for n in net_entries(*e) {
                    m.insert(format!("{} nomatch", net_member(n)), 1);
                }
            }
        }
        // Only the endpoints that can be in the set: those of its namespace, or of the
        // namespaces its selector matches, or (named ports) all. Endpoints are keyed by
        // (namespace, name), so a namespace's are one range of the map.
        let namespaces: Vec<&String> = match spec {
            SetSpec::Block { .. } => Vec::new(),
            SetSpec::Pods {
                namespaces: NamespaceMatch::Is(ns),
                ..
            } => self
                .by_namespace
                .get_key_value(ns)
                .map(|(k, _)| k)
                .into_iter()
                .collect(),
            SetSpec::Pods {
                namespaces: NamespaceMatch::Selected(sel),
                ..
            } => self
                .by_namespace
                .keys()
                .filter(|ns| sel.matches(&self.ns_labels(ns)))
                .collect(),
            SetSpec::NamedPort { .. } => self.by_namespace.keys().collect(),
        };
        for ns in namespaces {
            let labels = self.ns_labels(ns);
            let from = (ns.clone(), String::new());
            for (_, ep) in self.endpoints.range(from..).take_while(|(k, _)| k.0 == *ns) {
                for (f, m) in contribution(spec, ep, &labels) {
                    *members.entry(f).or_default().entry(m).or_insert(0) += 1;
                }
            }
        }
        match spec {
            SetSpec::Block { .. } => {}
            SetSpec::Pods {
                namespaces: NamespaceMatch::Is(ns),
                ..
            } => {
                self.sets_in_ns
                    .entry(ns.clone())
                    .or_default()
                    .insert(id.to_owned());
            }
            _ => {
                self.global_sets.insert(id.to_owned());
            }
        }
        let mut names = BTreeMap::new();
        for f in spec.families() {
            let name = spec.name(f);
            self.set_names.insert(name.clone(), (id.to_owned(), f));
            self.dirty.sets.insert(name.clone());
            names.insert(f, name);
        }
        self.sets.insert(
            id.to_owned(),
            SetState {
                spec: spec.clone(),
                names,
                refs: 1,
                members,
            },
        );
    }

    fn unref_set(&mut self, id: &str) {
        let Some(st) = self.sets.get_mut(id) else {
            return;
        };
        st.refs -= 1;
        if st.refs > 0 {
            return;
        }
        let st = self.sets.remove(id).expect("present");
        self.global_sets.remove(id);
        if let SetSpec::Pods {
            namespaces: NamespaceMatch::Is(ns),
            ..
        } = &st.spec
            && let Some(ids) = self.sets_in_ns.get_mut(ns)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.sets_in_ns.remove(ns);
            }
        }
        for name in st.names.into_values() {
            self.set_names.remove(&name);
            self.dirty.sets.insert(name);
        }
    }

    /// Recomputes the chains of the namespace's local endpoints (those that have chains; an
    /// endpoint gets its first ones when it is upserted).
    fn refresh_namespace_locals(&mut self, ns: &str) {
        let from = (ns.to_owned(), String::new());
        let keys: Vec<EndpointKey> = self
            .local_chains
            .range(from..)
            .take_while(|(k, _)| k.0 == ns)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.refresh_local(&k);
        }
    }

    /// Recomputes a local endpoint's chains (or removes them when it is gone or not local).
    fn refresh_local(&mut self, key: &EndpointKey) {
        let new = match self.endpoints.get(key) {
            Some(ep) if ep.local && !ep.iface.is_empty() => self.endpoint_chains(ep),
            _ => BTreeMap::new(),
        };
        let old = self.local_chains.remove(key).unwrap_or_default();
        let iface_set_changed = old.keys().collect::<BTreeSet<_>>() != new.keys().collect();
        for ck in old.keys() {
            if !new.contains_key(ck) {
                self.drop_chain(ck);
            }
        }
        for (ck, rules) in &new {
            self.put_chain(ck.clone(), rules.clone());
        }
        if !new.is_empty() {
            self.local_chains.insert(key.clone(), new);
        }
        if iface_set_changed {
            self.refresh_dispatch();
        }
    }

    fn endpoint_chains(&self, ep: &Endpoint) -> BTreeMap<ChainKey, Vec<Rule>> {
        let ns = ep.namespace.clone();
        let selecting: Vec<&CompiledPolicy> = self
            .policies
            .range(PolicyKey(ns.clone(), String::new())..)
            .take_while(|(k, _)| k.0 == ns)
            .filter(|(_, p)| p.pod_selector.matches(&ep.labels))
            .map(|(_, p)| p)
            .collect();
        let mut out = BTreeMap::new();
        let accept = format!("{ACCEPT_MARK:#x}/{ACCEPT_MARK:#x}");
        let clear = format!("-j MARK --set-xmark 0x0/{ACCEPT_MARK:#x}");
        let returned = format!("-m mark --mark {accept} -j RETURN");
        for family in Family::ALL {
            // To the pod: its ingress policies.
            let mut tw = Vec::new();
            let ingress: Vec<&&CompiledPolicy> = selecting.iter().filter(|p| p.ingress).collect();
            if !ingress.is_empty() {
                tw.push(Rule::new(clear.clone(), "clear mark"));
                for p in &ingress {
                    let id = format!("pol={}/{}", p.key.0, p.key.1);
                    tw.push(Rule::new(
                        format!("-j {}", policy_ingress_chain(&p.key)),
                        id.clone(),
                    ));
                    tw.push(Rule::new(returned.clone(), id));
                }
                tw.push(Rule::new("-j DROP", "default deny ingress"));
            }
            out.insert((family, to_workload_chain(&ep.iface)), tw);

            // From the pod: only its own addresses, then its egress policies.
            let mut fw = Vec::new();
            let own: Vec<String> = ep
                .ips
                .iter()
                .filter(|ip| Family::of(ip) == family)
                .map(|ip| ipnet::IpNet::from(*ip).to_string())
                .collect();
            match own.as_slice() {
                [] => fw.push(Rule::new(
                    "-j DROP",
                    "anti-spoof: no address of this family",
                )),
                [one] => fw.push(Rule::new(format!("! -s {one} -j DROP"), "anti-spoof")),
                many => {
                    let sp = source_check_chain(&ep.iface);
                    let mut rules: Vec<Rule> = many
                        .iter()
                        .map(|a| Rule::new(format!("-s {a} -j RETURN"), "anti-spoof: own address"))
                        .collect();
                    rules.push(Rule::new("-j DROP", "anti-spoof"));
                    out.insert((family, sp.clone()), rules);
                    fw.push(Rule::new(format!("-j {sp}"), "anti-spoof"));
                }
            }
            let egress: Vec<&&CompiledPolicy> = selecting.iter().filter(|p| p.egress).collect();
            if !egress.is_empty() {
                fw.push(Rule::new(clear.clone(), "clear mark"));
                for p in &egress {
                    let id = format!("pol={}/{}", p.key.0, p.key.1);
                    fw.push(Rule::new(
                        format!("-j {}", policy_egress_chain(&p.key)),
                        id.clone(),
                    ));
                    fw.push(Rule::new(returned.clone(), id));
                }
                fw.push(Rule::new("-j DROP", "default deny egress"));
            }
            out.insert((family, from_workload_chain(&ep.iface)), fw);
        }
        out
    }

    fn refresh_dispatch(&mut self) {
        let mut ifaces: Vec<&str> = self
            .local_chains
            .keys()
            .filter_map(|k| self.endpoints.get(k))
            .map(|e| e.iface.as_str())
            .collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        // A pod interface the model does not know yet (its endpoint's chains are still being
        // programmed) sends nothing, as Felix's "unknown interface" drop: otherwise a new pod
        // could send from any address until its anti-spoofing rule is in.
        let from: Vec<Rule> = ifaces
            .iter()
            .map(|i| {
                Rule::new(
                    format!("-i {i} -g {}", from_workload_chain(i)),
                    format!("from {i}"),
                )
            })
            .chain([Rule::new("-j DROP", "from an unknown pod interface")])
            .collect();
        let to: Vec<Rule> = ifaces
            .iter()
            .map(|i| {
                Rule::new(
                    format!("-o {i} -g {}", to_workload_chain(i)),
                    format!("to {i}"),
                )
            })
            .collect();
        for family in Family::ALL {
            self.put_chain((family, FROM_WL_DISPATCH.to_owned()), from.clone());
            self.put_chain((family, TO_WL_DISPATCH.to_owned()), to.clone());
        }
    }
}

/// The chain FORWARD jumps to: replies pass, then a pod's egress policy, then the destination
/// pod's ingress policy (both for pod-to-pod traffic on one node), then what was allowed is
/// accepted. Traffic between the node and its own pods (INPUT, OUTPUT) is not filtered.
fn forward_chain() -> Vec<Rule> {
    let w = IFACE_WILDCARD;
    vec![
        Rule::new(
            format!("-i {w} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            "replies from pods",
        ),
        Rule::new(
            format!("-o {w} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            "replies to pods",
        ),
        Rule::new(format!("-i {w} -j {FROM_WL_DISPATCH}"), "from pods"),
        Rule::new(format!("-o {w} -j {TO_WL_DISPATCH}"), "to pods"),
        Rule::new(format!("-i {w} -j ACCEPT"), "allowed from pods"),
        Rule::new(format!("-o {w} -j ACCEPT"), "allowed to pods"),
    ]
}

/// What an endpoint contributes to a set: (family, member) pairs.
fn contribution(spec: &SetSpec, ep: &Endpoint, ns_labels: &Labels) -> Vec<(Family, String)> {
    match spec {
        SetSpec::Pods { namespaces, pods } => {
            let ns_ok = match namespaces {
                NamespaceMatch::Is(ns) => *ns == ep.namespace,
                NamespaceMatch::Selected(s) => s.matches(ns_labels),
            };
            if !ns_ok || !pods.matches(&ep.labels) {
                return Vec::new();
            }
            ep.ips
                .iter()
                .map(|ip| (Family::of(ip), net_member(ipnet::IpNet::from(*ip))))
                .collect()
        }
        SetSpec::Block { .. } => Vec::new(),
        SetSpec::NamedPort { name, protocol } => {
            let mut out = Vec::new();
            for p in ep
                .ports
                .iter()
                .filter(|p| p.name == *name && p.protocol == *protocol)
            {
                for ip in &ep.ips {
                    out.push((
                        Family::of(ip),
                        ip_port_member(*ip, proto_name(p.protocol), p.port),
                    ));
                }
            }
            out
        }
    }
}
