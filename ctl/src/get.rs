//! `margayctl get KIND [NAME...]`: tables as calicoctl prints them, `-o wide`, `-o yaml|json`
//! (a `List` for a listing, which `apply -f` reads back), `-o custom-columns=`, `--selector`.

use std::collections::BTreeMap;

use margay_api::Selector;
use serde_json::{Value, json};

use crate::columns::{self, JsonPath, parse_custom_columns};
use crate::error::{CtlError, Result};
use crate::kinds::Kind;
use crate::output::{self, Format, Table};
use crate::store::{Store, StoreError};

/// How `get` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutput {
    /// The default columns.
    Table,
    /// More columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `custom-columns=HDR:.path,…`.
    Custom(Vec<(String, JsonPath)>),
}

impl GetOutput {
    /// Parses `-o`: `wide`, `json`, `yaml`, `custom-columns=…`.
    pub fn parse(s: &str) -> Result<GetOutput> {
        Ok(match s {
            "" | "table" => GetOutput::Table,
            "wide" => GetOutput::Wide,
            "json" => GetOutput::Json,
            "yaml" => GetOutput::Yaml,
            _ => match s.strip_prefix("custom-columns=") {
                Some(spec) => GetOutput::Custom(parse_custom_columns(spec)?),
                None => {
                    return Err(CtlError::msg(format!(
                        "output format {s:?} is not one of wide, json, yaml, custom-columns=HDR:.path,…"
                    )));
                }
            },
        })
    }
}

/// What to get.
#[derive(Debug, Clone)]
pub struct GetArgs {
    /// The kind.
    pub kind: Kind,
    /// Names (all objects when empty).
    pub names: Vec<String>,
    /// The namespace of namespaced kinds.
    pub namespace: String,
    /// Every namespace.
    pub all_namespaces: bool,
    /// A Calico selector on the objects' labels.
    pub selector: Option<String>,
    /// How to print.
    pub output: GetOutput,
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), columns::scalar(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `get`; returns what to print on standard output. Objects asked for by name that do not
/// exist are errors, after the ones found have been printed.
pub async fn get(store: &Store, args: &GetArgs) -> Result<(String, Vec<StoreError>)> {
    if args.all_namespaces && !args.names.is_empty() && args.kind.namespaced() {
        return Err(CtlError::msg(format!(
            "a {} is named within its namespace: give -n NAMESPACE instead of --all-namespaces",
            args.kind
        )));
    }
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    let mut missing = Vec::new();
    let mut items = Vec::new();
    if args.names.is_empty() {
        items = store.list(args.kind, ns).await?;
    } else {
        for n in &args.names {
            match store.get(args.kind, ns, n).await {
                Ok(v) => items.push(v),
                Err(e @ StoreError::NotFound { .. }) => missing.push(e),
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(sel) = &args.selector {
        let sel = Selector::parse(sel).map_err(|e| CtlError::msg(e.to_string()))?;
        items.retain(|v| sel.matches(&labels_of(v)));
    }
    let text = match &args.output {
        GetOutput::Json | GetOutput::Yaml => {
            let format = if args.output == GetOutput::Json {
                Format::Json
            } else {
                Format::Yaml
            };
            let doc = if args.names.len() == 1 && items.len() == 1 {
                items.remove(0)
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            output::serialise(&doc, format).map_err(|e| CtlError::msg(e.to_string()))?
        }
        GetOutput::Custom(cols) => {
            let mut t = Table::new(cols.iter().map(|(h, _)| h.clone()));
            for v in &items {
                t.row(cols.iter().map(|(_, p)| p.cell(v)));
            }
            t.render()
        }
        GetOutput::Table | GetOutput::Wide => {
            let wide = args.output == GetOutput::Wide;
            let cols = columns::columns(args.kind, wide, args.all_namespaces);
            let cluster_asn = if args.kind == Kind::Node && wide {
                cluster_asn(store).await?
            } else {
                margay_api::bgp::DEFAULT_AS_NUMBER
            };
            let mut t = Table::new(cols.iter().map(|c| c.header));
            for v in &items {
                t.row(cols.iter().map(|c| c.cell(v, cluster_asn)));
            }
            t.render()
        }
    };
    Ok((text, missing))
}

/// The AS number nodes inherit: the default BGPConfiguration's, else 64512.
async fn cluster_asn(store: &Store) -> Result<u32> {
    match store
        .get(
            Kind::BGPConfiguration,
            None,
            margay_api::bgp::BGP_CONFIGURATION_DEFAULT,
        )
        .await
    {
        Ok(v) => Ok(v
            .pointer("/spec/asNumber")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(margay_api::bgp::DEFAULT_AS_NUMBER)),
        Err(StoreError::NotFound { .. }) => Ok(margay_api::bgp::DEFAULT_AS_NUMBER),
        Err(e) => Err(e.into()),
    }
}
