//! The lab's state on disk: `$MARGAY_LAB_DIR/state.json`, guarded by a lock file so that two
//! `margay-lab` commands at once never interleave their read-modify-write.
//!
//! The state says what the lab made (namespaces, processes, pods) so that any later command —
//! also `down` after the supervisor died — finds it. Processes are recorded with their start
//! time (field 22 of `/proc/PID/stat`): a PID whose start time differs belongs to someone else
//! and is never signalled.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use margay_harness::leftovers::start_time;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The default lab directory when `$MARGAY_LAB_DIR` is not set.
pub const DEFAULT_DIR: &str = "/run/margay-lab";
/// Every namespace a lab makes starts with this (then the lab's id).
pub const NETNS_PREFIX: &str = "mgyl-";
/// How long a command waits for another one holding the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// What went wrong with the lab's state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The lab directory or a file in it cannot be used.
    #[error("{what} {path}")]
    Io {
        /// What was tried.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` does not parse.
    #[error(
        "{path} is not a lab state file ({why}); run `margay-lab down` to remove what it can find, or delete the file"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        why: String,
    },
    /// Another command held the lock for too long.
    #[error(
        "another margay-lab command has held {path} for {secs} s; wait for it to finish (see `ps`) and try again"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        secs: u64,
    },
    /// There is no lab in this directory.
    #[error(
        "no lab in {dir} (no state.json): start one with `margay-lab up` or set MARGAY_LAB_DIR"
    )]
    NoLab {
        /// The lab directory.
        dir: PathBuf,
    },
}

/// A process the lab started, identified by PID and start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// Its PID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Proc {
    /// The record of a running process, if it runs.
    pub fn of(pid: u32) -> Option<Proc> {
        Some(Proc {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this very process still runs (same PID and start time). A zombie counts as
    /// gone: it runs nothing and only waits for its parent.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start) && !is_zombie(self.pid)
    }

    /// Stops the process if it is still this one: SIGTERM, then SIGKILL after `grace`.
    /// Returns whether it is gone.
    pub fn stop(&self, grace: Duration) -> bool {
        if !self.alive() {
            return true;
        }
        let Ok(raw) = i32::try_from(self.pid) else {
            return true;
        };
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.alive()
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?;
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Its name (`node-1`), as the agent registers it.
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its IPv4 underlay address.
    pub ipv4: String,
    /// Its IPv6 underlay address, with `--ipv6`.
    pub ipv6: Option<String>,
    /// Its agent's local API socket.
    pub socket: PathBuf,
}

/// Where the lab keeps Margay's data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatastoreKind {
    /// etcd in the infra namespace (the lab stands in for kube-controllers).
    #[default]
    Etcdv3,
    /// The test Kubernetes API server (`margay-test-apiserver`) in the infra namespace.
    Kubernetes,
}

impl DatastoreKind {
    /// As `DATASTORE_TYPE` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreKind::Etcdv3 => "etcdv3",
            DatastoreKind::Kubernetes => "kubernetes",
        }
    }
}

/// The external router's daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RouterKind {
    /// BIRD 2 (installs what it learns in its namespace's routing table).
    Bird,
    /// FRR's bgpd with zebra (installs what it learns).
    Frr,
    /// GoBGP (learns, installs nothing: no FIB).
    Gobgp,
}

impl RouterKind {
    /// Its name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Bird => "bird",
            RouterKind::Frr => "frr",
            RouterKind::Gobgp => "gobgp",
        }
    }
}

/// A dedicated route reflector of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReflectorState {
    /// Its node name (`rr-1`).
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its IPv4 underlay address.
    pub ipv4: String,
    /// Its IPv6 underlay address, with `--ipv6`.
    pub ipv6: Option<String>,
    /// The route-reflector cluster id it declares.
    pub cluster_id: String,
}

/// The external (top-of-rack) router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    /// Which daemon.
    pub kind: RouterKind,
    /// Its namespace.
    pub netns: String,
    /// Its IPv4 underlay address.
    pub ipv4: String,
    /// Its IPv6 underlay address, with `--ipv6`.
    pub ipv6: Option<String>,
    /// Its AS number.
    pub asn: u32,
    /// Its directory (configuration, control sockets, logs).
    pub dir: PathBuf,
}

/// The "internet" namespace behind the infra namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternetState {
    /// Its namespace.
    pub netns: String,
    /// Its address.
    pub address: String,
}

/// One pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its network namespace.
    pub netns: String,
    /// The container id given to the CNI plugin.
    pub container_id: String,
    /// Its addresses (no prefix length).
    pub ips: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Declared ports: (name, port, protocol upper-case).
    pub ports: Vec<(String, u16, String)>,
}

impl PodState {
    /// `NS/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the lab made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The lab's id (in every namespace name).
    pub id: String,
    /// Whether `up` finished.
    pub ready: bool,
    /// Dual stack.
    pub ipv6: bool,
    /// The bridge namespace.
    pub bridge: String,
    /// The infra namespace (etcd).
    pub infra: String,
    /// etcd's client URL as nodes reach it.
    pub etcd_endpoint: String,
    /// etcd's data directory (on tmpfs).
    pub etcd_data: PathBuf,
    /// The supervisor process.
    pub supervisor: Option<Proc>,
    /// Every daemon the supervisor started, by name (`etcd`, `agent-node-1`, `pod-NS-NAME`).
    pub procs: BTreeMap<String, Proc>,
    /// The nodes.
    pub nodes: Vec<NodeState>,
    /// The pods, by `NS/NAME`.
    pub pods: BTreeMap<String, PodState>,
    /// Counter for pod namespace names.
    pub next_pod: u32,
    /// Every namespace made so far, also those of a half-finished `up`.
    pub namespaces: Vec<String>,
    /// The datastore.
    #[serde(default)]
    pub datastore: DatastoreKind,
    /// The kubeconfig of the test API server (Kubernetes datastore).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The dedicated route reflectors (none: full mesh).
    #[serde(default)]
    pub reflectors: Vec<ReflectorState>,
    /// The external router, if any.
    #[serde(default)]
    pub router: Option<RouterState>,
    /// The internet namespace.
    #[serde(default)]
    pub internet: Option<InternetState>,
}

