//! Bounds on a document's shape, checked before async-graphql parses (past the text checks) or
//! validates it.
//!
//! Validation walks fragments inline, once per spread: a document whose fragments each spread
//! the next one twice costs 2^n, while its text is a few hundred bytes. So every count here is
//! taken *after* fragment expansion, with each fragment's counts computed once and reused
//! (linear in the document), and the document is refused before anything exponential runs:
//!
//! - text: size in bytes, lexical tokens, bracket nesting (the parser is recursive);
//! - shape: field selections after expansion (`__typename` included), fragments per document,
//!   spreads per selection set, aliases after expansion, depth after expansion, root fields;
//! - values: no `U+0000` in any string argument or variable (no database stores it).

use std::collections::HashMap;

use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, Selection, SelectionSet,
};
use std::sync::{Arc, OnceLock};

use async_graphql::{Name, Positioned, ServerError, Value, Variables};

use super::extension::{Validated, ValidationMemo};
use super::{CachePolicy, RequestPhase};
use crate::config::GraphqlSettings;
use crate::error::ErrorCode;

/// How deep brackets may nest in the text (`{`, `[`, `(` together). The parser recurses on
/// each; far below what would exhaust a worker thread's stack.
pub const MAX_NESTING: usize = 64;

/// Checks a request's text, parses it and measures it. Every way into the schema goes through
/// here: the schema refuses to parse without the phase this returns attached to the request.
///
/// A document that passed before is taken from `documents` instead of being checked and parsed
/// again (pest parsing is the largest single cost of a small operation); only what depends on
/// the variables is checked every time. The parsed document goes into the request only when the
/// operation executes ([`Vetted::into_request`]): an answer from the response cache never copies
/// it.
///
/// # Errors
/// The request error to answer with (`QUERY_TOO_COMPLEX`, `GRAPHQL_PARSE_FAILED`, …).
pub fn vet(
    request: &async_graphql::Request,
    limits: &GraphqlSettings,
    documents: &Documents,
) -> Result<Vetted, ServerError> {
    let known = match documents.get(&request.query) {
        Some(known) => known,
        None => {
            let tokens = check_text(&request.query, limits)?;
            let parsed = async_graphql::parser::parse_query(&request.query).map_err(|error| {
                let mut error = ServerError::from(error);
                let extensions = error.extensions.get_or_insert_with(Default::default);
                if extensions.get("code").is_none() {
                    extensions.set("code", ErrorCode::GraphqlParseFailed.as_str());
                }
                error
            })?;
            let shape = analyse(&parsed, limits)?;
            if document_has_nul(&parsed) {
                return Err(nul_error());
            }
            documents.insert(&request.query, tokens, parsed, shape)
        }
    };
    if variables_have_nul(&request.variables) {
        return Err(nul_error());
    }
    check_required_variables(
        &known.document,
        request.operation_name.as_deref(),
        &request.variables,
    )?;
    // Validation's outcome depends on the document, the operation it selects and the variables'
    // values: without variables, the same text and operation validate the same way every time.
    let validation = request
        .variables
        .is_empty()
        .then(|| ValidationMemo::new(known.validation.clone(), request.operation_name.as_deref()));
    let phase = Arc::new(RequestPhase::for_document(
        known.cache_policy.clone(),
        validation,
    ));
    phase.vetted(&known.shape);
    Ok(Vetted {
        phase,
        document: known,
    })
}

/// A request's document that passed [`vet`], and the phase to attach to the request.
pub struct Vetted {
    pub phase: Arc<RequestPhase>,
    document: Arc<Known>,
}

impl Vetted {
    /// The parsed document.
    pub fn document(&self) -> &ExecutableDocument {
        &self.document.document
    }

    /// What the schema's cache hints allow for this document, when a request for the same text
    /// executed before (`None`: not known yet).
    pub fn cache_policy(&self) -> Option<CachePolicy> {
        self.document.cache_policy.get().copied()
    }

    /// `request` with its parsed document (a copy: async-graphql owns and rewrites it), so the
    /// schema does not parse the text again.
    pub fn into_request(self, mut request: async_graphql::Request) -> async_graphql::Request {
        request.set_parsed_query(self.document.document.clone());
        request
    }
}

