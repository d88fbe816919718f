//! `margay-cni install`: what the DaemonSet's init container runs. Copies the plugin into the
//! host's CNI bin dir and writes the conflist, each atomically (a temporary file renamed into
//! place), so that a runtime never executes a half-copied binary or reads half a config.

use std::path::{Path, PathBuf};

use serde_json::json;

/// Where and what to install.
#[derive(Debug, Clone)]
pub struct Install {
    /// The plugin binary to copy (normally this executable).
    pub binary: PathBuf,
    /// The host's CNI bin dir (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The host's CNI conf dir (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The network name.
    pub network: String,
    /// The agent's socket.
    pub agent_socket: PathBuf,
    /// Interface MTU, if set.
    pub mtu: Option<u32>,
}

fn atomic_write(
    dest: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), String> {
    let dir = dest
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", dest.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("margay");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    write(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} into place: {e}", dest.display())
    })
}

/// The conflist Margay installs.
pub fn conflist(network: &str, agent_socket: &Path, mtu: Option<u32>) -> serde_json::Value {
    let mut plugin =
        json!({"type": "margay-cni", "agent_socket": agent_socket, "log_level": "info"});
    if let Some(m) = mtu {
        plugin["mtu"] = json!(m);
    }
    json!({
        "name": network,
        "cniVersion": crate::version::CURRENT,
        "plugins": [plugin, {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}],
    })
}

impl Install {
    /// Installs the binary and writes `10-<network>.conflist`; returns the paths written.
    pub fn run(&self) -> Result<(PathBuf, PathBuf), String> {
        let bin = self.bin_dir.join("margay-cni");
        atomic_write(&bin, |tmp| {
            std::fs::copy(&self.binary, tmp)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))
        })?;
        let conf = self.conf_dir.join("10-margay.conflist");
        let text =
            serde_json::to_string_pretty(&conflist(&self.network, &self.agent_socket, self.mtu))
                .expect("a JSON value serialises");
        atomic_write(&conf, |tmp| std::fs::write(tmp, format!("{text}\n")))?;
        Ok((bin, conf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_the_binary_and_writes_the_conflist_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plugin");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        let i = Install {
            binary: src,
            bin_dir: dir.path().join("opt/cni/bin"),
            conf_dir: dir.path().join("etc/cni/net.d"),
            network: "k8s-pod-network".into(),
            agent_socket: "/var/run/margay/agent.sock".into(),
            mtu: Some(1440),
        };
        let (bin, conf) = i.run().unwrap();
        assert_eq!(std::fs::read(&bin).unwrap(), b"#!/bin/sh\n");
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
        assert_eq!(c["plugins"][0]["type"], "margay-cni");
        assert_eq!(c["plugins"][0]["mtu"], 1440);
        assert_eq!(c["name"], "k8s-pod-network");
        // Running again replaces both in place and leaves no temporary file behind.
        i.run().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("etc/cni/net.d"))
            .unwrap()
            .collect();
        assert_eq!(leftovers.len(), 1);
    }
}
