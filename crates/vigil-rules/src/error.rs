use std::path::PathBuf;

/// Why one rule could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("unknown modifier `{modifier}` on `{field}`")]
    UnknownModifier { field: String, modifier: String },
    #[error("invalid regular expression in `{field}`: {reason}")]
    Regex { field: String, reason: String },
    #[error("condition: {0}")]
    Condition(String),
    #[error("condition references unknown selection `{0}`")]
    UnknownSelection(String),
    #[error("detection: {0}")]
    Detection(String),
    #[error("cannot read file: {0}")]
    Io(String),
}

/// A rule that was rejected, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub path: PathBuf,
    /// 1-based line of the offending construct, or of the rule's document start.
    pub line: usize,
    /// The rule's `id`, when it could be read.
    pub id: Option<String>,
    pub error: RuleError,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.path.display(), self.line)?;
        if let Some(id) = &self.id {
            write!(f, "rule {id}: ")?;
        }
        write!(f, "{}", self.error)
    }
}
