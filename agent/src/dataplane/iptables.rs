//! The iptables driver: Margay's chains (`mgy-…`) and the rules that hook them into built-in
//! chains, written with `iptables-restore --noflush` (or `ip6tables-restore`), one driver per
//! family.
//!
//! Any producer states chains by (table, name) and hook rules by (table, built-in chain, owner);
//! the policy compiler is one producer, NAT and anti-spoofing can be others. Every rule carries
//! a comment `mgy:HASH what`, where the hash covers the chain, the previous rule's hash and the
//! rule itself, so the driver compares chains by the hashes it reads back from `iptables-save`
//! and never has to match iptables' own rendering of a rule. Only chains with our prefix and
//! rules in built-in chains with our comment are ever touched.
//!
//! A write holds, in one atomic restore per table: the new and changed chains (declaring a chain
//! under `--noflush` empties it), then the hooks, then the removal of chains no longer wanted
//! (emptied, then deleted). Only what differs from what the kernel is known to hold is written;
//! with nothing to do, no process runs. After a failed write, the next one reads the kernel first.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::LazyLock;

use margay_policy::names::{CHAIN_PREFIX, COMMENT_PREFIX, hash_hex};
use margay_policy::{Family, Rule};
use regex::Regex;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

/// Which iptables the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `iptables-nft`: the iptables syntax over nf_tables.
    Nft,
    /// `iptables-legacy`: the x_tables kernel interface.
    Legacy,
}

impl Mode {
    fn suffix(self) -> &'static str {
        match self {
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        }
    }
}

fn base_cmd(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// The program of `family`, `mode` and `tool` (`save` or `restore`): the variant's own binary
/// when installed (`iptables-nft-save`), else the plain one (`iptables-save`).
fn program(family: Family, mode: Mode, tool: &str) -> String {
    let specific = format!("{}-{}-{tool}", base_cmd(family), mode.suffix());
    if which(&specific) {
        specific
    } else {
        format!("{}-{tool}", base_cmd(family))
    }
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
}

fn count_rules(cmd: &str) -> usize {
    if !which(cmd) {
        return 0;
    }
    std::process::Command::new(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
        })
        .unwrap_or(0)
}

/// Detects which iptables the host uses, as Calico does: the variant whose tables hold more
/// rules (IPv4 and IPv6 together); nft when they tie or neither has any, or when only one is
/// installed, that one.
pub fn detect_mode() -> Mode {
    let nft_installed = which("iptables-nft-restore");
    let legacy_installed = which("iptables-legacy-restore");
    match (nft_installed, legacy_installed) {
        (false, true) => return Mode::Legacy,
        (true, false) | (false, false) => return Mode::Nft,
        (true, true) => {}
    }
    let legacy = count_rules("iptables-legacy-save") + count_rules("ip6tables-legacy-save");
    let nft = count_rules("iptables-nft-save") + count_rules("ip6tables-nft-save");
    let mode = if legacy > nft {
        Mode::Legacy
    } else {
        Mode::Nft
    };
    info!(
        ?mode,
        legacy_rules = legacy,
        nft_rules = nft,
        "iptables mode detected"
    );
    mode
}

/// Why iptables could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The program could not be run.
    #[error("cannot run {program}; is the iptables package installed?")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// What Margay has in one table, as read back: chain → rule hashes (`None` for a rule without
/// our comment), and built-in chain → our rules there (hash, the rule as saved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableActual {
    /// Our chains.
    pub chains: BTreeMap<String, Vec<Option<String>>>,
    /// Our rules in built-in (or other foreign) chains.
    pub hooks: BTreeMap<String, Vec<(Option<String>, String)>>,
    /// Built-in chains where a rule of someone else's comes before one of ours: ours are put
    /// back on top (a rule above them could accept what policy drops).
    pub displaced: BTreeSet<String>,
}

static HASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"--comment "?mgy:([0-9a-f]{16})"#).expect("a valid regex"));

