//! `margay-lab` as a user runs it: a lab in its own temporary `MARGAY_LAB_DIR`, taken down on
//! drop, and checks that nothing is left behind (the lab and end-to-end tests).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use margay_integration::lab::state::{LabDir, Proc, State};
use serde_json::Value;

pub fn bin() -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_margay-lab"));
    for b in ["margay-node", "margay-cni", "margayctl"] {
        assert!(
            lab.with_file_name(b).exists(),
            "{b} is missing beside {}: run `cargo build -p margay-agent -p margay-cni -p margay-ctl --bins` first",
            lab.display()
        );
    }
    lab
}

/// A lab in a temporary directory; `down` on drop, so a failing test leaves nothing.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            dir: tempfile::Builder::new()
                .prefix("mgyl-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("MARGAY_LAB_DIR", self.dir.path())
            .env_remove("MARGAY_BIN_DIR")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "margay-lab {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn code(&self, args: &[&str]) -> i32 {
        self.run(args).status.code().unwrap_or(-1)
    }

    pub fn state(&self) -> State {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).unwrap())
            .unwrap()
    }

    pub fn prefix(&self) -> String {
        LabDir::new(self.dir.path().to_owned()).netns_prefix()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "-o", "json"])).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.dir.path().join("state.json").exists() {
            let _ = self.run(&["down"]);
        }
    }
}

pub fn lab_namespaces(prefix: &str) -> Vec<String> {
    margay_harness::list_all()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Every process the lab recorded (supervisor included).
pub fn processes(st: &State) -> Vec<(String, Proc)> {
    let mut all: Vec<(String, Proc)> = st
        .procs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.extend(st.supervisor.clone().map(|p| ("supervisor".to_owned(), p)));
    all
}

/// After `down`: no namespace of the lab, no process it started, no state, no etcd data.
pub fn assert_nothing_left(lab: &Lab, before: &State) {
    let left = lab_namespaces(&lab.prefix());
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for (name, p) in processes(before) {
        assert!(!p.alive(), "{name} (pid {}) still runs", p.pid);
    }
    assert!(!lab.dir.path().join("state.json").exists());
    assert!(!before.etcd_data.exists(), "{}", before.etcd_data.display());
    assert!(!lab.dir.path().join("supervisor.sock").exists());
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
