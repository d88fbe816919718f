//! The ipset driver: Margay's sets (`mgy…`), written with `ipset restore`.
//!
//! Writes come in two steps around the iptables write, so that no rule ever refers to a set that
//! does not exist: [`IpsetDriver::apply_updates`] creates new sets and adds and removes members
//! (before iptables, which may start to refer to the new sets), [`IpsetDriver::apply_removals`]
//! destroys sets no longer wanted (after iptables stopped referring to them). A set whose type or
//! family was changed behind our back is re-created (destroy, create) after iptables stopped
//! referring to it. Only sets named `mgy…` are read or touched.

use std::collections::{BTreeMap, BTreeSet};

use margay_policy::names::SET_PREFIX;
use margay_policy::{Family, SetDesc, SetType};
use tracing::debug;

use super::iptables::{IptablesError, run};

/// The most members a set may hold (the kernel's default, 65536, is too few for a selector
/// over every pod of a large cluster; Calico uses the same).
const MAXELEM: u32 = 1_048_576;

/// A set's header as `ipset save` prints it: (type, family), e.g. (`hash:net`, `inet`).
pub type Header = (String, String);

fn header(d: &SetDesc) -> Header {
    (
        d.kind.ipset_type().to_owned(),
        d.family.ipset_family().to_owned(),
    )
}

/// A set as desired or read: its header and members.
pub type SetState = (Header, BTreeSet<String>);

/// Parses `ipset save` output into our sets.
pub fn parse_save(text: &str) -> BTreeMap<String, SetState> {
    let mut out: BTreeMap<String, SetState> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(op), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !name.starts_with(SET_PREFIX) {
            continue;
        }
        let rest = words.next().unwrap_or_default();
        match op {
            "create" => {
                let mut w = rest.split_whitespace();
                let kind = w.next().unwrap_or_default().to_owned();
                let mut family = "inet".to_owned();
                while let Some(x) = w.next() {
                    if x == "family" {
                        family = w.next().unwrap_or_default().to_owned();
                    }
                }
                out.insert(name.to_owned(), ((kind, family), BTreeSet::new()));
            }
            "add" => {
                if let Some(s) = out.get_mut(name) {
                    s.1.insert(rest.trim().to_owned());
                }
            }
            _ => {}
        }
    }
    out
}

/// A member as `del` takes it (without flags such as `nomatch`).
fn del_form(member: &str) -> &str {
    member.split_whitespace().next().unwrap_or(member)
}

/// What a plan does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Sets created.
    pub created: usize,
    /// Members added.
    pub added: usize,
    /// Members removed.
    pub removed: usize,
    /// Sets destroyed.
    pub destroyed: usize,
}

/// The ipset driver.
#[derive(Debug)]
pub struct IpsetDriver {
    desired: BTreeMap<String, SetState>,
    /// Sets stated since the last successful write; only they are compared, unless `full`.
    dirty: BTreeSet<String>,
    /// Compare every set (after a read).
    full: bool,
    /// What the kernel holds as of the last read or successful write; `None`: read first.
    actual: Option<BTreeMap<String, SetState>>,
}

impl Default for IpsetDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl IpsetDriver {
    /// An empty driver; its first write compares every set.
    pub fn new() -> Self {
        Self {
            desired: BTreeMap::new(),
            dirty: BTreeSet::new(),
            full: true,
            actual: None,
        }
    }

    /// Wants set `name` (which must start with `mgy`) as `set`, or not at all.
    pub fn set(&mut self, name: &str, set: Option<(SetDesc, BTreeSet<String>)>) {
        match set {
            Some((d, members)) => {
                self.desired.insert(name.to_owned(), (header(&d), members));
            }
            None => {
                self.desired.remove(name);
            }
        }
        self.dirty.insert(name.to_owned());
    }

    fn candidates<'a>(&'a self, actual: &'a BTreeMap<String, SetState>) -> BTreeSet<&'a String> {
        if self.full {
            self.desired.keys().chain(actual.keys()).collect()
        } else {
            self.dirty.iter().collect()
        }
    }

    /// The restore input of the first step: creates, member adds and removals (re-creation of
    /// sets whose header changed is left to the second step).
    pub fn plan_updates(&self, actual: &BTreeMap<String, SetState>) -> (String, SetReport) {
        let mut out = String::new();
        let mut r = SetReport::default();
        let empty = BTreeSet::new();
        for name in self.candidates(actual) {
            let Some(((kind, family), members)) = self.desired.get(name) else {
                continue;
            };
            let have = match actual.get(name) {
                None => {
                    out.push_str(&format!(
                        "create {name} {kind} family {family} maxelem {MAXELEM}\n"
                    ));
                    r.created += 1;
                    &empty
                }
                Some((h, _)) if h != &(kind.clone(), family.clone()) => continue,
                Some((_, m)) => m,
            };
            for m in have.difference(members) {
                out.push_str(&format!("del {name} {}\n", del_form(m)));
                r.removed += 1;
            }
            for m in members.difference(have) {
                out.push_str(&format!("add {name} {m}\n"));
                r.added += 1;
            }
        }
        (out, r)
    }

