//! Kubernetes `LabelSelector` (`matchLabels` + `matchExpressions`) matching, and its translation
//! into a Calico-style [`Selector`](super::Selector).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Expr, Labels, Selector};

/// A `LabelSelector` that Kubernetes would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSelectorError {
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "matchExpressions[{index}].operator {operator:?} is not one of In, NotIn, Exists, DoesNotExist"
    )]
    UnknownOperator {
        /// Index in `matchExpressions`.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// In/NotIn without values.
    #[error("matchExpressions[{index}].values must not be empty for operator {operator}")]
    MissingValues {
        /// Index in `matchExpressions`.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// Exists/DoesNotExist with values.
    #[error("matchExpressions[{index}].values must be empty for operator {operator}")]
    UnexpectedValues {
        /// Index in `matchExpressions`.
        index: usize,
        /// The operator given.
        operator: String,
    },
}

impl LabelSelectorError {
    /// The path of the bad field within the selector: `matchExpressions[0].operator`.
    pub fn field(&self) -> String {
        match self {
            LabelSelectorError::UnknownOperator { index, .. } => {
                format!("matchExpressions[{index}].operator")
            }
            LabelSelectorError::MissingValues { index, .. }
            | LabelSelectorError::UnexpectedValues { index, .. } => {
                format!("matchExpressions[{index}].values")
            }
        }
    }

    /// What is wrong, without the field path.
    pub fn reason(&self) -> String {
        match self {
            LabelSelectorError::UnknownOperator { operator, .. } => {
                format!("{operator:?} is not one of In, NotIn, Exists, DoesNotExist")
            }
            LabelSelectorError::MissingValues { operator, .. } => {
                format!("must not be empty for operator {operator}")
            }
            LabelSelectorError::UnexpectedValues { operator, .. } => {
                format!("must be empty for operator {operator}")
            }
        }
    }
}

/// Translates a Kubernetes `LabelSelector` into an equivalent [`Selector`]. All terms are ANDed;
/// the empty selector is `all()` (it selects everything, as in a NetworkPolicy `podSelector: {}`).
pub fn selector_from_label_selector(sel: &LabelSelector) -> Result<Selector, LabelSelectorError> {
    let mut terms = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        terms.push(Expr::Eq(k.clone(), v.clone()));
    }
    for (index, req) in sel.match_expressions.iter().flatten().enumerate() {
        let values: BTreeSet<String> = req.values.iter().flatten().cloned().collect();
        let op = req.operator.as_str();
        let key = req.key.clone();
        let term = match op {
            "In" | "NotIn" if values.is_empty() => {
                return Err(LabelSelectorError::MissingValues {
                    index,
                    operator: op.to_string(),
                });
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(LabelSelectorError::UnexpectedValues {
                    index,
                    operator: op.to_string(),
                });
            }
            "In" => Expr::In(key, values),
            "NotIn" => Expr::NotIn(key, values),
            "Exists" => Expr::Has(key),
            "DoesNotExist" => Expr::Not(Box::new(Expr::Has(key))),
            _ => {
                return Err(LabelSelectorError::UnknownOperator {
                    index,
                    operator: op.to_string(),
                });
            }
        };
        terms.push(term);
    }
    let expr = match terms.len() {
        0 => Expr::All,
        1 => terms.remove(0),
        _ => Expr::And(terms),
    };
    Ok(Selector::from_expr(expr))
}

/// Whether `labels` satisfy a Kubernetes `LabelSelector`: every `matchLabels` pair and every
/// `matchExpressions` requirement (`In`, `NotIn` — which also matches when the key is absent —,
/// `Exists`, `DoesNotExist`). The empty selector matches everything.
pub fn label_selector_matches<L: Labels + ?Sized>(
    sel: &LabelSelector,
    labels: &L,
) -> Result<bool, LabelSelectorError> {
    Ok(selector_from_label_selector(sel)?.matches(labels))
}
