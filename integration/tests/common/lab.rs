//! The `margay-lab` binary as the tests run it: a lab in its own temporary `MARGAY_LAB_DIR`,
//! brought down when dropped (also when the test fails or panics), so nothing is left behind.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use margay_integration::lab::state::{LabDir, Proc, State};
use serde_json::Value;

/// `margay-lab`, checked to have Margay's other binaries beside it (it runs them from there).
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

/// A lab in a temporary directory; `down` on drop.
pub struct Lab {
    /// Its `MARGAY_LAB_DIR`.
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

    /// `margay-lab ARGS` for this lab, stdin closed.
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

    /// Runs with `input` on stdin (e.g. `policy apply -`).
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        margay_harness::cmd::run_with_input(self.cmd(args).stderr(Stdio::piped()), input.as_bytes())
            .unwrap()
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(args, self.run(args))
    }

    pub fn code(&self, args: &[&str]) -> i32 {
        self.run(args).status.code().unwrap_or(-1)
    }

    /// `down`, then checks it left nothing ([`assert_nothing_left`]).
    pub fn down_leaving_nothing(&self) {
        let before = self.state();
        self.ok(&["down"]);
        assert_nothing_left(self, &before);
    }

    pub fn state(&self) -> State {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("state.json")).unwrap())
            .unwrap()
    }

    /// The prefix of every network namespace the lab makes.
    pub fn prefix(&self) -> String {
        LabDir::new(self.dir.path().to_owned()).netns_prefix()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "-o", "json"])).unwrap()
    }

    /// kubectl 1.33 against the lab's test API server (a lab up with `--datastore kubernetes`),
    /// run in the infra namespace where the server listens; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let kubeconfig = self
            .state()
            .kubeconfig
            .expect("a lab up with --datastore kubernetes has a kubeconfig");
        let kubectl = super::kubectl_path();
        let mut full = vec![
            "exec",
            "infra",
            "--",
            kubectl.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        self.ok(&full)
    }

    /// The last lines of every agent's log, for failure messages (without terminal colours).
    pub fn agent_logs(&self, lines: usize) -> String {
        let st = self.state();
        let tails = st
            .nodes
            .iter()
            .map(|n| {
                margay_integration::lab::log_tail(
                    &self.dir.path().join(&n.name).join("agent.log"),
                    lines,
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        regex::Regex::new("\x1b\\[[0-9;]*m")
            .unwrap()
            .replace_all(&tails, "")
            .into_owned()
    }
}

/// stdout of a command that must have succeeded; otherwise a panic quoting what it said.
pub fn expect_success(args: &[&str], out: Output) -> String {
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

impl Drop for Lab {
    fn drop(&mut self) {
        if self.dir.path().join("state.json").exists() {
            let _ = self.run(&["down"]);
        }
    }
}

/// The network namespaces on the host whose names start with `prefix`.
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
