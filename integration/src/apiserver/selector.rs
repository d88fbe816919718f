//! Label selectors (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) and field selectors
//! (`spec.nodeName=node-1,metadata.namespace!=kube-system`), as list and watch take them.
//!
//! Field selectors take any dotted path of a string, number or boolean field; a real apiserver
//! takes only the fields each kind declares (`spec.nodeName` for pods, `metadata.name`…).

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed label or field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Req>,
    fields: bool,
}

/// Splits on commas that are not inside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl Selector {
    /// Parses a label selector.
    pub fn labels(s: &str) -> Result<Self, ApiError> {
        Self::parse(s, false)
    }

    /// Parses a field selector.
    pub fn fields(s: &str) -> Result<Self, ApiError> {
        Self::parse(s, true)
    }

    fn parse(s: &str, fields: bool) -> Result<Self, ApiError> {
        let bad = |t: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid {} selector term {t:?}",
                if fields { "field" } else { "label" }
            ))
        };
        let mut reqs = Vec::new();
        for t in terms(s) {
            let req = if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v).ok_or_else(|| bad(t))?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().into(), set(v).ok_or_else(|| bad(t))?)
            } else if let Some(k) = t.strip_prefix('!') {
                Req::Absent(k.trim().into())
            } else {
                Req::Exists(t.into())
            };
            if fields && !matches!(req, Req::Eq(..) | Req::Ne(..)) {
                return Err(bad(t));
            }
            reqs.push(req);
        }
        Ok(Self { reqs, fields })
    }

    fn lookup(&self, obj: &Value, key: &str) -> Option<String> {
        let v = if self.fields {
            key.split('.').try_fold(obj, |v, part| v.get(part))?
        } else {
            obj["metadata"]["labels"].get(key)?
        };
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether an object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => {
                // A missing field compares as the empty string, as the apiserver does.
                let have = self.lookup(obj, k);
                if self.fields {
                    have.unwrap_or_default() == *v
                } else {
                    have.as_deref() == Some(v)
                }
            }
            Req::Ne(k, v) => self.lookup(obj, k).unwrap_or_default() != *v,
            Req::In(k, vs) => self.lookup(obj, k).is_some_and(|h| vs.contains(&h)),
            Req::NotIn(k, vs) => self.lookup(obj, k).is_none_or(|h| !vs.contains(&h)),
            Req::Exists(k) => self.lookup(obj, k).is_some(),
            Req::Absent(k) => self.lookup(obj, k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_take_every_operator() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier!=back", true),
            ("app in (db, web)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("missing!=x", true),
            ("", true),
        ] {
            assert_eq!(Selector::labels(sel).unwrap().matches(&pod), want, "{sel}");
        }
    }

    #[test]
    fn pods_are_selected_by_node_name() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1"}});
        assert!(
            Selector::fields("spec.nodeName=node-1")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !Selector::fields("spec.nodeName=node-2")
                .unwrap()
                .matches(&pod)
        );
        assert!(Selector::fields("spec.nodeName in (a)").is_err());
    }
}