/// Documents that passed [`vet`]'s checks, parsed, by their text: the most recently used, up to
/// [`Documents::BUDGET`] bytes in all, as estimated by [`Documents::weight`] (documents over
/// [`Documents::MAX_TEXT`] are not kept). One per application instance (`AppState::local`),
/// whose limits they were checked against. A client sending a new document every time only
/// churns it: each is parsed once, as it would be without the memo.
#[derive(Default)]
pub struct Documents(std::sync::Mutex<Kept>);

struct Kept {
    entries: lru::LruCache<u128, Arc<Known>>,
    /// The sum of the entries' weights.
    weight: usize,
}

impl Default for Kept {
    fn default() -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            weight: 0,
        }
    }
}

struct Known {
    text: Box<str>,
    weight: usize,
    document: ExecutableDocument,
    shape: Shape,
    /// What the schema's cache hints allow, once an execution worked it out.
    cache_policy: Arc<OnceLock<CachePolicy>>,
    /// async-graphql's validation of the document for its first operation run without
    /// variables, once it passed (see [`ValidationMemo`]).
    validation: Arc<OnceLock<Validated>>,
}

impl Documents {
    /// What the kept documents may weigh in all (bytes, estimated).
    pub const BUDGET: usize = 8 * 1024 * 1024;
    /// The longest document kept.
    pub const MAX_TEXT: usize = 16 * 1024;
    /// What a parsed token costs in memory, roughly: a kept document of 5,900 tokens (840
    /// directives with an argument each, 16 KB of text) held about 0.75 MB.
    pub const TOKEN_BYTES: usize = 128;

    /// A document's estimated size once parsed: its text and its tokens (the parsed tree grows
    /// with the tokens, not the bytes: `@include(if: true)` is seven nodes in 18 bytes).
    pub fn weight(text: &str, tokens: usize) -> usize {
        text.len()
            .saturating_add(tokens.saturating_mul(Self::TOKEN_BYTES))
    }

    fn key(text: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128(text.as_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, text: &str) -> Option<Arc<Known>> {
        let known = self.lock().entries.get(&Self::key(text)).cloned()?;
        // A hash collision is a miss, never another document.
        (*known.text == *text).then_some(known)
    }

    /// Keeps `document` of `tokens` tokens (unless its text is too long to keep), and returns it
    /// as kept.
    fn insert(
        &self,
        text: &str,
        tokens: usize,
        document: ExecutableDocument,
        shape: Shape,
    ) -> Arc<Known> {
        let known = Arc::new(Known {
            text: text.into(),
            weight: Self::weight(text, tokens),
            document,
            shape,
            cache_policy: Arc::default(),
            validation: Arc::default(),
        });
        if text.len() > Self::MAX_TEXT {
            return known;
        }
        let mut memo = self.lock();
        if let Some(old) = memo.entries.put(Self::key(text), known.clone()) {
            memo.weight -= old.weight;
        }
        memo.weight += known.weight;
        while memo.weight > Self::BUDGET {
            let Some((_, evicted)) = memo.entries.pop_lru() else {
                break;
            };
            memo.weight -= evicted.weight;
        }
        known
    }

    /// The estimated weight of what is kept.
    pub fn weight_kept(&self) -> usize {
        self.lock().weight
    }

    /// How many documents are kept (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a document costs after fragment expansion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Field selections, `__typename` included.
    pub selections: usize,
    /// `__typename` selections (async-graphql's complexity counts them as 0).
    pub typenames: usize,
    pub aliases: usize,
    pub depth: usize,
    /// The most root fields of one operation.
    pub root_fields: usize,
}

/// A limit a document went over: the error to answer with.
pub fn too_complex(message: String, measure: &str, value: usize, limit: usize) -> ServerError {
    let mut error = ErrorCode::QueryTooComplex.graphql_error(message, None);
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set(measure, value);
        extensions.set("limit", limit);
    }
    error
}

fn over(what: &str, measure: &str, value: usize, limit: usize) -> ServerError {
    too_complex(
        format!("the document has {value} {what}; at most {limit} are allowed"),
        measure,
        value,
        limit,
    )
}