    /// The restore input of the second step: destroys what is not wanted, re-creates what has
    /// the wrong header.
    pub fn plan_removals(&self, actual: &BTreeMap<String, SetState>) -> (String, SetReport) {
        let mut out = String::new();
        let mut r = SetReport::default();
        for name in self.candidates(actual) {
            let Some((h, _)) = actual.get(name) else {
                continue;
            };
            match self.desired.get(name) {
                None => {
                    out.push_str(&format!("destroy {name}\n"));
                    r.destroyed += 1;
                }
                Some(((kind, family), members)) if h != &(kind.clone(), family.clone()) => {
                    out.push_str(&format!(
                        "destroy {name}\ncreate {name} {kind} family {family} maxelem {MAXELEM}\n"
                    ));
                    for m in members {
                        out.push_str(&format!("add {name} {m}\n"));
                    }
                    r.destroyed += 1;
                    r.created += 1;
                }
                Some(_) => {}
            }
        }
        (out, r)
    }

    /// Reads our sets from the kernel.
    pub async fn read(&mut self) -> Result<(), IptablesError> {
        let text = run("ipset", &["save"], None).await?;
        self.actual = Some(parse_save(&text));
        self.full = true;
        Ok(())
    }

    async fn restore(&mut self, input: &str) -> Result<(), IptablesError> {
        debug!(bytes = input.len(), "ipset restore");
        match run("ipset", &["-exist", "restore"], Some(input)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.actual = None;
                Err(e)
            }
        }
    }

    /// Step one: creates and fills (reads the kernel first when its state is unknown).
    pub async fn apply_updates(&mut self) -> Result<SetReport, IptablesError> {
        if self.actual.is_none() {
            self.read().await?;
        }
        let mut actual = self.actual.take().unwrap_or_default();
        let (input, r) = self.plan_updates(&actual);
        if !input.is_empty() {
            self.restore(&input).await?;
        }
        let names: Vec<String> = self.candidates(&actual).into_iter().cloned().collect();
        for name in names {
            if let Some((h, m)) = self.desired.get(&name) {
                match actual.get(&name) {
                    Some((have, _)) if have != h => {}
                    _ => {
                        actual.insert(name, (h.clone(), m.clone()));
                    }
                }
            }
        }
        self.actual = Some(actual);
        Ok(r)
    }

    /// Step two: destroys what is no longer wanted; the write is then complete.
    pub async fn apply_removals(&mut self) -> Result<SetReport, IptablesError> {
        if self.actual.is_none() {
            self.read().await?;
        }
        let mut actual = self.actual.take().unwrap_or_default();
        let (input, r) = self.plan_removals(&actual);
        if !input.is_empty() {
            self.restore(&input).await?;
        }
        let names: Vec<String> = self.candidates(&actual).into_iter().cloned().collect();
        for name in names {
            match self.desired.get(&name) {
                Some(s) => {
                    actual.insert(name, s.clone());
                }
                None => {
                    actual.remove(&name);
                }
            }
        }
        self.actual = Some(actual);
        self.dirty.clear();
        self.full = false;
        Ok(r)
    }

    /// Forgets what the kernel holds, so the next write reads it again (resync).
    pub fn invalidate(&mut self) {
        self.actual = None;
    }
}

/// The header a set of `family` and `kind` has.
pub fn header_of(family: Family, kind: SetType) -> Header {
    header(&SetDesc { family, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(m: &[&str]) -> BTreeSet<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deltas_are_member_adds_and_dels_and_stale_sets_go_last() {
        let mut d = IpsetDriver::new();
        let net4 = SetDesc {
            family: Family::V4,
            kind: SetType::Net,
        };
        d.set(
            "mgy4s-a",
            Some((net4, members(&["100.64.0.1", "100.64.0.2"]))),
        );
        d.set(
            "mgy4b-b",
            Some((net4, members(&["100.64.0.0/16", "100.64.1.0/24 nomatch"]))),
        );
        let actual = parse_save(
            "create mgy4s-a hash:net family inet hashsize 1024 maxelem 65536\n\
             add mgy4s-a 100.64.0.1\nadd mgy4s-a 100.64.0.9\n\
             create mgy4s-old hash:net family inet hashsize 1024\n\
             create other hash:ip family inet\nadd other 1.2.3.4\n",
        );
        assert!(!actual.contains_key("other"), "not ours");
        let (up, r) = d.plan_updates(&actual);
        assert_eq!(
            up,
            "create mgy4b-b hash:net family inet maxelem 1048576\nadd mgy4b-b 100.64.0.0/16\nadd mgy4b-b 100.64.1.0/24 nomatch\n\
             del mgy4s-a 100.64.0.9\nadd mgy4s-a 100.64.0.2\n"
        );
        assert_eq!((r.created, r.added, r.removed), (1, 3, 1));
        let (rm, _) = d.plan_removals(&actual);
        assert_eq!(rm, "destroy mgy4s-old\n");
        assert_eq!(
            header_of(Family::V6, SetType::IpPort),
            ("hash:ip,port".into(), "inet6".into())
        );
    }
}
