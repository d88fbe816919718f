//! Validation that names the object and the field: `IPPool "p1": spec.blockSize 33 out of range
//! 20..=32`. [`Validate`] checks one object and returns every error; [`pool_overlaps`] checks a set
//! of pools against each other.

mod ipam;
mod k8s;
mod network;
mod resources;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::dns1123_subdomain_error;
use crate::selector::Selector;

pub use network::pool_overlaps;

/// One invalid field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The object's kind, e.g. `IPPool`.
    pub kind: String,
    /// The object's name (`NAMESPACE/NAME` for namespaced objects).
    pub name: String,
    /// The field's path, e.g. `spec.blockSize`.
    pub field: String,
    /// What is wrong, starting with the value where it helps: `33 out of range 20..=32`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?}: {} {}",
            self.kind, self.name, self.field, self.message
        )
    }
}

impl std::error::Error for FieldError {}

/// Every error found in one or more objects; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// `Ok` when `errors` is empty.
    pub fn check(errors: Vec<FieldError>) -> Result<(), ValidationErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// An object that can check itself.
pub trait Validate {
    /// Every problem found; empty when the object is valid.
    fn field_errors(&self) -> Vec<FieldError>;

    /// `Ok` when valid, else every error.
    fn validate(&self) -> Result<(), ValidationErrors> {
        ValidationErrors::check(self.field_errors())
    }
}

/// Collects errors for one object.
pub(crate) struct Ctx {
    kind: String,
    name: String,
    pub(crate) errors: Vec<FieldError>,
}

impl Ctx {
    pub(crate) fn new(kind: &str, meta: &ObjectMeta) -> Self {
        let name = meta.name.clone().unwrap_or_default();
        let name = match &meta.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        Ctx {
            kind: kind.to_string(),
            name,
            errors: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            kind: self.kind.clone(),
            name: self.name.clone(),
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// metadata.name (and namespace, if any) must be DNS-1123 subdomains.
    pub(crate) fn check_meta(&mut self, meta: &ObjectMeta) {
        match meta.name.as_deref() {
            None => self.err("metadata.name", "is required"),
            Some(n) => {
                if let Some(why) = dns1123_subdomain_error(n) {
                    self.err(
                        "metadata.name",
                        format!("{n:?} is not a valid DNS-1123 subdomain: {why}"),
                    );
                }
            }
        }
        if let Some(ns) = meta.namespace.as_deref()
            && let Some(why) = crate::names::dns1123_label_error(ns)
        {
            self.err(
                "metadata.namespace",
                format!("{ns:?} is not a valid DNS-1123 label: {why}"),
            );
        }
    }

    pub(crate) fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Parses a CIDR with no host bits set.
    pub(crate) fn cidr(&mut self, field: &str, value: &str) -> Option<IpNet> {
        let net: IpNet = match value.parse() {
            Ok(n) => n,
            Err(_) => {
                self.err(
                    field,
                    format!("{value:?} is not a valid CIDR (e.g. 10.0.0.0/16, fd00::/48)"),
                );
                return None;
            }
        };
        if net.trunc() != net {
            self.err(
                field,
                format!("{value} has host bits set (did you mean {}?)", net.trunc()),
            );
            return None;
        }
        Some(net)
    }

    /// Parses a CIDR; host bits are allowed (Kubernetes allows them in `ipBlock`). Returns the
    /// network with host bits cleared.
    pub(crate) fn cidr_loose(&mut self, field: &str, value: &str) -> Option<IpNet> {
        match value.parse::<IpNet>() {
            Ok(n) => Some(n.trunc()),
            Err(_) => {
                self.err(
                    field,
                    format!("{value:?} is not a valid CIDR (e.g. 10.0.0.0/16, fd00::/48)"),
                );
                None
            }
        }
    }

    pub(crate) fn ip(&mut self, field: &str, value: &str) -> Option<IpAddr> {
        match value.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(field, format!("{value:?} is not a valid IP address"));
                None
            }
        }
    }

    pub(crate) fn selector(&mut self, field: &str, value: &str) -> Option<Selector> {
        match Selector::parse(value) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(field, e.to_string());
                None
            }
        }
    }

    pub(crate) fn asn(&mut self, field: &str, value: u32) {
        if value == 0 {
            self.err(field, format!("{value} out of range 1..=4294967295"));
        }
    }

    pub(crate) fn duration(&mut self, field: &str, value: Option<&str>) {
        if let Some(v) = value
            && let Err(e) = crate::duration::parse_duration(v)
        {
            self.err(field, e.to_string());
        }
    }

    pub(crate) fn dns_name(&mut self, field: &str, value: &str) {
        if let Some(why) = dns1123_subdomain_error(value) {
            self.err(
                field,
                format!("{value:?} is not a valid DNS-1123 subdomain: {why}"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
