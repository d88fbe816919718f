//! `margayctl version`: the client's version and every agent's (from their `NodeStatus`), with a
//! warning when they differ, so that a half-done upgrade shows before it bites.

use serde::Serialize;

use crate::node_status::statuses;
use crate::output::{self, Format, Table};
use crate::store::Store;

/// This client's version.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One agent's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersion {
    /// The node.
    pub node: String,
    /// Its agent's version (`unknown` if not published).
    pub version: String,
}

/// Everything `version` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// This client's version.
    pub client_version: String,
    /// The commit it was built from.
    pub git_commit: String,
    /// The agents' versions, when the datastore could be read.
    pub agents: Vec<AgentVersion>,
}

impl VersionInfo {
    /// The client's own version, no agents.
    pub fn client() -> Self {
        VersionInfo {
            client_version: CLIENT_VERSION.to_string(),
            git_commit: option_env!("MARGAY_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            agents: Vec::new(),
        }
    }

    /// Adds the agents' versions from the datastore.
    pub async fn with_agents(mut self, store: &Store) -> crate::error::Result<Self> {
        self.agents = statuses(store)
            .await?
            .into_iter()
            .map(|s| AgentVersion {
                version: s
                    .status
                    .and_then(|st| st.agent_version)
                    .unwrap_or_else(|| "unknown".to_string()),
                node: s.spec.node,
            })
            .collect();
        Ok(self)
    }

    /// A warning per agent whose version differs from the client's.
    pub fn mismatches(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|a| a.version != self.client_version)
            .map(|a| {
                if a.version == "unknown" {
                    format!("node {} has not published its agent's version", a.node)
                } else {
                    format!(
                        "node {} runs agent {}, this client is {}: upgrade so that they match",
                        a.node, a.version, self.client_version
                    )
                }
            })
            .collect()
    }

    /// Renders for `-o`.
    pub fn render(&self, format: Format) -> crate::error::Result<String> {
        match format {
            Format::Table | Format::Wide => {
                let mut out = format!(
                    "Client Version:   {}\nGit commit:       {}\n",
                    self.client_version, self.git_commit
                );
                if !self.agents.is_empty() {
                    let mut t = Table::new(["node", "agent version"]);
                    for a in &self.agents {
                        t.row([a.node.as_str(), a.version.as_str()]);
                    }
                    out.push_str(&t.render());
                }
                Ok(out)
            }
            f => output::serialise(self, f).map_err(|e| crate::error::CtlError::msg(e.to_string())),
        }
    }
}
