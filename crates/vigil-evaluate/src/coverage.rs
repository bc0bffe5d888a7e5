//! Which rules of a set this sensor can feed at all.
//!
//! A rule is fed when one log source this sensor produces is covered by the
//! rule's log source and provides every field the rule's detection names
//! (keywords read every value, so they need no particular field). This is a
//! judgement on field names, not on values: an auditd rule on
//! `SYSCALL: memfd_create` counts as fed although Vigil only names the
//! syscalls of the operations it records (execve, openat, unlinkat,
//! renameat2, fchmodat, fchownat).

use crate::source::Source;
use std::collections::BTreeMap;
use vigil_rules::{LogSource, Rule, RuleSet};

/// Why rules are not fed, with how many rules each reason holds back. A rule
/// missing two fields counts under both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotFed {
    /// No log source this sensor produces is covered by the rule's
    /// (`linux/service=syslog`, `windows/process_creation`).
    LogSource(String),
    /// The rule's log source is produced, without this field.
    Field { source: Source, field: String },
}

impl std::fmt::Display for NotFed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFed::LogSource(s) => write!(f, "{s} not collected"),
            NotFed::Field { source, field } => {
                write!(f, "field `{field}` not provided for {}", source.name())
            }
        }
    }
}

/// What a rule set looks like to this sensor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Detection rules in the set.
    pub rules: usize,
    /// Rules this sensor can feed.
    pub fed: usize,
    /// Ids of the rules it cannot feed, in rule order.
    pub not_fed: Vec<String>,
    /// Reasons, with the number of rules each holds back, most first.
    pub reasons: Vec<(NotFed, usize)>,
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sensor can feed {} of {} rules; not fed: {}",
            self.fed,
            self.rules,
            self.not_fed.len()
        )?;
        for (i, (reason, n)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{reason}: {n}")?;
        }
        if !self.reasons.is_empty() {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// `product/category`, `product/service=name`, `*` for anything left out.
fn logsource_name(ls: &LogSource) -> String {
    let product = ls.product.as_deref().unwrap_or("*");
    match (&ls.category, &ls.service) {
        (Some(c), Some(s)) => format!("{product}/{c}/service={s}"),
        (Some(c), None) => format!("{product}/{c}"),
        (None, Some(s)) => format!("{product}/service={s}"),
        (None, None) => format!("{product}/*"),
    }
}

/// Why `rule` cannot be fed, or nothing when it can.
fn reasons(rule: &Rule) -> Vec<NotFed> {
    let fields = rule.fields();
    let mut best: Option<Vec<NotFed>> = None;
    for source in Source::ALL {
        if !rule.logsource.covers(&source.logsource()) {
            continue;
        }
        let missing: Vec<NotFed> = fields
            .iter()
            .filter(|f| !source.provides(f))
            .map(|f| NotFed::Field {
                source,
                field: (*f).to_owned(),
            })
            .collect();
        if missing.is_empty() {
            return Vec::new();
        }
        // Report the covered source the rule comes closest to being fed by.
        if best.as_ref().is_none_or(|b| missing.len() < b.len()) {
            best = Some(missing);
        }
    }
    best.unwrap_or_else(|| vec![NotFed::LogSource(logsource_name(&rule.logsource))])
}

/// Which rules of `set` this sensor can feed, and why the others cannot be.
pub fn coverage(set: &RuleSet) -> Coverage {
    let mut counts: BTreeMap<NotFed, usize> = BTreeMap::new();
    let mut c = Coverage {
        rules: set.len(),
        ..Coverage::default()
    };
    for rule in set.rules() {
        let why = reasons(rule);
        if why.is_empty() {
            c.fed += 1;
            continue;
        }
        c.not_fed.push(rule.id.clone());
        for r in why {
            *counts.entry(r).or_default() += 1;
        }
    }
    c.reasons = counts.into_iter().collect();
    // Most rules first; ties in a stable order.
    c.reasons
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(yaml: &str) -> RuleSet {
        let mut s = RuleSet::new();
        let mut report = vigil_rules::LoadReport::default();
        s.load_str(Path::new("t.yml"), yaml, &mut report);
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        s
    }

    #[test]
    fn rules_are_fed_held_back_by_source_or_by_field() {
        let s = set(concat!(
            "title: a\nid: a\nlogsource: {product: linux, category: process_creation}\n",
            "detection: {s: {Image|endswith: /id, CommandLine|contains: x}, condition: s}\n---\n",
            "title: b\nid: b\nlogsource: {product: linux, service: syslog}\n",
            "detection: {s: [x], condition: s}\n---\n",
            "title: c\nid: c\nlogsource: {product: linux, service: auditd}\n",
            "detection: {s: {type: SYSCALL, key: k}, condition: s}\n---\n",
            "title: d\nid: d\nlogsource: {product: linux, service: auditd}\n",
            "detection: {s: {type: EXECVE, a11: x}, k: [grep], condition: s and k}\n---\n",
            "title: e\nid: e\nlogsource: {product: linux, category: file_event}\n",
            "detection: {s: {TargetFilename: x, Imphash: y, Pipe: z}, condition: s}\n---\n",
            "title: f\nid: f\nlogsource: {product: linux}\n",
            "detection: {s: {DestinationPort: 1}, condition: s}\n",
        ));
        let c = coverage(&s);
        assert_eq!((c.rules, c.fed), (6, 3), "{c}");
        assert_eq!(c.not_fed, ["b", "c", "e"]);
        let field = |source, f: &str| NotFed::Field {
            source,
            field: f.into(),
        };
        assert_eq!(
            c.reasons,
            [
                (NotFed::LogSource("linux/service=syslog".into()), 1),
                (field(Source::FileEvent, "Imphash"), 1),
                (field(Source::FileEvent, "Pipe"), 1),
                (field(Source::Auditd, "key"), 1),
            ]
        );
        assert!(c.to_string().starts_with(
            "sensor can feed 3 of 6 rules; not fed: 3 (linux/service=syslog not collected: 1, "
        ));
    }
}
