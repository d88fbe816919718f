//! Table columns: the default and `-o wide` columns of each kind, JSON-path cell extraction and
//! `-o custom-columns=HEADER:.json.path,…`.

use serde_json::Value;

use crate::kinds::Kind;

/// A path into an object, as kubectl's custom columns write it: `.spec.cidr`, `{.metadata.name}`,
/// `.spec.ipNetworks[0]`, `.status.bgp.peers[*].peerIP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
    All,
}

/// A path or a custom-columns spec that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnError {
    /// A JSON path that is not `.a.b[0]` shaped.
    #[error("bad JSON path {path:?}: {why}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A custom column without `HEADER:PATH`.
    #[error("bad custom column {0:?}: expected HEADER:.json.path (e.g. NAME:.metadata.name)")]
    Column(String),
}

impl JsonPath {
    /// Parses `.a.b[0]`, `{.a.b}`, `a.b` or `.a[*].b`.
    pub fn parse(s: &str) -> Result<JsonPath, ColumnError> {
        let bad = |why| ColumnError::Path {
            path: s.to_string(),
            why,
        };
        let mut t = s.trim();
        if let Some(inner) = t.strip_prefix('{') {
            t = inner.strip_suffix('}').ok_or_else(|| bad("unclosed {"))?;
        }
        let t = t.strip_prefix('.').unwrap_or(t);
        let mut steps = Vec::new();
        if t.is_empty() {
            return Ok(JsonPath(steps));
        }
        for part in t.split('.') {
            let (name, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if name.is_empty() && rest.is_empty() {
                return Err(bad("empty field name"));
            }
            if !name.is_empty() {
                steps.push(Step::Field(name.to_string()));
            }
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| bad("unclosed ["))?;
                let idx = &r[..end];
                steps.push(if idx == "*" {
                    Step::All
                } else {
                    Step::Index(idx.parse().map_err(|_| bad("index is not a number or *"))?)
                });
                rest = &r[end + 1..];
            }
            if !rest.is_empty() {
                return Err(bad("text after ]"));
            }
        }
        Ok(JsonPath(steps))
    }

    /// The values at this path (several with `[*]`, none when the path is absent).
    pub fn values<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for step in &self.0 {
            cur = cur
                .into_iter()
                .flat_map(|v| -> Vec<&Value> {
                    match step {
                        Step::Field(f) => v.get(f).into_iter().collect(),
                        Step::Index(i) => v.get(*i).into_iter().collect(),
                        Step::All => match v {
                            Value::Array(a) => a.iter().collect(),
                            Value::Object(o) => o.values().collect(),
                            _ => Vec::new(),
                        },
                    }
                })
                .collect();
        }
        cur
    }

    /// The cell for this path: strings bare, other values as JSON, several joined by commas,
    /// `<none>` when absent (as kubectl).
    pub fn cell(&self, v: &Value) -> String {
        let vals = self.values(v);
        if vals.is_empty() {
            return "<none>".to_string();
        }
        vals.into_iter().map(scalar).collect::<Vec<_>>().join(",")
    }
}

/// A value as a table cell: strings without quotes, arrays comma-joined, `null` empty.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Parses `-o custom-columns=NAME:.metadata.name,CIDR:.spec.cidr`.
pub fn parse_custom_columns(spec: &str) -> Result<Vec<(String, JsonPath)>, ColumnError> {
    spec.split(',')
        .map(|col| {
            let (h, p) = col
                .split_once(':')
                .filter(|(h, p)| !h.is_empty() && !p.is_empty())
                .ok_or_else(|| ColumnError::Column(col.to_string()))?;
            Ok((h.to_string(), JsonPath::parse(p)?))
        })
        .collect()
}

/// One column of a kind's table: its header and how to fill a cell.
#[derive(Debug, Clone)]
pub struct Column {
    /// The header (printed upper-case).
    pub header: &'static str,
    cell: Cell,
}

