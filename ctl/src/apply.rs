//! `apply|create|replace|delete -f FILE|DIR|-` and `delete KIND NAME...`.
//!
//! Every document is checked before anything is written; if one is wrong, nothing is written.
//! Writes then go one object at a time (each a compare-and-swap); when one fails the others are
//! still tried, and the summary lists what was written and what was not.

use std::fmt::Write as _;

use margay_api::IPPool;

use crate::check::{Checked, check_doc, check_pool_overlaps};
use crate::docs::Doc;
use crate::error::{CtlError, Result};
use crate::kinds::Kind;
use crate::store::{Applied, Store, StoreError, ns_name};

/// Which write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create or change.
    Apply,
    /// Create; an existing object is an error.
    Create,
    /// Change; a missing object is an error.
    Replace,
    /// Delete.
    Delete,
}

impl Verb {
    fn past(self) -> &'static str {
        match self {
            Verb::Apply => "applied",
            Verb::Create => "created",
            Verb::Replace => "replaced",
            Verb::Delete => "deleted",
        }
    }
}

/// The outcome: lines for standard output, and the error if anything was not written.
#[derive(Debug)]
pub struct Outcome {
    /// One line per object written.
    pub stdout: String,
    /// One line per object not written, then the summary; `None` if all went well.
    pub failure: Option<CtlError>,
}

/// Checks every document, then writes them.
pub async fn run(store: &Store, verb: Verb, docs: &[Doc], namespace: &str) -> Result<Outcome> {
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for d in docs {
        match check_doc(d, namespace) {
            Ok(c) => checked.push(c),
            Err(p) => problems.push(p),
        }
    }
    if verb != Verb::Delete && checked.iter().any(|c| c.kind == Kind::IPPool) {
        let stored: Vec<IPPool> = store
            .list(Kind::IPPool, None)
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        problems.extend(check_pool_overlaps(&checked, &stored));
    }
    if !problems.is_empty() {
        let mut msg = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        if docs.len() > 1 {
            let _ = write!(
                msg,
                "\nnothing was {}: fix the documents above and run again",
                verb.past()
            );
        }
        return Err(CtlError::Msg(msg));
    }
    let mut stdout = String::new();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for c in &checked {
        match write_one(store, verb, c).await {
            Ok(what) => {
                let _ = writeln!(stdout, "{} {what}", c.label());
                done.push(c.label());
            }
            Err(e) => failed.push(format!("{}: {e}", c.source)),
        }
    }
    let failure = (!failed.is_empty()).then(|| {
        let mut msg = failed.join("\n");
        if checked.len() > 1 {
            let _ = write!(
                msg,
                "\n{} of {} objects not {}; {}: {}",
                failed.len(),
                checked.len(),
                verb.past(),
                verb.past(),
                if done.is_empty() {
                    "none".to_string()
                } else {
                    done.join(", ")
                }
            );
        }
        CtlError::Msg(msg)
    });
    Ok(Outcome { stdout, failure })
}

async fn write_one(store: &Store, verb: Verb, c: &Checked) -> Result<&'static str, StoreError> {
    match verb {
        Verb::Apply => Ok(match store.apply(c.kind, &c.value, true).await? {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }),
        Verb::Create => store.create(c.kind, &c.value).await.map(|_| "created"),
        Verb::Replace => Ok(match store.apply(c.kind, &c.value, false).await? {
            Applied::Unchanged => "unchanged",
            _ => "replaced",
        }),
        Verb::Delete => {
            let (ns, name) = ns_name(&c.value);
            store
                .delete(c.kind, ns.as_deref(), &name, None)
                .await
                .map(|_| "deleted")
        }
    }
}

/// `delete KIND NAME...`: deletes each; missing ones are errors after the others are deleted.
pub async fn delete_names(
    store: &Store,
    kind: Kind,
    names: &[String],
    namespace: &str,
) -> Result<Outcome> {
    let mut stdout = String::new();
    let mut failed = Vec::new();
    for n in names {
        match store.delete(kind, Some(namespace), n, None).await {
            Ok(()) => {
                let label = if kind.namespaced() {
                    format!("{kind} \"{namespace}/{n}\"")
                } else {
                    format!("{kind} {n:?}")
                };
                let _ = writeln!(stdout, "{label} deleted");
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    let failure = (!failed.is_empty()).then(|| CtlError::Msg(failed.join("\n")));
    Ok(Outcome { stdout, failure })
}
