//! The compiler's output to the ipset and iptables drivers, in an order that never opens a hole.

use margay_policy::{Compiler, Dirty, Family};

use crate::dataplane::ipsets::{IpsetDriver, SetReport};
use crate::dataplane::iptables::{IptablesDriver, IptablesError, Mode, Report};

/// The table the policy chains live in.
const TABLE: &str = "filter";
/// The hooks' owner name (other producers have their own).
const OWNER: &str = "policy";

/// What one programming wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramReport {
    /// ipset changes (both steps).
    pub sets: SetReport,
    /// IPv4 iptables.
    pub v4: Report,
    /// IPv6 ip6tables.
    pub v6: Report,
}

impl ProgramReport {
    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        let s = &self.sets;
        s.created + s.added + s.removed + s.destroyed + self.v4.restores + self.v6.restores > 0
    }
}

/// The ipset driver and one iptables driver per family, fed from a [`Compiler`].
#[derive(Debug)]
pub struct PolicyDataplane {
    ipsets: IpsetDriver,
    v4: IptablesDriver,
    v6: IptablesDriver,
}

impl PolicyDataplane {
    /// Drivers using `mode`'s iptables.
    pub fn new(mode: Mode) -> Self {
        let mut v4 = IptablesDriver::new(Family::V4, mode);
        let mut v6 = IptablesDriver::new(Family::V6, mode);
        for d in [&mut v4, &mut v6] {
            for (base, rule) in Compiler::hooks() {
                d.set_hooks(TABLE, &base, OWNER, vec![rule]);
            }
        }
        Self {
            ipsets: IpsetDriver::new(),
            v4,
            v6,
        }
    }

    fn driver(&mut self, f: Family) -> &mut IptablesDriver {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Takes everything the compiler wants (at start-up).
    pub fn load_all(&mut self, c: &Compiler) {
        for ((f, name), rules) in c.chains() {
            self.driver(*f).set_chain(TABLE, name, Some(rules.clone()));
        }
        for name in c.set_names() {
            self.ipsets.set(name, c.set(name));
        }
    }

    /// Takes the chains and sets that changed.
    pub fn load_dirty(&mut self, c: &Compiler, dirty: &Dirty) {
        for key in &dirty.chains {
            let rules = c.chains().get(key).cloned();
            self.driver(key.0).set_chain(TABLE, &key.1, rules);
        }
        for name in &dirty.sets {
            self.ipsets.set(name, c.set(name));
        }
    }

    /// Takes natOutgoing's sets, chain and POSTROUTING hook (see [`super::nat`]).
    pub fn set_nat(&mut self, states: &[super::nat::NatState]) {
        use super::nat::{CHAIN, OWNER, TABLE};
        for st in states {
            for (name, set) in st.sets() {
                self.ipsets.set(name, Some(set));
            }
            let rules = (!st.rules.is_empty()).then(|| st.rules.clone());
            let d = self.driver(st.family);
            d.set_chain(TABLE, CHAIN, rules);
            d.set_hooks(TABLE, "POSTROUTING", OWNER, st.hooks());
        }
    }

    /// Writes what differs from what the kernel is known to hold: sets are created and filled
    /// first, then chains, then sets no longer referred to are destroyed. The IPv4 and IPv6
    /// tables are independent (two tables, two restore processes), so they are written at the
    /// same time; the sets are destroyed only once both writes succeeded.
    pub async fn program(&mut self) -> Result<ProgramReport, IptablesError> {
        let mut r = ProgramReport {
            sets: self.ipsets.apply_updates().await?,
            ..Default::default()
        };
        let (v4, v6) = tokio::join!(self.v4.apply(), self.v6.apply());
        (r.v4, r.v6) = (v4?, v6?);
        let removed = self.ipsets.apply_removals().await?;
        r.sets.destroyed += removed.destroyed;
        r.sets.created += removed.created;
        Ok(r)
    }

    /// Re-reads the kernel and repairs whatever differs.
    pub async fn resync(&mut self) -> Result<ProgramReport, IptablesError> {
        self.ipsets.invalidate();
        let (v4, v6) = tokio::join!(self.v4.read(), self.v6.read());
        v4.and(v6)?;
        self.program().await
    }
}
