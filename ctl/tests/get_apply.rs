//! `margayctl` end to end against a real etcd on loopback: every `get` form as a golden
//! transcript, apply/get/delete round trips, bad input, conflicts and partial failures.

mod common;

use common::{Ctl, FIXTURES};

fn with_fixtures() -> Ctl {
    let ctl = Ctl::start();
    ctl.write("fixtures.yaml", FIXTURES);
    ctl.run(&["apply", "-f", "fixtures.yaml"]).ok();
    ctl
}

#[test]
fn applying_the_fixtures_reports_each_object() {
    let ctl = Ctl::start();
    ctl.write("fixtures.yaml", FIXTURES);
    insta::assert_snapshot!(ctl.transcript(&["apply -f fixtures.yaml", "apply -f fixtures.yaml"]));
}

#[test]
fn every_get_form_prints_as_golden() {
    let ctl = with_fixtures();
    insta::assert_snapshot!(ctl.transcript(common::GET_FORMS));
}

#[test]
fn get_as_yaml_and_json_prints_one_object_or_a_list() {
    let ctl = with_fixtures();
    insta::assert_snapshot!(ctl.transcript(&[
        "get ippool default-ipv4 -o yaml",
        "get ippool -o json",
        "get wep -n shop -o yaml",
        "get networkpolicy deny-all -n shop -o json",
    ]));
}

#[test]
fn get_of_a_missing_name_prints_the_others_and_fails() {
    let ctl = with_fixtures();
    insta::assert_snapshot!(ctl.transcript(&[
        "get ippool default-ipv4 nope",
        "get wep node--1-k8s-web--0-eth0 -A",
        "get pods",
        "get ippool -o custom-columns=NAME",
    ]));
}

#[test]
fn yaml_from_get_is_applied_back_unchanged() {
    let ctl = with_fixtures();
    for kind in [
        "ippool",
        "node",
        "bgppeer",
        "bgpconfiguration",
        "networkpolicy",
    ] {
        let yaml = ctl.run(&["get", kind, "-A", "-o", "yaml"]).ok().raw;
        let out = ctl.run_with(&["apply", "-f", "-"], &yaml).ok();
        assert!(
            out.stdout.lines().all(|l| l.ends_with(" unchanged")),
            "{kind}: {}",
            out.stdout
        );
    }
    let yaml = ctl.run(&["get", "wep", "-A", "-o", "yaml"]).ok().raw;
    let json = ctl.run(&["get", "wep", "-A", "-o", "json"]).ok().raw;
    assert!(
        ctl.run_with(&["apply", "-f", "-"], &yaml)
            .ok()
            .stdout
            .contains("unchanged")
    );
    assert!(
        ctl.run_with(&["apply", "-f", "-"], &json)
            .ok()
            .stdout
            .contains("unchanged")
    );
}

#[test]
fn objects_deleted_and_applied_again_from_their_yaml_come_back_the_same() {
    let ctl = with_fixtures();
    let before = ctl.run(&["get", "ippool", "-o", "yaml"]).ok().raw;
    ctl.write("pools.yaml", &before);
    let deleted = ctl.run(&["delete", "-f", "pools.yaml"]).ok();
    assert_eq!(deleted.stdout.lines().count(), 3, "{deleted:?}");
    assert_eq!(
        ctl.run(&["get", "ippool"]).ok().stdout,
        "NAME   CIDR   SELECTOR\n"
    );
    // Stored revisions are gone with the objects: create them from the YAML without them.
    let fresh: String = before
        .lines()
        .filter(|l| !l.contains("resourceVersion"))
        .map(|l| format!("{l}\n"))
        .collect();
    ctl.write("fresh.yaml", &fresh);
    let created = ctl.run(&["create", "-f", "fresh.yaml"]).ok();
    assert_eq!(
        created
            .stdout
            .lines()
            .filter(|l| l.ends_with(" created"))
            .count(),
        3
    );
    assert_eq!(
        common::normalise(&ctl.run(&["get", "ippool", "-o", "yaml"]).ok().raw),
        common::normalise(&before)
    );
}

