//! Label selectors: Calico's selector language ([`Selector`]) and Kubernetes `LabelSelector`
//! matching ([`label_selector_matches`]).
//!
//! The language, as Calico has it:
//!
//! | expression | matches when |
//! |---|---|
//! | `all()` (or the empty string) | always |
//! | `has(k)` | label `k` is present |
//! | `k == 'v'` | `k` is present with value `v` |
//! | `k != 'v'` | `k` is absent or has another value |
//! | `k in {'a', 'b'}` | `k` is present with one of the values |
//! | `k not in {'a', 'b'}` | `k` is absent or has none of the values |
//! | `!e` | `e` does not match |
//! | `e && f`, `e \|\| f` | both, either (`!` binds tighter than `&&`, which binds tighter than `\|\|`) |
//! | `(e)` | grouping |
//!
//! Values are quoted with `'` or `"` (no escapes, as in Calico).

mod label_selector;
mod parser;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

pub use label_selector::{
    LabelSelectorError, label_selector_matches, selector_from_label_selector,
};

/// A selector string that does not parse, with the 1-based column where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {selector:?}: column {column}: {message}")]
pub struct SelectorError {
    /// The whole selector as given.
    pub selector: String,
    /// 1-based column (in characters) of the offending token; one past the end for "unexpected
    /// end of selector".
    pub column: usize,
    /// What was expected or found there.
    pub message: String,
}

/// A parsed selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `has(key)`.
    Has(String),
    /// `key == 'value'`.
    Eq(String, String),
    /// `key != 'value'`.
    Ne(String, String),
    /// `key in {'a', 'b'}`.
    In(String, BTreeSet<String>),
    /// `key not in {'a', 'b'}`.
    NotIn(String, BTreeSet<String>),
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && ...` (at least two operands).
    And(Vec<Expr>),
    /// `a || b || ...` (at least two operands).
    Or(Vec<Expr>),
}

/// Read access to a set of labels, so that selectors match any map type.
pub trait Labels {
    /// The value of label `key`, if present.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Expr {
    /// Whether `labels` satisfy this expression.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.label(k).is_some(),
            Expr::Eq(k, v) => labels.label(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.label(k) != Some(v.as_str()),
            Expr::In(k, vs) => labels.label(k).is_some_and(|l| vs.contains(l)),
            Expr::NotIn(k, vs) => !labels.label(k).is_some_and(|l| vs.contains(l)),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }

    /// Binding strength for printing: higher binds tighter.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(_) => 1,
            Expr::And(_) => 2,
            _ => 3,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, parent: u8) -> fmt::Result {
        // Same-precedence children are parenthesised too, so that nesting survives a round trip.
        let parens = if parent == 3 {
            self.precedence() < 3
        } else {
            self.precedence() <= parent
        };
        if parens {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

fn quote(v: &str) -> String {
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

fn fmt_set(vs: &BTreeSet<String>) -> String {
    let items: Vec<String> = vs.iter().map(|v| quote(v)).collect();
    format!("{{{}}}", items.join(", "))
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => write!(f, "{k} == {}", quote(v)),
            Expr::Ne(k, v) => write!(f, "{k} != {}", quote(v)),
            Expr::In(k, vs) => write!(f, "{k} in {}", fmt_set(vs)),
            Expr::NotIn(k, vs) => write!(f, "{k} not in {}", fmt_set(vs)),
            Expr::Not(e) => {
                f.write_str("!")?;
                e.fmt_operand(f, 3)
            }
            Expr::And(es) | Expr::Or(es) => {
                let (sep, prec) = match self {
                    Expr::And(_) => (" && ", 2),
                    _ => (" || ", 1),
                };
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    e.fmt_operand(f, prec)?;
                }
                Ok(())
            }
        }
    }
}

/// A parsed Calico-style selector. Parse with [`str::parse`] / [`Selector::parse`]; print with
/// `Display`, which gives a canonical form that parses back to the same selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// Parses a selector; the empty (or all-blank) string is `all()`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        parser::parse(s).map(|expr| Selector { expr })
    }

    /// The selector that matches everything.
    pub fn all() -> Self {
        Selector { expr: Expr::All }
    }

    /// Wraps an expression (e.g. one built by hand or from a Kubernetes `LabelSelector`).
    pub fn from_expr(expr: Expr) -> Self {
        Selector { expr }
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }

    /// `true` for `all()`.
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

/// A selector is stored and sent as its text.
impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