#[derive(Debug, Clone)]
enum Cell {
    Path(&'static str),
    /// The node's AS number or, when it inherits it, the cluster's in parentheses (as calicoctl).
    NodeAsn,
    /// How many addresses of a block are in use.
    BlockInUse,
}

impl Column {
    const fn path(header: &'static str, path: &'static str) -> Column {
        Column {
            header,
            cell: Cell::Path(path),
        }
    }

    /// This column's cell for `obj`; `cluster_asn` is what nodes inherit.
    pub fn cell(&self, obj: &Value, cluster_asn: u32) -> String {
        match &self.cell {
            Cell::Path(p) => {
                let vals = JsonPath::parse(p)
                    .map(|jp| jp.values(obj).into_iter().map(scalar).collect::<Vec<_>>())
                    .unwrap_or_default();
                vals.join(",")
            }
            Cell::NodeAsn => match obj.pointer("/spec/bgp/asNumber") {
                Some(v) => scalar(v),
                None if obj.pointer("/spec/bgp").is_some() => format!("({cluster_asn})"),
                None => String::new(),
            },
            Cell::BlockInUse => obj
                .pointer("/spec/allocations")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|x| !x.is_null()).count().to_string())
                .unwrap_or_default(),
        }
    }
}

/// The columns of `kind`'s table (`wide` for `-o wide`; `all_namespaces` adds NAMESPACE first).
pub fn columns(kind: Kind, wide: bool, all_namespaces: bool) -> Vec<Column> {
    use Column as C;
    let name = C::path("NAME", ".metadata.name");
    let mut cols = match (kind, wide) {
        (Kind::IPPool, false) => vec![
            name,
            C::path("CIDR", ".spec.cidr"),
            C::path("SELECTOR", ".spec.nodeSelector"),
        ],
        (Kind::IPPool, true) => vec![
            name,
            C::path("CIDR", ".spec.cidr"),
            C::path("NAT", ".spec.natOutgoing"),
            C::path("DISABLED", ".spec.disabled"),
            C::path("DISABLEBGPEXPORT", ".spec.disableBGPExport"),
            C::path("SELECTOR", ".spec.nodeSelector"),
            C::path("ASSIGNMENTMODE", ".spec.assignmentMode"),
        ],
        (Kind::Node, false) => vec![name],
        (Kind::Node, true) => vec![
            name,
            Column {
                header: "ASN",
                cell: Cell::NodeAsn,
            },
            C::path("IPV4", ".spec.bgp.ipv4Address"),
            C::path("IPV6", ".spec.bgp.ipv6Address"),
        ],
        (Kind::BGPPeer, false) => vec![
            name,
            C::path("PEERIP", ".spec.peerIP"),
            C::path("NODE", ".spec.node"),
            C::path("ASN", ".spec.asNumber"),
        ],
        (Kind::BGPPeer, true) => vec![
            name,
            C::path("PEERIP", ".spec.peerIP"),
            C::path("NODE", ".spec.node"),
            C::path("ASN", ".spec.asNumber"),
            C::path("NODESELECTOR", ".spec.nodeSelector"),
            C::path("PEERSELECTOR", ".spec.peerSelector"),
        ],
        (Kind::BGPConfiguration, false) => vec![
            name,
            C::path("LOGSEVERITY", ".spec.logSeverityScreen"),
            C::path("MESHENABLED", ".spec.nodeToNodeMeshEnabled"),
            C::path("ASNUMBER", ".spec.asNumber"),
        ],
        (Kind::BGPConfiguration, true) => vec![
            name,
            C::path("LOGSEVERITY", ".spec.logSeverityScreen"),
            C::path("MESHENABLED", ".spec.nodeToNodeMeshEnabled"),
            C::path("ASNUMBER", ".spec.asNumber"),
            C::path("LISTENPORT", ".spec.listenPort"),
        ],
        (Kind::WorkloadEndpoint, false) => vec![
            C::path("WORKLOAD", ".spec.pod"),
            C::path("NODE", ".spec.node"),
            C::path("NETWORKS", ".spec.ipNetworks"),
            C::path("INTERFACE", ".spec.interfaceName"),
        ],
        (Kind::WorkloadEndpoint, true) => vec![
            name,
            C::path("WORKLOAD", ".spec.pod"),
            C::path("NODE", ".spec.node"),
            C::path("NETWORKS", ".spec.ipNetworks"),
            C::path("INTERFACE", ".spec.interfaceName"),
            C::path("MAC", ".spec.mac"),
        ],
        (Kind::NetworkPolicy, false) => vec![name],
        (Kind::NetworkPolicy, true) => vec![name, C::path("POLICYTYPES", ".spec.policyTypes")],
        (Kind::IPAMBlock, false) => vec![
            name,
            C::path("CIDR", ".spec.cidr"),
            C::path("AFFINITY", ".spec.affinity"),
        ],
        (Kind::IPAMBlock, true) => vec![
            name,
            C::path("CIDR", ".spec.cidr"),
            C::path("AFFINITY", ".spec.affinity"),
            C::path("STRICT", ".spec.strictAffinity"),
            Column {
                header: "IN USE",
                cell: Cell::BlockInUse,
            },
        ],
        (Kind::NodeStatus, _) => vec![
            name,
            C::path("NODE", ".spec.node"),
            C::path("AGENTVERSION", ".status.agentVersion"),
        ],
        (Kind::BlockAffinity, _) => vec![
            name,
            C::path("NODE", ".spec.node"),
            C::path("CIDR", ".spec.cidr"),
            C::path("STATE", ".spec.state"),
        ],
        _ => vec![name],
    };
    if all_namespaces && kind.namespaced() {
        cols.insert(0, C::path("NAMESPACE", ".metadata.namespace"));
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_fields_indices_and_wildcards() {
        let v = json!({"spec": {"cidr": "10.0.0.0/8", "nets": ["a", "b"], "peers": [{"ip": "1"}, {"ip": "2"}]}});
        assert_eq!(
            JsonPath::parse(".spec.cidr").unwrap().cell(&v),
            "10.0.0.0/8"
        );
        assert_eq!(JsonPath::parse("{.spec.nets[1]}").unwrap().cell(&v), "b");
        assert_eq!(
            JsonPath::parse(".spec.peers[*].ip").unwrap().cell(&v),
            "1,2"
        );
        assert_eq!(JsonPath::parse(".spec.nets").unwrap().cell(&v), "a,b");
        assert_eq!(JsonPath::parse(".spec.missing").unwrap().cell(&v), "<none>");
    }

    #[test]
    fn bad_paths_say_what_is_wrong() {
        assert!(
            JsonPath::parse(".a[x]")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
        assert!(
            JsonPath::parse("{.a")
                .unwrap_err()
                .to_string()
                .contains("unclosed {")
        );
        assert!(JsonPath::parse(".a..b").is_err());
    }

    #[test]
    fn custom_columns_are_header_colon_path_pairs() {
        let cols = parse_custom_columns("NAME:.metadata.name,CIDR:.spec.cidr").unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[1].0, "CIDR");
        assert_eq!(cols[1].1.cell(&json!({"spec": {"cidr": "x"}})), "x");
        let e = parse_custom_columns("NAME").unwrap_err().to_string();
        assert!(e.contains("expected HEADER:.json.path"), "{e}");
    }

    #[test]
    fn nodes_without_their_own_asn_show_the_inherited_one_in_parentheses() {
        let cols = columns(Kind::Node, true, false);
        let n =
            json!({"metadata": {"name": "n1"}, "spec": {"bgp": {"ipv4Address": "198.18.0.1/24"}}});
        let cells: Vec<String> = cols.iter().map(|c| c.cell(&n, 64512)).collect();
        assert_eq!(cells, ["n1", "(64512)", "198.18.0.1/24", ""]);
    }

    #[test]
    fn all_namespaces_puts_the_namespace_first() {
        let cols = columns(Kind::WorkloadEndpoint, false, true);
        assert_eq!(cols[0].header, "NAMESPACE");
        assert_eq!(columns(Kind::IPPool, false, true)[0].header, "NAME");
    }
}