#[test]
fn delete_by_kind_and_name_and_a_missing_one_fails() {
    let ctl = with_fixtures();
    insta::assert_snapshot!(ctl.transcript(&[
        "delete ippool zone-b",
        "delete wep node--1-k8s-web--0-eth0 -n shop",
        "delete bgppeer nope",
        "get ippool",
        "get wep -A",
    ]));
}

#[test]
fn bad_input_is_a_one_line_error_naming_the_problem() {
    let ctl = with_fixtures();
    let pool = |name: &str, spec: &str| {
        format!(
            "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        )
    };
    ctl.write(
        "unknown-field.yaml",
        &pool("p1", "{cidr: 10.1.0.0/16, natOutgoin: true}"),
    );
    ctl.write(
        "wrong-kind.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: IpPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n",
    );
    ctl.write(
        "wrong-api.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n",
    );
    ctl.write("bad-cidr.yaml", &pool("p1", "{cidr: 10.1.0.300/16}"));
    ctl.write("overlap.yaml", &pool("p1", "{cidr: 100.64.8.0/24}"));
    ctl.write("empty.yaml", "# nothing here\n");
    ctl.write("not-yaml.yaml", "kind: [IPPool\nspec: {cidr: \n");
    ctl.write(
        "no-name.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: IPPool\nspec: {cidr: 10.1.0.0/16}\n",
    );
    let cases = [
        "unknown-field.yaml",
        "wrong-kind.yaml",
        "wrong-api.yaml",
        "bad-cidr.yaml",
        "overlap.yaml",
        "empty.yaml",
        "not-yaml.yaml",
        "no-name.yaml",
        "missing.yaml",
    ];
    let mut transcript = String::new();
    for f in cases {
        let out = ctl.run(&["apply", "-f", f]);
        assert_eq!(out.code, 1, "{f}: {out:?}");
        assert_eq!(out.stdout, "", "{f}: nothing is applied");
        assert_eq!(out.stderr.lines().count(), 1, "{f}: one line: {out:?}");
        transcript.push_str(&format!("{f}: {}", out.stderr));
    }
    insta::assert_snapshot!(transcript);
    // Nothing of it was stored.
    assert!(!ctl.run(&["get", "ippool"]).ok().stdout.contains("p1"));
}

#[test]
fn a_bad_document_among_good_ones_stops_all_of_them() {
    let ctl = with_fixtures();
    ctl.write(
        "mixed.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: good}\nspec: {cidr: 10.1.0.0/16}\n---\n\
         apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: inside}\nspec: {cidr: 10.1.2.0/24}\n---\n\
         apiVersion: crd.margay.dev/v1\nkind: BGPPeer\nmetadata: {name: bad-asn}\nspec: {peerIP: 198.18.0.9, asNumber: 0}\n",
    );
    insta::assert_snapshot!(ctl.transcript(&["apply -f mixed.yaml", "get ippool"]));
}

#[test]
fn a_partial_failure_lists_what_was_written_and_what_was_not() {
    let ctl = with_fixtures();
    ctl.write(
        "two.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: new-pool}\nspec: {cidr: 10.9.0.0/16}\n---\n\
         apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: zone-b}\nspec: {cidr: 100.65.0.0/24}\n",
    );
    ctl.write(
        "replace.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 198.18.0.251, asNumber: 65000}\n---\n\
         apiVersion: crd.margay.dev/v1\nkind: BGPPeer\nmetadata: {name: tor-9}\nspec: {peerIP: 198.18.0.252, asNumber: 65000}\n",
    );
    insta::assert_snapshot!(ctl.transcript(&[
        "create -f two.yaml",
        "replace -f replace.yaml",
        "get bgppeer",
    ]));
}

#[test]
fn applying_yaml_read_before_a_concurrent_change_is_a_conflict() {
    let ctl = with_fixtures();
    let old = ctl.run(&["get", "ippool", "zone-b", "-o", "yaml"]).ok().raw;
    // Someone else changes the pool after we read it.
    let theirs = old.replace("disabled: true", "disabled: false");
    ctl.run_with(&["apply", "-f", "-"], &theirs).ok();
    // Our edit of the old copy must not silently overwrite theirs.
    let ours = old.replace("natOutgoing: false", "natOutgoing: true");
    let out = ctl.run_with(&["apply", "-f", "-"], &ours);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("IPPool \"zone-b\" was changed by someone else since it was read"),
        "{}",
        out.stderr
    );
    let now = ctl
        .run(&["get", "ippool", "zone-b", "-o", "wide"])
        .ok()
        .stdout;
    insta::assert_snapshot!(format!("{}{now}", out.stderr));
}