fn invalid(message: impl Into<String>) -> ServerError {
    ErrorCode::GraphqlValidationFailed.graphql_error(message, None)
}

/// Checks the raw text: size, token count and bracket nesting, in one linear pass that
/// understands strings, block strings and comments. Returns the token count.
///
/// # Errors
/// `QUERY_TOO_COMPLEX` naming the measure.
pub fn check_text(query: &str, limits: &GraphqlSettings) -> Result<usize, ServerError> {
    if query.len() > limits.max_document_size {
        return Err(too_complex(
            format!(
                "the document is {} bytes; at most {} are allowed",
                query.len(),
                limits.max_document_size
            ),
            "size",
            query.len(),
            limits.max_document_size,
        ));
    }
    let bytes = query.as_bytes();
    let (mut tokens, mut nesting, mut deepest) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            0xEF if bytes[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => {
                i += 3;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'[' | b'(' => {
                nesting += 1;
                deepest = deepest.max(nesting);
                i += 1;
            }
            b'}' | b']' | b')' => {
                nesting = nesting.saturating_sub(1);
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            _ if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || matches!(bytes[i], b'_' | b'.' | b'-' | b'+'))
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > limits.max_tokens {
            return Err(too_complex(
                format!("the document has more than {} tokens", limits.max_tokens),
                "tokens",
                tokens,
                limits.max_tokens,
            ));
        }
    }
    if deepest > MAX_NESTING {
        return Err(too_complex(
            format!("brackets nest {deepest} levels deep; at most {MAX_NESTING} are allowed"),
            "nesting",
            deepest,
            MAX_NESTING,
        ));
    }
    Ok(tokens)
}

/// Counts of one selection set, after expansion.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    selections: usize,
    typenames: usize,
    aliases: usize,
    depth: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.selections = self.selections.saturating_add(other.selections);
        self.typenames = self.typenames.saturating_add(other.typenames);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.depth = self.depth.max(other.depth);
    }
}

enum Memo {
    Visiting,
    Done(Counts),
}

struct Walker<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    memo: HashMap<&'a str, Memo>,
    limits: &'a GraphqlSettings,
}

impl<'a> Walker<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<Counts, ServerError> {
        let mut counts = Counts::default();
        let mut spreads = 0usize;
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let child = self.set(&field.selection_set.node)?;
                    counts.selections = counts.selections.saturating_add(1);
                    counts.typenames = counts
                        .typenames
                        .saturating_add(usize::from(field.name.node == "__typename"));
                    counts.aliases = counts
                        .aliases
                        .saturating_add(usize::from(field.alias.is_some()));
                    counts.add(Counts {
                        depth: child.depth + 1,
                        ..child
                    });
                }
                Selection::InlineFragment(fragment) => {
                    let child = self.set(&fragment.node.selection_set.node)?;
                    counts.add(child);
                }
                Selection::FragmentSpread(spread) => {
                    spreads += 1;
                    if spreads > self.limits.max_spreads {
                        return Err(over(
                            "fragment spreads in one selection set",
                            "spreads",
                            spreads,
                            self.limits.max_spreads,
                        ));
                    }
                    let child = self.fragment(spread.node.fragment_name.node.as_str())?;
                    counts.add(child);
                }
            }
            if counts.selections > self.limits.max_selections {
                return Err(over(
                    "field selections after expanding fragments",
                    "selections",
                    counts.selections,
                    self.limits.max_selections,
                ));
            }
        }
        Ok(counts)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Counts, ServerError> {
        match self.memo.get(name) {
            Some(Memo::Done(counts)) => return Ok(*counts),
            Some(Memo::Visiting) => {
                return Err(invalid(format!(
                    "fragment \"{name}\" spreads itself (directly or through others)"
                )));
            }
            None => {}
        }
        // Unknown fragments are validation's to report.
        let Some((key, fragment)) = self.fragments.get_key_value(name) else {
            return Ok(Counts::default());
        };
        self.memo.insert(key.as_str(), Memo::Visiting);
        let counts = self.set(&fragment.node.selection_set.node)?;
        self.memo.insert(key.as_str(), Memo::Done(counts));
        Ok(counts)
    }
}

