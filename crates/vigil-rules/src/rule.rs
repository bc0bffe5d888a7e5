use crate::detection::Detection;
use crate::eval::Ctx;
use crate::event::Event;
use crate::logsource::LogSource;
use crate::meta::Level;

/// One compiled detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// The optional `name` correlations refer to.
    pub name: Option<String>,
    pub title: String,
    pub description: String,
    pub level: Level,
    pub status: String,
    pub tags: Vec<String>,
    /// `author`, empty when the rule names none.
    pub author: String,
    /// `references` (URLs, reports), in the rule's order.
    pub references: Vec<String>,
    pub logsource: LogSource,
    pub(crate) detection: Detection,
}

/// A global filter (sigma-filters-specification.md): suppresses matches of the
/// rules it names when its own condition holds.
#[derive(Debug, Clone)]
pub struct Filter {
    pub id: String,
    pub title: String,
    pub logsource: LogSource,
    /// Rule ids or names the filter applies to.
    pub rules: Vec<String>,
    pub(crate) detection: Detection,
}

impl Rule {
    /// Whether the rule's detection matches `event` (the log source is not checked).
    pub fn matches(&self, event: &dyn Event) -> bool {
        self.detection.matches(&mut Ctx::new(event))
    }

    pub(crate) fn matches_in<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        self.detection.matches(ctx)
    }

    /// The fields the rule's detection reads, sorted, each once (`fieldref`
    /// targets included). Keywords read no named field; see
    /// [`Rule::has_keywords`]. What a log source must provide for the rule.
    pub fn fields(&self) -> Vec<&str> {
        self.detection.named_fields().0
    }

    /// Whether the detection has keywords (values searched for in every
    /// string value of the event).
    pub fn has_keywords(&self) -> bool {
        self.detection.named_fields().1
    }

    /// Whether `reference` (from a correlation or filter) names this rule.
    pub fn is_named(&self, reference: &str) -> bool {
        self.id == reference || self.name.as_deref() == Some(reference)
    }
}

impl Filter {
    pub fn matches(&self, event: &dyn Event) -> bool {
        self.detection.matches(&mut Ctx::new(event))
    }

    pub(crate) fn matches_in<'r>(&'r self, ctx: &mut Ctx<'r, '_>) -> bool {
        self.detection.matches(ctx)
    }
}