#[test]
fn usage_errors_exit_with_two() {
    let ctl = Ctl::start();
    for args in [
        &["get"][..],
        &["frobnicate"],
        &["apply"],
        &["ipam", "release"],
    ] {
        let out = ctl.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
    }
}

#[test]
fn completion_scripts_are_printed_for_each_shell() {
    let ctl = Ctl::start();
    for shell in ["bash", "zsh", "fish"] {
        let out = ctl.run(&["completion", shell]).ok();
        assert!(out.stdout.contains("margayctl"), "{shell}");
        assert!(out.stdout.contains("ipam"), "{shell}");
    }
}

#[test]
fn a_config_file_names_the_datastore() {
    let ctl = with_fixtures();
    ctl.write(
        "margayctl.cfg",
        &format!(
            "apiVersion: crd.margay.dev/v1\nkind: MargayAPIConfig\nmetadata: {{}}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: {}\n",
            ctl.endpoint()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(["--config", "margayctl.cfg", "get", "node"])
        .current_dir(ctl.path())
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("DATASTORE_TYPE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "NAME\nnode-1\nnode-2\n"
    );
    ctl.write("bad.cfg", "datastoreType: etcdv3\netcdEndpoint: http://x\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(["--config", "bad.cfg", "get", "node"])
        .current_dir(ctl.path())
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("DATASTORE_TYPE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.cfg") && err.contains("etcdEndpoint"),
        "{err}"
    );
}

#[test]
fn version_without_a_datastore_prints_the_client_and_warns() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(["version"])
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .env_remove("MARGAYCTL_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("Client Version:"), "{stdout}");
    assert!(
        stderr.starts_with("warning: cannot read the agents' versions"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn an_unreachable_datastore_is_a_one_line_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_margayctl"))
        .args(["get", "ippool"])
        .env("DATASTORE_TYPE", "etcdv3")
        .env("ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .env_remove("MARGAYCTL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: listing IPPool objects: datastore unavailable"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_directory_is_applied_file_by_file_in_name_order_and_deleted_from_stdin() {
    let ctl = Ctl::start();
    std::fs::create_dir(ctl.path().join("conf")).unwrap();
    ctl.write(
        "conf/b-peer.json",
        r#"{"apiVersion": "crd.margay.dev/v1", "kind": "BGPPeer", "metadata": {"name": "tor"},
            "spec": {"peerIP": "198.18.0.250", "asNumber": 65000}}"#,
    );
    ctl.write(
        "conf/a-pool.yaml",
        "apiVersion: crd.margay.dev/v1\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 100.64.0.0/16}\n",
    );
    ctl.write("conf/notes.txt", "not a resource\n");
    let out = ctl.run(&["apply", "-f", "conf"]).ok();
    assert_eq!(
        out.stdout,
        "IPPool \"p1\" created\nBGPPeer \"tor\" created\n"
    );
    let yaml = ctl.run(&["get", "bgppeer", "tor", "-o", "yaml"]).ok().raw;
    let out = ctl.run_with(&["delete", "-f", "-"], &yaml).ok();
    assert_eq!(out.stdout, "BGPPeer \"tor\" deleted\n");
    assert_eq!(
        ctl.run(&["get", "bgppeer"]).ok().stdout,
        "NAME   PEERIP   NODE   ASN\n"
    );
}
