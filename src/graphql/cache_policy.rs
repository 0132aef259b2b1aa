//! How long a query's response may be cached, from the schema's cache hints, by Apollo's rules: a
//! response is only as cacheable as its least cacheable field.
//!
//! - A field's hint (`#[graphql(cache_control(max_age = 60))]`) or its object type's hint sets
//!   the field's max-age; `private` makes the whole response private; `no_cache` makes it
//!   uncacheable.
//! - A **root field** or a field returning an **object** (or interface, union) without a hint
//!   gets the default max-age (`CACHE_PUBLIC_MAX_AGE` / `CACHE_PRIVATE_MAX_AGE`, 0 unless
//!   configured), so `{ apiInfo { version } me { email } }` is not cached for `apiInfo`'s 60 s:
//!   `me` has no hint.
//! - A scalar or enum field without a hint inherits its parent's.
//!
//! async-graphql's own merge treats a field without a hint as "no opinion", which would let one
//! hinted field make a whole response cacheable; this walk replaces it for HTTP caching.

use async_graphql::CacheControl;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};

/// What the hints of one document's queries add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// The smallest max-age a hint set (`None`: no hint set one).
    hinted_max_age: Option<u32>,
    /// A root field or object-returning field had no hint: the default max-age applies to it.
    unhinted: bool,
    /// A hint asked for `private`.
    pub private: bool,
    /// A hint asked for `no-cache`.
    pub no_cache: bool,
}

impl Default for CachePolicy {
    /// Knowing nothing: as if one field had no hint.
    fn default() -> Self {
        Self {
            hinted_max_age: None,
            unhinted: true,
            private: false,
            no_cache: false,
        }
    }
}

impl CachePolicy {
    /// The max-age of the response (`None`: no-cache). `default` is the max-age of fields
    /// without a hint and, when above 0, the ceiling of hinted ones.
    pub fn max_age(&self, default: u32) -> Option<u32> {
        if self.no_cache {
            return None;
        }
        Some(match (self.hinted_max_age, self.unhinted) {
            (Some(hinted), false) if default == 0 => hinted,
            (Some(hinted), _) => hinted.min(default),
            (None, _) => default,
        })
    }

    /// Whether a response may go into the server's response cache: every field that counts
    /// declared a max-age above 0 (fields without a hint count as 0 here, whatever the defaults).
    pub fn storable(&self) -> bool {
        self.kept_for().is_some()
    }

    /// How long the server's response cache keeps such a response (`None`: it is not kept; see
    /// [`CachePolicy::storable`]).
    pub fn kept_for(&self) -> Option<u32> {
        self.max_age(0).filter(|age| *age > 0)
    }

    /// A compact text form for stored entries, read back by [`CachePolicy::from_code`]:
    /// `<hinted max-age or ->/<unhinted><private><no-cache>`, the flags as `0`/`1`.
    pub fn code(&self) -> String {
        let age = self
            .hinted_max_age
            .map_or_else(|| "-".to_owned(), |age| age.to_string());
        let flag = |on: bool| if on { '1' } else { '0' };
        format!(
            "{age}/{}{}{}",
            flag(self.unhinted),
            flag(self.private),
            flag(self.no_cache)
        )
    }

    /// The policy [`CachePolicy::code`] wrote; `None` for anything else.
    pub fn from_code(code: &str) -> Option<Self> {
        let (age, flags) = code.split_once('/')?;
        let hinted_max_age = match age {
            "-" => None,
            age => Some(age.parse().ok()?),
        };
        let flag = |c: u8| match c {
            b'0' => Some(false),
            b'1' => Some(true),
            _ => None,
        };
        let &[unhinted, private, no_cache] = flags.as_bytes() else {
            return None;
        };
        Some(Self {
            hinted_max_age,
            unhinted: flag(unhinted)?,
            private: flag(private)?,
            no_cache: flag(no_cache)?,
        })
    }

    /// Takes one hint into account; `true` when it set a max-age (or no-cache).
    fn apply(&mut self, hint: &CacheControl) -> bool {
        if !hint.public {
            self.private = true;
        }
        match hint.max_age {
            -1 => {
                self.no_cache = true;
                true
            }
            age if age > 0 => {
                let age = age.unsigned_abs();
                self.hinted_max_age = Some(self.hinted_max_age.map_or(age, |a| a.min(age)));
                true
            }
            _ => false,
        }
    }
}

/// The policy of every query operation in `document` (the least cacheable wins; mutations and
/// subscriptions are never cached, whatever this says).
pub fn of_document(registry: &Registry, document: &ExecutableDocument) -> CachePolicy {
    let mut policy = CachePolicy {
        unhinted: false,
        ..CachePolicy::default()
    };
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(map) => map.values().collect(),
    };
    let mut walk = Walk {
        registry,
        document,
        policy: &mut policy,
        entered: Vec::new(),
    };
    for operation in operations {
        if operation.node.ty == OperationType::Query {
            walk.selection_set(
                &registry.query_type,
                &operation.node.selection_set.node,
                true,
            );
        }
    }
    policy
}

struct Walk<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
    policy: &'a mut CachePolicy,
    /// Fragments already walked, with the type and depth (root or not) they were walked at: the
    /// outcome only ever tightens, so once each is enough (and the walk stays linear).
    entered: Vec<(&'a str, &'a str, bool)>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, parent: &'a str, set: &'a SelectionSet, root: bool) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    if name.starts_with("__") {
                        continue; // introspection: the schema itself
                    }
                    let Some(meta) = self
                        .registry
                        .types
                        .get(parent)
                        .and_then(|t| t.field_by_name(name))
                    else {
                        continue; // validation refuses it
                    };
                    let returns = MetaTypeName::concrete_typename(&meta.ty);
                    let returned = self.registry.types.get(returns);
                    let composite = returned.is_some_and(MetaType::is_composite);
                    let mut hinted = self.policy.apply(&meta.cache_control);
                    if let Some(MetaType::Object { cache_control, .. }) = returned {
                        hinted |= self.policy.apply(cache_control);
                    }
                    if !hinted && (root || composite) {
                        self.policy.unhinted = true;
                    }
                    if composite {
                        self.selection_set(returns, &field.node.selection_set.node, false);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |c| c.node.on.node.as_str());
                    self.selection_set(on, &fragment.node.selection_set.node, root);
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    let on = fragment.node.type_condition.node.on.node.as_str();
                    let key = (name.as_str(), on, root);
                    if self.entered.contains(&key) {
                        continue;
                    }
                    self.entered.push(key);
                    self.selection_set(on, &fragment.node.selection_set.node, root);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_reads_back_as_the_same_policy_and_nothing_else_reads() {
        let policies = [
            CachePolicy::default(),
            CachePolicy {
                hinted_max_age: Some(300),
                unhinted: false,
                private: true,
                no_cache: false,
            },
            CachePolicy {
                hinted_max_age: Some(0),
                unhinted: true,
                private: false,
                no_cache: true,
            },
        ];
        for policy in policies {
            assert_eq!(CachePolicy::from_code(&policy.code()), Some(policy));
        }
        assert_eq!(CachePolicy::default().code(), "-/100");
        for bad in ["", "-", "-/10", "-/1000", "x/100", "-/102", "300/1 0"] {
            assert_eq!(CachePolicy::from_code(bad), None, "{bad}");
        }
    }
}
