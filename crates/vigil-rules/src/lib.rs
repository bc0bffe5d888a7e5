//! Vigil's Sigma rule engine.
//!
//! What it is: a parser and compiler for Sigma detection rules (spec v2.1) and an
//! evaluator that matches compiled rules against events through the [`Event`]
//! trait. It reads rule files (and nothing else) from disk.
//!
//! What it is not: it knows nothing of kernels, gRPC, protobuf or storage. The
//! sensor adapts its records to [`Event`]; the server and the CLI load rule sets
//! the same way.
//!
//! This first version covers the Sigma subset the sensor needs today: string
//! modifiers (`contains`, `startswith`, `endswith`, `all`, `re`, `cased`,
//! `exists`), wildcards with escaping, `null`, numbers, keyword lists, and the
//! full condition grammar. Anything it does not support is a *rejection* with a
//! reason, never a silent no-op.

mod condition;
mod correlation;
mod detection;
mod error;
mod eval;
mod event;
mod field;
mod index;
mod literals;
mod logsource;
mod pattern;
mod rule;
mod ruleset;
pub mod testing;
mod value;

pub use correlation::{Correlation, CorrelationType, Engine, EngineConfig, Hit};
pub use error::{Rejection, RuleError};
pub use event::{Event, FieldValue, JsonEvent};
pub use field::{CompileOptions, MAX_EXPANDED_VALUES};
pub use logsource::LogSource;
pub use rule::{Filter, Level, Rule};
pub use ruleset::{LoadReport, Match, RuleSet};