/// Measures a parsed document against the limits, in time linear in its size.
///
/// # Errors
/// `QUERY_TOO_COMPLEX` naming the measure, `GRAPHQL_VALIDATION_FAILED` for a fragment cycle.
pub fn analyse(
    document: &ExecutableDocument,
    limits: &GraphqlSettings,
) -> Result<Shape, ServerError> {
    if document.fragments.len() > limits.max_fragments {
        return Err(over(
            "fragment definitions",
            "fragments",
            document.fragments.len(),
            limits.max_fragments,
        ));
    }
    let mut walker = Walker {
        fragments: &document.fragments,
        memo: HashMap::new(),
        limits,
    };
    let mut shape = Shape::default();
    let mut total = Counts::default();
    for (_, operation) in document.operations.iter() {
        let set = &operation.node.selection_set.node;
        shape.root_fields = shape.root_fields.max(set.items.len());
        let counts = walker.set(set)?;
        total.selections = total.selections.saturating_add(counts.selections);
        total.typenames = total.typenames.saturating_add(counts.typenames);
        total.aliases = total.aliases.saturating_add(counts.aliases);
        total.depth = total.depth.max(counts.depth);
        if total.selections > limits.max_selections {
            return Err(over(
                "field selections after expanding fragments",
                "selections",
                total.selections,
                limits.max_selections,
            ));
        }
    }
    // Fragments no operation uses are still validated: count them too (each once).
    for name in document.fragments.keys() {
        walker.fragment(name.as_str())?;
    }
    shape.selections = total.selections;
    shape.typenames = total.typenames;
    shape.aliases = total.aliases;
    shape.depth = total.depth;
    if shape.aliases > limits.max_aliases {
        return Err(too_complex(
            format!(
                "the operation uses {} aliases; at most {} are allowed",
                shape.aliases, limits.max_aliases
            ),
            "aliases",
            shape.aliases,
            limits.max_aliases,
        ));
    }
    if shape.root_fields > limits.max_root_fields {
        return Err(too_complex(
            format!(
                "the operation selects {} root fields; at most {} are allowed",
                shape.root_fields, limits.max_root_fields
            ),
            "rootFields",
            shape.root_fields,
            limits.max_root_fields,
        ));
    }
    if shape.depth > limits.max_depth {
        return Err(too_complex(
            format!(
                "the operation is nested {} levels deep; at most {} are allowed",
                shape.depth, limits.max_depth
            ),
            "depth",
            shape.depth,
            limits.max_depth,
        ));
    }
    Ok(shape)
}

/// The specification coerces variables before executing: a required variable (`$id: ID!`, no
/// default) that is missing or null makes the whole request fail, with nothing executed.
fn check_required_variables(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Result<(), ServerError> {
    use async_graphql::parser::types::{BaseType, DocumentOperations};
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(map), Some(name)) => map.get(name),
        (DocumentOperations::Multiple(map), None) if map.len() == 1 => map.values().next(),
        // Selecting the operation fails later with its own error.
        _ => None,
    };
    let Some(operation) = operation else {
        return Ok(());
    };
    for definition in &operation.node.variable_definitions {
        let definition = &definition.node;
        let required = !definition.var_type.node.nullable && definition.default_value.is_none();
        let provided = variables
            .get(&definition.name.node)
            .is_some_and(|v| !matches!(v, Value::Null));
        if required && !provided {
            let type_name = match &definition.var_type.node.base {
                BaseType::Named(name) => format!("{name}!"),
                BaseType::List(_) => definition.var_type.node.to_string(),
            };
            return Err(ErrorCode::BadUserInput.graphql_error(
                format!(
                    "variable ${} of required type {type_name} was not provided",
                    definition.name.node
                ),
                Some(definition.name.pos),
            ));
        }
    }
    Ok(())
}

fn nul_error() -> ServerError {
    ErrorCode::BadUserInput
        .graphql_error("strings must not contain the NUL character (U+0000)", None)
}

fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::List(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.as_str().contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

fn set_has_nul(set: &SelectionSet) -> bool {
    set.items.iter().any(|item| match &item.node {
        Selection::Field(field) => {
            field.node.arguments.iter().any(|(_, v)| {
                v.node
                    .clone()
                    .into_const()
                    .is_some_and(|v| value_has_nul(&v))
            }) || set_has_nul(&field.node.selection_set.node)
        }
        Selection::InlineFragment(fragment) => set_has_nul(&fragment.node.selection_set.node),
        Selection::FragmentSpread(_) => false,
    })
}

/// PostgreSQL cannot store U+0000 in text, and no client means it: refuse it anywhere a value
/// can come from (inline arguments, variable defaults, variables) before it reaches a resolver.
fn variables_have_nul(variables: &Variables) -> bool {
    variables
        .iter()
        .any(|(k, v)| k.as_str().contains('\0') || value_has_nul(v))
}

fn document_has_nul(document: &ExecutableDocument) -> bool {
    let in_operations = document.operations.iter().any(|(_, op)| {
        set_has_nul(&op.node.selection_set.node)
            || op.node.variable_definitions.iter().any(|d| {
                d.node
                    .default_value
                    .as_ref()
                    .is_some_and(|v| value_has_nul(&v.node))
            })
    });
    in_operations
        || document
            .fragments
            .values()
            .any(|f| set_has_nul(&f.node.selection_set.node))
}

#[cfg(test)]
mod tests {
    use super::{Documents, Shape};

    fn parsed(text: &str) -> async_graphql::parser::types::ExecutableDocument {
        async_graphql::parser::parse_query(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn insert(documents: &Documents, text: &str) {
        let vars = std::collections::BTreeMap::new();
        let limits = crate::config::GraphqlSettings::read(
            &mut crate::config::reader::Reader::new(&vars),
            false,
        );
        let tokens = super::check_text(text, &limits).unwrap_or_else(|e| panic!("{e:?}"));
        documents.insert(text, tokens, parsed(text), Shape::default());
    }

    #[test]
    fn the_memo_keeps_the_most_recent_documents_within_its_budget() {
        let documents = Documents::default();
        let padding = " ".repeat(Documents::MAX_TEXT - 100);
        let texts: Vec<String> = (0..700)
            .map(|n| format!("{{ apiInfo {{ version }} }}{padding}# {n}"))
            .collect();
        for text in &texts {
            insert(&documents, text);
        }
        let kept = texts.iter().filter(|t| documents.get(t).is_some()).count();
        assert!(kept > 0 && kept < texts.len(), "{kept} kept");
        assert!(documents.weight_kept() <= Documents::BUDGET);
        // The most recent are the ones kept.
        assert!(documents.get(&texts[texts.len() - 1]).is_some());
        assert!(documents.get(&texts[0]).is_none());
        // Too long to keep; and another text never answers for a kept one.
        let long = format!(
            "{{ apiInfo {{ version }} }}{}",
            " ".repeat(Documents::MAX_TEXT)
        );
        insert(&documents, &long);
        assert!(documents.get(&long).is_none());
        assert!(documents.get("{ apiInfo { version } }").is_none());
    }

    #[test]
    fn documents_dense_in_tokens_weigh_more_than_their_text() {
        // The same 16 KB of text: spaces, or 840 directives (a parsed tree of about 0.75 MB).
        let dense = |n: usize| {
            format!(
                "{{ __typename{} }} # {n}",
                " @include(if: true)".repeat(840)
            )
        };
        let sparse = |n: usize| format!("{{ __typename }}{} # {n}", " ".repeat(dense(0).len()));
        let kept = |text: &dyn Fn(usize) -> String, count: usize| {
            let documents = Documents::default();
            for n in 0..count {
                insert(&documents, &text(n));
            }
            assert!(documents.weight_kept() <= Documents::BUDGET);
            documents.len()
        };
        let (dense_kept, sparse_kept) = (kept(&dense, 40), kept(&sparse, 300));
        assert!(dense_kept > 0, "the budget holds a few");
        assert!(
            dense_kept * 20 < sparse_kept,
            "{dense_kept} dense, {sparse_kept} sparse"
        );
        // What the budget allows of the densest documents is what it says, give or take.
        assert!(
            dense_kept * 600 * 1024 <= Documents::BUDGET * 2,
            "{dense_kept}"
        );
    }
}
