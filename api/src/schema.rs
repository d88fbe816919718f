//! Schema pieces shared by several resources (used through `#[schemars(schema_with = ...)]`).

use schemars::{Schema, SchemaGenerator, json_schema};

/// A list of CIDRs (`10.0.0.1/32`, `fd00::1/128`).
pub(crate) fn cidr_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "format": "cidr" }
    })
}

/// An IPv4 or IPv6 address (loosely: the validator parses it properly).
pub(crate) const IP_PATTERN: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$";

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn yes() -> bool {
    true
}

/// Drops a type's own description from its schema, so that an `Option<ThatType>` field keeps the
/// field's description (kube's Option flattening would otherwise replace it with the type's).
pub(crate) fn drop_description(schema: &mut Schema) {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("description");
    }
}
