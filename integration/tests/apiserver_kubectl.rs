//! The test API server against real clients: kubectl 1.33 (from the machine image) and the
//! Python `kubernetes` client 37.0.2 (pip-installed into a venv under the user cache dir on the
//! first run).
//!
//! Each test starts its own server on loopback, in-process, and gives kubectl its own
//! kubeconfig and cache dir. Every child process has a time limit and is killed by its handle.

mod common;

use common::{kubectl_path, repo_root};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use margay_integration::apiserver::{ApiServer, Config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(60);

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &ApiServer) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig()).unwrap();
        Kubectl {
            bin: kubectl_path(),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(LIMIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} took over {LIMIT:?}"))
            .expect("kubectl runs")
    }

    /// Runs kubectl, expects success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}{stdout}"
        );
        stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

fn pool(block: u32, extra: &str) -> String {
    format!(
        "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata:\n  name: lab-pool\nspec:\n  \
         cidr: 100.64.0.0/16\n  blockSize: {block}\n  natOutgoing: true\n{extra}"
    )
}

const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  \
    name: allow-web\n  namespace: default\nspec:\n  podSelector:\n    matchLabels: {app: web}\n  \
    ingress:\n  - ports:\n    - {protocol: TCP, port: 80}\n";

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels: {zone: a}\n\
    status:\n  conditions:\n  - {type: Ready, status: \"True\"}\n  nodeInfo: {kubeletVersion: v1.37.0, kubeProxyVersion: \"\", architecture: amd64,\n    bootID: b, containerRuntimeVersion: containerd://2.1, kernelVersion: 6.12.0, machineID: m,\n    operatingSystem: linux, osImage: Debian, systemUUID: s}\n";

async fn start() -> (ApiServer, Kubectl) {
    let server = ApiServer::start(Config::default())
        .await
        .expect("server starts");
    let k = Kubectl::new(&server);
    let crds = repo_root().join("manifests/crds.yaml");
    let out = k.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(out.contains("ippools.crd.margay.dev created"), "{out}");
    (server, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_patches_and_deletes_margay_resources() {
    let (_server, k) = start().await;
    let crds = repo_root().join("manifests/crds.yaml");
    let again = k.ok(&["apply", "-f", crds.to_str().unwrap()]).await;
    assert!(
        again.contains("ippools.crd.margay.dev unchanged"),
        "{again}"
    );

    let p = k.file("pool.yaml", &pool(26, ""));
    assert!(
        k.ok(&["apply", "-f", &p])
            .await
            .contains("lab-pool created")
    );
    let np = k.file("policy.yaml", POLICY);
    assert!(
        k.ok(&["apply", "-f", &np])
            .await
            .contains("allow-web created")
    );

    let table = k.ok(&["get", "ippools"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CIDR", "BLOCK", "NAT", "DISABLED", "AGE"]);
    assert!(
        table.contains("lab-pool") && table.contains("100.64.0.0/16"),
        "{table}"
    );

    let yaml = k.ok(&["get", "ippool", "lab-pool", "-o", "yaml"]).await;
    for want in [
        "kind: IPPool",
        "cidr: 100.64.0.0/16",
        "blockSize: 26",
        "uid:",
        "resourceVersion:",
        "disabled: false",
    ] {
        assert!(yaml.contains(want), "{want} missing from\n{yaml}");
    }

    // A changed pool is a merge patch.
    let p = k.file("pool.yaml", &pool(27, ""));
    assert!(
        k.ok(&["apply", "-f", &p])
            .await
            .contains("lab-pool configured")
    );
    let block = k
        .ok(&["get", "ipp", "lab-pool", "-o", "jsonpath={.spec.blockSize}"])
        .await;
    assert_eq!(block, "27");

    // Server-side apply.
    let p = k.file("pool.yaml", &pool(28, ""));
    assert!(
        k.ok(&["apply", "--server-side", "-f", &p])
            .await
            .contains("serverside-applied")
    );
    let block = k
        .ok(&["get", "ipp", "lab-pool", "-o", "jsonpath={.spec.blockSize}"])
        .await;
    assert_eq!(block, "28");

    // The CRD's schema is enforced: an unknown field (strict) and a value out of range.
    let bad = k.file("bad.yaml", &pool(27, "  natOutgoin: true\n"));
    let out = k.run(&["apply", "-f", &bad]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field \"spec.natOutgoin\""),
        "{err}"
    );
    // (The CRD bounds blockSize by 128; the 20-32 rule for IPv4 is CEL, which is not evaluated.)
    let bad = k.file("bad.yaml", &pool(200, ""));
    let out = k.run(&["apply", "-f", &bad]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.blockSize in body should be less than or equal to 128"),
        "{err}"
    );

    // A changed NetworkPolicy is a strategic merge patch.
    let np = k.file("policy.yaml", &POLICY.replace("port: 80", "port: 8080"));
    assert!(
        k.ok(&["apply", "-f", &np])
            .await
            .contains("allow-web configured")
    );
    let port = k
        .ok(&[
            "get",
            "netpol",
            "allow-web",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.ingress[0].ports[0].port}",
        ])
        .await;
    assert_eq!(port, "8080");

    let node = k.file("node.yaml", NODE);
    k.ok(&["apply", "-f", &node]).await;
    let nodes = k.ok(&["get", "nodes"]).await;
    assert!(
        nodes.contains("node-1") && nodes.contains("Ready"),
        "{nodes}"
    );
    let selected = k.ok(&["get", "nodes", "-l", "zone=b", "-o", "name"]).await;
    assert_eq!(selected, "");

    // The CRD's schema is in the OpenAPI v3 document.
    let explained = k.ok(&["explain", "ippool.spec.blockSize"]).await;
    assert!(
        explained.contains("KIND:       IPPool") && explained.contains("Prefix length"),
        "{explained}"
    );

    assert!(
        k.ok(&["delete", "ippool", "lab-pool"])
            .await
            .contains("deleted")
    );
    let out = k.run(&["get", "ippool", "lab-pool"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_a_change() {
    let (_server, k) = start().await;
    let p = k.file("pool.yaml", &pool(26, ""));
    k.ok(&["apply", "-f", &p]).await;

    let mut child = k
        .command(&["get", "ippools", "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get --watch starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a watch line within 20 s")
            .expect("read")
            .expect("watch still running")
    };
    assert!(next().await.starts_with("NAME"));
    assert!(next().await.contains(" 26 "));

    let p = k.file("pool.yaml", &pool(29, ""));
    k.ok(&["apply", "-f", &p]).await;
    let changed = next().await;
    assert!(
        changed.starts_with("lab-pool") && changed.contains(" 29 "),
        "{changed}"
    );
    child.kill().await.expect("stop kubectl");
}

fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("margay-pyk8s")
}

/// A venv with kubernetes==37.0.2, made once and reused.
async fn python() -> PathBuf {
    let venv = venv_dir();
    let py = venv.join("bin/python");
    let check = "import kubernetes, sys; sys.exit(kubernetes.__version__ != '37.0.2')";
    let ready = Command::new(&py).args(["-c", check]).output().await;
    if ready.is_ok_and(|o| o.status.success()) {
        return py;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .await
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let pip = tokio::time::timeout(
        Duration::from_secs(150),
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "kubernetes==37.0.2"])
            .status(),
    )
    .await
    .expect("pip install within 150 s (the suite kills a test after 3 minutes)")
    .expect("pip runs");
    assert!(pip.success(), "pip install kubernetes==37.0.2 failed");
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_lists_watches_and_applies() {
    let (server, k) = start().await;
    k.ok(&["apply", "-f", &k.file("pool.yaml", &pool(26, ""))])
        .await;
    k.ok(&["apply", "-f", &k.file("policy.yaml", POLICY)]).await;
    k.ok(&["apply", "-f", &k.file("node.yaml", NODE)]).await;
    let py = python().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apiserver_client.py");
    let kubeconfig = k.dir.path().join("kubeconfig");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(py)
            .arg(script)
            .arg(&kubeconfig)
            .arg("lab-pool")
            .env("TMPDIR", k.dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finishes within 90 s")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["pools"], serde_json::json!(["lab-pool"]));
    assert_eq!(seen["nodes"], serde_json::json!(["node-1"]));
    assert_eq!(seen["policies"], serde_json::json!(["allow-web"]));
    assert_eq!(
        seen["watched"],
        serde_json::json!([["MODIFIED", "lab-pool", 29]])
    );
    assert_eq!(seen["dynamic"], serde_json::json!(["lab-pool"]));
    assert_eq!(seen["applied"], "100.65.0.0/16");
    assert_eq!(seen["conflict"], 409);
    drop(server);
}

const NODE_STATUS: &str = "apiVersion: crd.margay.dev/v1\nkind: NodeStatus\nmetadata:\n  name: node-1\n\
    spec:\n  node: node-1\nstatus:\n  agentVersion: 0.0.1\n";

const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: default\n\
    spec:\n  nodeName: node-1\n  containers: [{name: c, image: busybox}]\n---\n\
    apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n  namespace: default\n\
    spec:\n  nodeName: node-2\n  containers: [{name: c, image: busybox}]\n---\n\
    apiVersion: v1\nkind: Pod\nmetadata:\n  name: c\n  namespace: default\n\
    spec:\n  nodeName: node-1\n  containers: [{name: c, image: busybox}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_uses_the_status_subresource_field_selectors_and_chunks() {
    let (_server, k) = start().await;
    // The main resource ignores status; the status subresource sets it.
    k.ok(&["apply", "-f", &k.file("ns.yaml", NODE_STATUS)])
        .await;
    let status = k
        .ok(&["get", "mns", "node-1", "-o", "jsonpath={.status}"])
        .await;
    assert_eq!(status, "");
    k.ok(&[
        "patch",
        "nodestatus",
        "node-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"agentVersion":"0.1.0"}}"#,
    ])
    .await;
    let table = k.ok(&["get", "nodestatuses"]).await;
    assert!(
        table.contains("node-1") && table.contains("0.1.0"),
        "{table}"
    );

    k.ok(&["apply", "-f", &k.file("pods.yaml", PODS)]).await;
    let on_node_1 = k
        .ok(&[
            "get",
            "pods",
            "-n",
            "default",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(on_node_1, "pod/a\npod/c\n");
    // Pages of one object: list with limit and continue.
    let all = k
        .ok(&["get", "pods", "-A", "--chunk-size=1", "-o", "name"])
        .await;
    assert_eq!(all, "pod/a\npod/b\npod/c\n");
    let many = k.ok(&["delete", "pods", "-n", "default", "--all"]).await;
    assert_eq!(many.lines().count(), 3, "{many}");
}

fn daemonset(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: margay-node\n  namespace: kube-system\n\
         spec:\n  selector:\n    matchLabels: {{app: margay-node}}\n  template:\n    metadata:\n      \
         labels: {{app: margay-node}}\n    spec:\n      hostNetwork: true\n      containers:\n      \
         - name: agent\n        image: {image}\n        env:\n        - {{name: DATASTORE, value: kubernetes}}\n      \
         - name: bird\n        image: bird:2\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_updates_a_daemonset_with_a_strategic_merge_patch_and_dry_runs_on_the_server() {
    let (_server, k) = start().await;
    k.ok(&["apply", "-f", &k.file("ds.yaml", &daemonset("margay:1"))])
        .await;
    let out = k
        .ok(&["apply", "-f", &k.file("ds.yaml", &daemonset("margay:2"))])
        .await;
    assert!(
        out.contains("daemonset.apps/margay-node configured"),
        "{out}"
    );
    let images = k
        .ok(&[
            "get",
            "ds",
            "margay-node",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ])
        .await;
    assert_eq!(images, "margay:2 bird:2");
    let env = k
        .ok(&[
            "get",
            "ds",
            "margay-node",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ])
        .await;
    assert_eq!(env, "kubernetes");

    // Built-in kinds are checked as the Go types decode them: a misspelt field fails Strict.
    let typo = daemonset("margay:3").replace(
        "image: margay:3",
        "image: margay:3\n        imagePullPolicyy: Always",
    );
    let out = k.run(&["apply", "-f", &k.file("typo.yaml", &typo)]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{err}"
    );

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\n  namespace: default\ndata: {a: b}\n";
    let out = k
        .ok(&["apply", "--dry-run=server", "-f", &k.file("cm.yaml", cm)])
        .await;
    assert!(out.contains("(server dry run)"), "{out}");
    let out = k.run(&["get", "cm", "dry", "-n", "default"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );
}

async fn openssl(args: &[&str], dir: &Path) {
    let out = tokio::time::timeout(
        LIMIT,
        Command::new("openssl").args(args).current_dir(dir).output(),
    )
    .await
    .expect("openssl within the limit")
    .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
async fn certificate(dir: &Path) -> margay_integration::apiserver::tls::TlsFiles {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=margay-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir).await;
    let mut req = vec!["req", "-new", "-subj", "/CN=margay-test-apiserver"];
    req.extend(ec);
    req.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&req, dir).await;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
        dir,
    )
    .await;
    margay_integration::apiserver::tls::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: Some(dir.join("ca.pem")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_kubectl_and_the_backend_send_the_bearer_token() {
    let certs = tempfile::tempdir().unwrap();
    let server = ApiServer::start(Config {
        token: Some("s3cret".into()),
        tls: Some(certificate(certs.path()).await),
        ..Config::default()
    })
    .await
    .expect("server starts");
    assert!(server.url().starts_with("https://"));
    let k = Kubectl::new(&server);
    let names = k.ok(&["get", "ns", "-o", "name"]).await;
    assert!(names.contains("namespace/default"), "{names}");
    let anonymous = k.file(
        "anonymous",
        &server
            .kubeconfig()
            .replace("  user:\n    token: s3cret\n", "  user: {}\n"),
    );
    let out = k.run(&["--kubeconfig", &anonymous, "get", "ns"]).await;
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    // On a 401 over HTTPS kubectl asks for a user name; with no terminal that fails.
    let refused = err.contains("provide credentials") || err.contains("Please enter Username");
    assert!(!out.status.success() && refused, "{err}");

    let ds = margay_datastore::Kubernetes::connect(&margay_datastore::KubernetesConfig {
        kubeconfig: Some(k.dir.path().join("kubeconfig")),
        ..Default::default()
    })
    .await
    .expect("client from the kubeconfig");
    use margay_datastore::Datastore;
    let listing = ds.list("namespaces", None).await.expect("list over https");
    assert_eq!(listing.items.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_margay-test-apiserver"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("margay-test-apiserver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("it says where it listens within 20 s")
        .expect("read")
        .expect("a line");
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first}"
    );
    let out = tokio::time::timeout(
        LIMIT,
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["get", "namespaces", "-o", "name"])
            .output(),
    )
    .await
    .expect("kubectl within the limit")
    .expect("kubectl runs");
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("namespace/kube-system"), "{names}");
    child.kill().await.expect("stop the server");
}
