//! Validation of IPAM objects, including the internal consistency of a block (useful to IPAM's
//! own property tests).

use std::collections::BTreeSet;

use super::{Ctx, FieldError, Validate};
use crate::ipam::{
    AFFINITY_HOST_PREFIX, BlockAffinity, IPAM_CONFIG_NAME, IPAMBlock, IPAMConfig, IPAMHandle,
};
use crate::names::dns1123_subdomain_error;

impl Validate for IPAMConfig {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("IPAMConfig", &self.metadata);
        c.check_meta(&self.metadata);
        if let Some(n) = self.metadata.name.as_deref()
            && n != IPAM_CONFIG_NAME
        {
            c.err(
                "metadata.name",
                format!("{n:?} must be \"default\" (only that object is read)"),
            );
        }
        c.into_errors()
    }
}

impl Validate for IPAMBlock {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("IPAMBlock", &self.metadata);
        c.check_meta(&self.metadata);
        let s = &self.spec;
        let Some(net) = c.cidr("spec.cidr", &s.cidr) else {
            return c.into_errors();
        };
        let expected = IPAMBlock::name_for(&net);
        if let Some(n) = self.metadata.name.as_deref()
            && n != expected
        {
            c.err(
                "metadata.name",
                format!("{n:?} does not match spec.cidr {net} (expected {expected:?})"),
            );
        }
        if let Some(a) = s.affinity.as_deref() {
            match a.strip_prefix(AFFINITY_HOST_PREFIX) {
                Some(node) => {
                    if let Some(why) = dns1123_subdomain_error(node) {
                        c.err("spec.affinity", format!("{a:?}: node name {why}"));
                    }
                }
                None => c.err(
                    "spec.affinity",
                    format!("{a:?} is not of the form host:NODE"),
                ),
            }
        }
        let Some(size) = crate::ipam::block_size_of(&net) else {
            c.err("spec.cidr", format!("{net} has more than 65536 addresses"));
            return c.into_errors();
        };
        if s.allocations.len() != size {
            c.err(
                "spec.allocations",
                format!(
                    "has {} entries, expected {size} for {net}",
                    s.allocations.len()
                ),
            );
        }
        for (ord, a) in s.allocations.iter().enumerate() {
            if let Some(idx) = a
                && *idx >= s.attributes.len()
            {
                c.err(
                    &format!("spec.allocations[{ord}]"),
                    format!(
                        "{idx} is not an index into spec.attributes ({} entries)",
                        s.attributes.len()
                    ),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, &ord) in s.unallocated.iter().enumerate() {
            let field = format!("spec.unallocated[{i}]");
            if ord >= size {
                c.err(&field, format!("{ord} out of range 0..{size}"));
            } else if !seen.insert(ord) {
                c.err(&field, format!("{ord} is listed twice"));
            } else if s.allocations.get(ord).is_some_and(Option::is_some) {
                c.err(&field, format!("{ord} is allocated"));
            }
        }
        let free = s.allocations.iter().filter(|a| a.is_none()).count();
        if s.allocations.len() == size && seen.len() != free && c.errors.is_empty() {
            c.err(
                "spec.unallocated",
                format!("lists {} ordinals but {free} are free", seen.len()),
            );
        }
        c.into_errors()
    }
}

impl Validate for BlockAffinity {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("BlockAffinity", &self.metadata);
        c.check_meta(&self.metadata);
        c.dns_name("spec.node", &self.spec.node);
        if let Some(net) = c.cidr("spec.cidr", &self.spec.cidr) {
            let expected = BlockAffinity::name_for(&self.spec.node, &net);
            if let Some(n) = self.metadata.name.as_deref()
                && n != expected
            {
                c.err(
                    "metadata.name",
                    format!("{n:?} does not match spec.node and spec.cidr (expected {expected:?})"),
                );
            }
        }
        c.into_errors()
    }
}

impl Validate for IPAMHandle {
    fn field_errors(&self) -> Vec<FieldError> {
        let mut c = Ctx::new("IPAMHandle", &self.metadata);
        c.check_meta(&self.metadata);
        if self.spec.handle_id.is_empty() {
            c.err("spec.handleID", "must not be empty");
        }
        for cidr in self.spec.block.keys() {
            c.cidr(&format!("spec.block[{cidr:?}]"), cidr);
        }
        c.into_errors()
    }
}