impl State {
    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The lab directory and its files.
#[derive(Debug, Clone)]
pub struct LabDir {
    dir: PathBuf,
}

impl LabDir {
    /// `$MARGAY_LAB_DIR`, else [`DEFAULT_DIR`].
    pub fn from_env() -> LabDir {
        let dir = std::env::var_os("MARGAY_LAB_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        LabDir::new(dir)
    }

    /// The lab in `dir` (made absolute, so that the supervisor and agents agree on paths).
    pub fn new(dir: PathBuf) -> LabDir {
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        LabDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `dir/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The lab's id: 6 hex digits of a hash of the directory, so that labs in different
    /// directories (parallel tests) have different namespace names.
    pub fn id(&self) -> String {
        let h = sha1_smol::Sha1::from(self.dir.as_os_str().as_encoded_bytes())
            .digest()
            .to_string();
        h[..6].to_owned()
    }

    /// The prefix of every namespace of this lab.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-", self.id())
    }

    /// The supervisor's control socket.
    pub fn supervisor_socket(&self) -> PathBuf {
        self.join("supervisor.sock")
    }

    /// Creates the directory.
    pub fn create(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::Io {
            what: "cannot create the lab directory",
            path: self.dir.clone(),
            source,
        })
    }

    /// Takes the lab's lock (waiting up to 10 minutes for another command to finish).
    pub fn lock(&self) -> Result<Lock, StateError> {
        self.create()?;
        let path = self.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Io {
                what: "cannot open the lock file",
                path: path.clone(),
                source,
            })?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StateError::Io {
                        what: "cannot lock",
                        path,
                        source,
                    });
                }
            }
            if start.elapsed() > LOCK_TIMEOUT {
                return Err(StateError::Locked {
                    path,
                    secs: LOCK_TIMEOUT.as_secs(),
                });
            }
            if !told && start.elapsed() > Duration::from_secs(2) {
                eprintln!("waiting for another margay-lab command to finish...");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn state_path(&self) -> PathBuf {
        self.join("state.json")
    }

    /// Reads the state, `None` when there is no lab. Call with the lock held.
    pub fn load(&self, _lock: &Lock) -> Result<Option<State>, StateError> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    what: "cannot read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                why: e.to_string(),
            })
    }

    /// Reads the state; no lab is an error.
    pub fn load_existing(&self, lock: &Lock) -> Result<State, StateError> {
        self.load(lock)?.ok_or_else(|| StateError::NoLab {
            dir: self.dir.clone(),
        })
    }

    /// Writes the state atomically (temporary file, fsync, rename). Call with the lock held.
    pub fn save(&self, _lock: &Lock, state: &State) -> Result<(), StateError> {
        let path = self.state_path();
        let tmp = self.join("state.json.tmp");
        let io = |what, source| StateError::Io {
            what,
            path: tmp.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(state).expect("the state serialises");
        {
            use std::io::Write;
            let mut f = File::create(&tmp).map_err(|e| io("cannot create", e))?;
            f.write_all(text.as_bytes())
                .map_err(|e| io("cannot write", e))?;
            f.sync_all().map_err(|e| io("cannot sync", e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
            what: "cannot replace",
            path,
            source,
        })
    }

    /// Removes the state file (the lab is gone).
    pub fn remove_state(&self, _lock: &Lock) -> Result<(), StateError> {
        match std::fs::remove_file(self.state_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                what: "cannot remove",
                path: self.state_path(),
                source,
            }),
        }
    }
}

/// The lab's lock, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let lab = LabDir::new(dir.path().to_owned());
        let lock = lab.lock().unwrap();
        assert_eq!(lab.load(&lock).unwrap(), None);
        let mut s = State {
            id: lab.id(),
            ..Default::default()
        };
        s.procs.insert("etcd".into(), Proc { pid: 1, start: 42 });
        lab.save(&lock, &s).unwrap();
        assert_eq!(lab.load(&lock).unwrap(), Some(s));
        lab.remove_state(&lock).unwrap();
        assert!(matches!(
            lab.load_existing(&lock),
            Err(StateError::NoLab { .. })
        ));
    }

    #[test]
    fn labs_in_different_directories_have_different_ids() {
        let a = LabDir::new("/run/margay-lab".into());
        let b = LabDir::new("/tmp/lab-b".into());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 6);
        assert!(a.netns_prefix().starts_with("mgyl-"));
    }

    #[test]
    fn a_process_with_another_start_time_is_not_alive() {
        let me = Proc::of(std::process::id()).unwrap();
        assert!(me.alive());
        let other = Proc {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!other.alive());
        // And stopping it signals nothing (we are still here).
        assert!(other.stop(Duration::from_millis(10)));
    }

    #[test]
    fn the_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lab = LabDir::new(dir.path().to_owned());
        let _held = lab.lock().unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(lab.join("lock"))
            .unwrap();
        assert!(matches!(
            f.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
    }
}