/// Parses `iptables-save` output into what is ours, per table.
pub fn parse_save(text: &str) -> BTreeMap<String, TableActual> {
    let mut out: BTreeMap<String, TableActual> = BTreeMap::new();
    let mut table: Option<String> = None;
    let mut foreign_seen: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            foreign_seen.clear();
            table = Some(t.trim().to_owned());
            out.entry(t.trim().to_owned()).or_default();
            continue;
        }
        let Some(t) = &table else { continue };
        let actual = out.entry(t.clone()).or_default();
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                actual.chains.entry(name.to_owned()).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap_or_default();
            let hash = HASH.captures(line).map(|c| c[1].to_owned());
            if chain.starts_with(CHAIN_PREFIX) {
                actual
                    .chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(hash);
            } else if line.contains(&format!("--comment \"{COMMENT_PREFIX}"))
                || line.contains(&format!("--comment {COMMENT_PREFIX}"))
            {
                if foreign_seen.contains(chain) {
                    actual.displaced.insert(chain.to_owned());
                }
                actual
                    .hooks
                    .entry(chain.to_owned())
                    .or_default()
                    .push((hash, line.to_owned()));
            } else {
                foreign_seen.insert(chain.to_owned());
            }
        }
    }
    out
}

/// A rule as written: its hash and its `-A`/`-I` text after the chain name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rendered {
    hash: String,
    spec: String,
}

fn render(chain: &str, prev: &str, rule: &Rule) -> Rendered {
    let hash = hash_hex(
        &format!("{chain}\n{prev}\n{}\n{}", rule.body, rule.comment),
        16,
    );
    let comment: String = rule
        .comment
        .chars()
        .map(|c| if c == '"' || c == '\\' { '_' } else { c })
        .take(200)
        .collect();
    Rendered {
        spec: format!(
            "-m comment --comment \"{COMMENT_PREFIX}{hash} {comment}\" {}",
            rule.body
        ),
        hash,
    }
}

fn render_chain(chain: &str, rules: &[Rule]) -> Vec<Rendered> {
    let mut prev = String::new();
    rules
        .iter()
        .map(|r| {
            let out = render(chain, &prev, r);
            prev = out.hash.clone();
            out
        })
        .collect()
}

