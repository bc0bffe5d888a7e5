//! Vigil's Sigma rule engine.
//!
//! What it is: a parser and compiler for Sigma rules (specification v2.1:
//! detection rules, correlation rules, global filters) and an evaluator that
//! matches compiled rules against events through the [`Event`] trait, keeping
//! correlation state in an [`Engine`]. It reads rule files (and nothing else)
//! from disk.
//!
//! What it is not: it knows nothing of kernels, gRPC, protobuf or storage. The
//! sensor adapts its records to [`Event`]; the server and the CLI load rule
//! sets the same way.
//!
//! How it evaluates: all rules of a log source compile into one matcher
//! (`index`). Every literal a rule uses is an *atom* (field, lower-cased
//! literal, anchor); each field of an event is lower-cased and searched once
//! for all its atoms (exact values by hash, prefixes and suffixes by trie,
//! substrings by Aho-Corasick or, for thousands of literals, by 4/8-byte
//! grams), and the atoms found are remembered per value in a bounded
//! per-thread cache, since event streams repeat the same values. Atoms pick
//! the candidate rules (each rule needs one atom from each of its clauses)
//! and then decide them: most Sigma entries are literal lists, evaluated as
//! bits; regexes, numbers, `cidr`, `fieldref` and the like are evaluated on
//! the event only when a candidate gets that far. A rule's verdict on
//! recurring values is remembered with them (rules of one field in the
//! value's cache slot, the others by the values they read). Cost grows with what the
//! event contains and matches, not with the number of rules. Nothing is
//! silently dropped: anything the engine cannot evaluate is a [`Rejection`]
//! with file, line, rule id and reason.
//!
//! Choices where the specification leaves room (following pySigma where it
//! has a reference behaviour):
//! - Matching is case-insensitive except `re` and `cased`. Wildcards `*` and
//!   `?` match any run / any one character; `\*`, `\?`, `\\` escape, any
//!   other backslash is literal.
//! - `null` matches an absent or null field; `''` only an empty one. A YAML
//!   number matches an integer field or numeric text of equal value.
//! - Keywords (keyless values) are substring searches over every string value
//!   of the event. `|all` on keywords requires every keyword somewhere.
//! - `neq` negates the whole value list: an absent field is "not equal".
//! - `windash` replaces dashes and slashes that start a word (pySigma's
//!   `\B[-/]\b`) with `-`, `/`, en dash, em dash and horizontal bar.
//! - `base64offset` uses pySigma's offset table; `utf16*`/`wide` produce bytes
//!   that a following `base64*` encodes (alone, each byte becomes one char).
//! - `re` follows PCRE's ASCII `\w`, `\d`, `\s`; compiled size is capped at
//!   4 MiB (the regex crate: linear time).
//! - `cidr` accepts IPv4 and IPv6; IPv4-mapped IPv6 addresses count as IPv4.
//! - `minute`…`year` read ISO 8601 text or Unix seconds; `week` is the ISO week.
//! - `fieldref` compares with another field of the same event (case-insensitive
//!   unless `cased`; `contains`/`startswith`/`endswith` apply).
//! - `expand` takes `%placeholder%` values from [`CompileOptions`]; an
//!   unconfigured placeholder is a rejection, not a wildcard.
//! - A rule without `id` is named by its title. A global filter applies to the
//!   rules it names when its log source covers the event's.
//! - Correlations are evaluated on a stream; see the `engine` module
//!   documentation for when conditions are judged.
//! - Where a correlation runs is Vigil's custom attribute `vigil: {scope:
//!   device | tenant}` (a namespaced top-level mapping, as the specification
//!   allows arbitrary custom fields; Sigma's own `scope` is a list of machine
//!   kinds and means something else). `device`, the default, runs on each
//!   sensor; `tenant` runs on the server over every device of the tenant.
//!   [`RuleSet::part`] splits a set into the two; only correlations may be
//!   tenant-wide, and a correlation references correlations of its own scope.
//!
//! Module layering (no import circle): `meta` (shared attributes, a leaf) ←
//! `rule`, `correlation` ← `document` (one YAML document compiled) ←
//! `ruleset` ← `engine` (correlation state) ← `testing`.

mod condition;
mod correlation;
mod detection;
mod document;
mod engine;
mod error;
mod eval;
mod event;
mod field;
/// The fuzz targets' entry points (`fuzz/`), shared with the replay of their corpora in `cargo test`.
#[doc(hidden)]
pub mod fuzzing;
mod grams;
mod index;
mod literals;
mod logsource;
mod meta;
mod pattern;
mod program;
mod required;
mod rule;
mod ruleset;
mod scan;
pub mod testing;
mod value;

pub use correlation::{Correlation, CorrelationType, Scope};
pub use engine::{Engine, EngineConfig, Fed, Hit};
pub use error::{Rejection, RuleError};
pub use event::{Event, FieldValue, FlatEvent, JsonEvent};
pub use field::{CompileOptions, MAX_EXPANDED_VALUES};
#[doc(hidden)]
pub use index::CacheStats;
pub use logsource::LogSource;
pub use meta::Level;
pub use rule::{Filter, Rule};
pub use ruleset::{LoadReport, Match, RuleSet, SourceRules};