/// The restore input for one table that turns `actual` into the desired chains and hooks, or
/// `None` when they already match. `chains`: the desired chains, rendered; `only`: when given,
/// just these chains are compared (the others are known to be in sync); `hooks`: built-in chain
/// → our rules there, in order.
fn plan_table(
    table: &str,
    chains: &BTreeMap<String, Vec<Rendered>>,
    only: Option<&BTreeSet<String>>,
    hooks: &BTreeMap<String, Vec<Rule>>,
    actual: &TableActual,
    report: &mut Report,
) -> Option<String> {
    let mut decls = Vec::new();
    let mut appends = Vec::new();
    let mut hook_lines = Vec::new();
    let mut deletes = Vec::new();
    let candidates: Box<dyn Iterator<Item = &String>> = match only {
        Some(names) => Box::new(names.iter()),
        None => Box::new(chains.keys().chain(actual.chains.keys())),
    };
    let candidates: BTreeSet<&String> = candidates.collect();
    for name in candidates {
        match chains.get(name) {
            Some(rendered) => {
                let same = actual.chains.get(name).is_some_and(|have| {
                    have.len() == rendered.len()
                        && have
                            .iter()
                            .zip(rendered)
                            .all(|(h, r)| h.as_deref() == Some(r.hash.as_str()))
                });
                if same {
                    continue;
                }
                decls.push(format!(":{name} - [0:0]"));
                appends.extend(rendered.iter().map(|r| format!("-A {name} {}", r.spec)));
                report.chains_written += 1;
            }
            None if actual.chains.contains_key(name) => {
                decls.push(format!(":{name} - [0:0]"));
                deletes.push(format!("-X {name}"));
                report.chains_removed += 1;
            }
            None => {}
        }
    }
    let empty = Vec::new();
    let bases: BTreeSet<&String> = hooks.keys().chain(actual.hooks.keys()).collect();
    for base in bases {
        let want: Vec<Rendered> = hooks
            .get(base)
            .unwrap_or(&empty)
            .iter()
            .map(|r| render(&format!("{table}/{base}"), "", r))
            .collect();
        let have = actual
            .hooks
            .get(base)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let want_hashes: Vec<Option<String>> = want.iter().map(|r| Some(r.hash.clone())).collect();
        let have_hashes: Vec<Option<String>> = have.iter().map(|(h, _)| h.clone()).collect();
        if want_hashes == have_hashes && !actual.displaced.contains(base) {
            continue;
        }
        for (_, line) in have {
            if let Some(rest) = line.strip_prefix("-A ") {
                hook_lines.push(format!("-D {rest}"));
            }
        }
        for r in want.iter().rev() {
            hook_lines.push(format!("-I {base} 1 {}", r.spec));
        }
        report.hooks_written += 1;
    }
    if decls.is_empty() && hook_lines.is_empty() {
        return None;
    }
    let mut out = format!("*{table}\n");
    for l in decls
        .iter()
        .chain(&appends)
        .chain(&hook_lines)
        .chain(&deletes)
    {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Chains created or rewritten.
    pub chains_written: usize,
    /// Chains deleted.
    pub chains_removed: usize,
    /// Built-in chains whose hooks were rewritten.
    pub hooks_written: usize,
    /// iptables-restore runs (0 when nothing differed).
    pub restores: usize,
    /// How long the write took (planning and the restore, if any).
    pub took: std::time::Duration,
}

/// The iptables driver of one family.
#[derive(Debug)]
pub struct IptablesDriver {
    family: Family,
    mode: Mode,
    lock_wait_secs: u32,
    /// table → chain → its rules, rendered (with their hashes) when stated.
    chains: BTreeMap<String, BTreeMap<String, Vec<Rendered>>>,
    hooks: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<Rule>>>>,
    /// Chains stated since the last successful write, per table.
    dirty: BTreeMap<String, BTreeSet<String>>,
    /// What the kernel holds as of the last read or successful write; `None`: read first.
    actual: Option<BTreeMap<String, TableActual>>,
    /// The last read has not been compared in full yet.
    full: bool,
}

impl IptablesDriver {
    /// A driver of `family` using `mode`'s programs.
    pub fn new(family: Family, mode: Mode) -> Self {
        Self {
            family,
            mode,
            lock_wait_secs: 10,
            chains: BTreeMap::new(),
            hooks: BTreeMap::new(),
            dirty: BTreeMap::new(),
            actual: None,
            full: true,
        }
    }

    /// Wants chain `name` (which must start with `mgy-`) in `table` with `rules`, or not at all.
    pub fn set_chain(&mut self, table: &str, name: &str, rules: Option<Vec<Rule>>) {
        debug_assert!(name.starts_with(CHAIN_PREFIX), "{name} is not ours");
        let t = self.chains.entry(table.to_owned()).or_default();
        match rules {
            Some(r) => {
                t.insert(name.to_owned(), render_chain(name, &r));
            }
            None => {
                t.remove(name);
            }
        }
        self.dirty
            .entry(table.to_owned())
            .or_default()
            .insert(name.to_owned());
    }

    /// The rules `owner` wants at the top of built-in chain `base` of `table`.
    pub fn set_hooks(&mut self, table: &str, base: &str, owner: &str, rules: Vec<Rule>) {
        let b = self
            .hooks
            .entry(table.to_owned())
            .or_default()
            .entry(base.to_owned())
            .or_default();
        if rules.is_empty() {
            b.remove(owner);
        } else {
            b.insert(owner.to_owned(), rules);
        }
    }

    fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .chains
            .keys()
            .chain(self.hooks.keys())
            .cloned()
            .collect();
        if let Some(a) = &self.actual {
            t.extend(a.keys().cloned());
        }
        t.sort();
        t.dedup();
        t
    }

    fn hooks_of(&self, table: &str) -> BTreeMap<String, Vec<Rule>> {
        self.hooks
            .get(table)
            .map(|bases| {
                bases
                    .iter()
                    .map(|(b, owners)| (b.clone(), owners.values().flatten().cloned().collect()))
                    .filter(|(_, r): &(String, Vec<Rule>)| !r.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn plan_with(&self, actual: &BTreeMap<String, TableActual>, full: bool) -> (String, Report) {
        let mut report = Report::default();
        let mut out = String::new();
        let none = BTreeMap::new();
        let empty = TableActual::default();
        let no_dirty = BTreeSet::new();
        for table in self.tables() {
            let chains = self.chains.get(&table).unwrap_or(&none);
            let only = (!full).then(|| self.dirty.get(&table).unwrap_or(&no_dirty));
            let hooks = self.hooks_of(&table);
            let act = actual.get(&table).unwrap_or(&empty);
            if let Some(t) = plan_table(&table, chains, only, &hooks, act, &mut report) {
                out.push_str(&t);
            }
        }
        (out, report)
    }

    /// The restore input that brings `actual` to the desired state (empty when in sync),
    /// comparing every chain.
    pub fn plan(&self, actual: &BTreeMap<String, TableActual>) -> (String, Report) {
        self.plan_with(actual, true)
    }

    /// Reads what the kernel holds of ours in every table this driver manages.
    pub async fn read(&mut self) -> Result<(), IptablesError> {
        let mut all = BTreeMap::new();
        for table in self.tables() {
            let prog = program(self.family, self.mode, "save");
            let text = run(&prog, &["-t", &table], None).await?;
            let mut parsed = parse_save(&text);
            all.insert(table.clone(), parsed.remove(&table).unwrap_or_default());
        }
        self.actual = Some(all);
        self.full = true;
        Ok(())
    }

    /// Writes what differs from what the kernel is known to hold (read first if unknown). After
    /// a read every chain is compared; otherwise only those stated since the last write.
    pub async fn apply(&mut self) -> Result<Report, IptablesError> {
        let start = std::time::Instant::now();
        if self.actual.is_none() {
            self.read().await?;
        }
        let actual = self.actual.take().unwrap_or_default();
        let (input, mut report) = self.plan_with(&actual, self.full);
        if input.is_empty() {
            self.actual = Some(actual);
            self.dirty.clear();
            self.full = false;
            report.took = start.elapsed();
            return Ok(report);
        }
        let prog = program(self.family, self.mode, "restore");
        let wait = self.lock_wait_secs.to_string();
        debug!(family = ?self.family, bytes = input.len(), "iptables-restore");
        match run(&prog, &["--noflush", "-w", &wait], Some(&input)).await {
            Ok(_) => {
                report.restores = 1;
                report.took = start.elapsed();
                self.actual = Some(self.expected());
                self.dirty.clear();
                self.full = false;
                Ok(report)
            }
            Err(e) => {
                self.actual = None;
                Err(e)
            }
        }
    }

    /// Re-reads the kernel and repairs whatever differs.
    pub async fn resync(&mut self) -> Result<Report, IptablesError> {
        self.actual = None;
        self.apply().await
    }

    /// What the kernel holds after a successful write of the desired state.
    fn expected(&self) -> BTreeMap<String, TableActual> {
        let mut out = BTreeMap::new();
        for table in self.tables() {
            let mut t = TableActual::default();
            for (name, rendered) in self.chains.get(&table).into_iter().flatten() {
                t.chains.insert(
                    name.clone(),
                    rendered.iter().map(|r| Some(r.hash.clone())).collect(),
                );
            }
            for (base, rules) in self.hooks_of(&table) {
                let lines = rules
                    .iter()
                    .map(|r| {
                        let rr = render(&format!("{table}/{base}"), "", r);
                        (Some(rr.hash), format!("-A {base} {}", rr.spec))
                    })
                    .collect();
                t.hooks.insert(base, lines);
            }
            out.insert(table, t);
        }
        out
    }
}

/// Runs `prog args`, feeding `input` on stdin; returns stdout.
pub(crate) async fn run(
    prog: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, IptablesError> {
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| IptablesError::Spawn {
        program: prog.to_owned(),
        source,
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let bytes = text.as_bytes().to_vec();
        // Written from its own task so a large input cannot deadlock against a full stdout.
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| IptablesError::Spawn {
            program: prog.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            program: format!("{prog} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_rules() -> Vec<Rule> {
        vec![Rule::new("-j ACCEPT", "all"), Rule::new("-j DROP", "none")]
    }

    fn driver() -> IptablesDriver {
        let mut d = IptablesDriver::new(Family::V4, Mode::Nft);
        d.set_chain("filter", "mgy-a", Some(a_rules()));
        d.set_hooks(
            "filter",
            "FORWARD",
            "policy",
            vec![Rule::new("-j mgy-a", "hook")],
        );
        d
    }

    #[test]
    fn the_first_write_creates_chains_then_hooks_and_a_second_writes_nothing() {
        let d = driver();
        let (text, report) = d.plan(&BTreeMap::new());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines[1], ":mgy-a - [0:0]");
        assert!(
            lines[2].starts_with("-A mgy-a -m comment --comment \"mgy:")
                && lines[2].ends_with(" all\" -j ACCEPT")
        );
        assert!(lines[4].starts_with("-I FORWARD 1 -m comment"), "{text}");
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        assert_eq!(report.chains_written, 1);
        assert_eq!(report.hooks_written, 1);
        // What the kernel prints back, parsed, is in sync.
        let saved = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:mgy-a - [0:0]\n{}\n-A FORWARD -j DOCKER\n{}\n{}\nCOMMIT\n",
            lines[4].replacen("-I FORWARD 1", "-A FORWARD", 1),
            lines[2],
            lines[3]
        );
        let (again, _) = d.plan(&parse_save(&saved));
        assert!(again.is_empty(), "{again}");
    }

    #[test]
    fn a_chain_stated_again_unchanged_is_not_rewritten_and_a_changed_one_alone_is() {
        let mut d = driver();
        d.set_chain("filter", "mgy-b", Some(vec![Rule::new("-j RETURN", "b")]));
        // As after a successful write: the kernel holds the desired state, nothing is dirty.
        let written = d.expected();
        d.dirty.clear();
        d.set_chain("filter", "mgy-a", Some(a_rules()));
        let (text, report) = d.plan_with(&written, false);
        assert!(text.is_empty(), "no restore for an unchanged chain: {text}");
        assert_eq!(report, Report::default());
        d.set_chain("filter", "mgy-b", Some(vec![Rule::new("-j DROP", "b")]));
        let (text, report) = d.plan_with(&written, false);
        assert_eq!(report.chains_written, 1, "{text}");
        assert!(
            text.contains(":mgy-b - [0:0]\n") && !text.contains("mgy-a"),
            "{text}"
        );
    }

    #[test]
    fn a_tampered_chain_is_rewritten_a_stale_one_removed_and_foreign_rules_kept() {
        let d = driver();
        let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:mgy-a - [0:0]\n:mgy-old - [0:0]\n:KUBE-X - [0:0]\n\
                     -A FORWARD -j KUBE-X\n-A mgy-a -j ACCEPT\n-A mgy-old -j DROP\nCOMMIT\n";
        let (text, report) = d.plan(&parse_save(saved));
        assert_eq!(report.chains_written, 1);
        assert_eq!(report.chains_removed, 1);
        assert!(
            text.contains(":mgy-old - [0:0]\n") && text.trim_end().ends_with("-X mgy-old\nCOMMIT"),
            "{text}"
        );
        assert!(!text.contains("KUBE-X"), "{text}");
    }

    #[test]
    fn a_hook_below_someone_elses_rule_is_put_back_on_top() {
        let d = driver();
        let (text, _) = d.plan(&BTreeMap::new());
        let hook = text
            .lines()
            .find(|l| l.starts_with("-I FORWARD"))
            .unwrap()
            .replacen("-I FORWARD 1", "-A FORWARD", 1);
        let a: Vec<&str> = text.lines().filter(|l| l.starts_with("-A mgy-a")).collect();
        let chain = format!(":mgy-a - [0:0]\n{}\n{}\n", a[0], a[1]);
        let on_top = format!("*filter\n{chain}{hook}\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n");
        assert!(d.plan(&parse_save(&on_top)).0.is_empty());
        let below = format!("*filter\n{chain}-A FORWARD -j KUBE-FORWARD\n{hook}\nCOMMIT\n");
        let (fix, _) = d.plan(&parse_save(&below));
        assert!(
            fix.contains("-D FORWARD -m comment") && fix.contains("-I FORWARD 1 "),
            "{fix}"
        );
        assert!(!fix.contains("KUBE-FORWARD"), "{fix}");
    }

    #[test]
    fn a_moved_or_duplicated_hook_is_replaced_by_exact_deletes() {
        let d = driver();
        let (text, _) = d.plan(&BTreeMap::new());
        let hook = text
            .lines()
            .find(|l| l.starts_with("-I FORWARD"))
            .unwrap()
            .replacen("-I FORWARD 1", "-A FORWARD", 1);
        let a_rules: Vec<&str> = text.lines().filter(|l| l.starts_with("-A mgy-a")).collect();
        let saved = format!(
            "*filter\n:mgy-a - [0:0]\n{hook}\n{hook}\n{}\n{}\nCOMMIT\n",
            a_rules[0], a_rules[1]
        );
        let (fix, _) = d.plan(&parse_save(&saved));
        assert_eq!(fix.matches("-D FORWARD").count(), 2, "{fix}");
        assert_eq!(fix.matches("-I FORWARD 1").count(), 1, "{fix}");
        assert!(!fix.contains(":mgy-a"), "the chain itself is fine: {fix}");
    }
}
