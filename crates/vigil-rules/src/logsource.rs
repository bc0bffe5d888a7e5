/// Categories that cover others (sigma-appendix-taxonomy.md: Sysmon events
/// 12–14 are `registry_event` and also `registry_add`/`_delete`/`_set`/`_rename`).
const UMBRELLAS: &[(&str, &[&str])] = &[(
    "registry_event",
    &[
        "registry_add",
        "registry_delete",
        "registry_set",
        "registry_rename",
    ],
)];

/// Where an event comes from, in Sigma's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LogSource {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

impl LogSource {
    pub fn new(product: &str, category: &str) -> Self {
        LogSource {
            product: Some(product.to_owned()),
            category: Some(category.to_owned()),
            service: None,
        }
    }

    /// Parses `product/category` (either part may be empty).
    pub fn parse(s: &str) -> Self {
        let (p, c) = s.split_once('/').unwrap_or((s, ""));
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_ascii_lowercase());
        LogSource {
            product: opt(p),
            category: opt(c),
            service: None,
        }
    }

    /// Whether a rule written for `self` applies to an event from `event`: each
    /// field the rule names must match (case-insensitively); fields the rule
    /// leaves out match anything. A rule category that is a taxonomy umbrella
    /// (`registry_event`) covers the categories under it.
    pub fn covers(&self, event: &LogSource) -> bool {
        fn ok(rule: &Option<String>, ev: &Option<String>) -> bool {
            match (rule, ev) {
                (None, _) => true,
                (Some(r), Some(e)) => r.eq_ignore_ascii_case(e),
                (Some(_), None) => false,
            }
        }
        let category = ok(&self.category, &event.category)
            || match (&self.category, &event.category) {
                (Some(r), Some(e)) => UMBRELLAS.iter().any(|(u, members)| {
                    r.eq_ignore_ascii_case(u) && members.iter().any(|m| e.eq_ignore_ascii_case(m))
                }),
                _ => false,
            };
        ok(&self.product, &event.product) && category && ok(&self.service, &event.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_and_umbrellas() {
        let rule = |p: &str| LogSource::parse(p);
        assert!(rule("windows/registry_event").covers(&LogSource::new("windows", "registry_set")));
        assert!(!rule("windows/registry_set").covers(&LogSource::new("windows", "registry_add")));
        assert!(rule("/process_creation").covers(&LogSource::new("linux", "process_creation")));
        assert!(
            !rule("windows/process_creation").covers(&LogSource::new("linux", "process_creation"))
        );
        assert!(rule("linux/").covers(&LogSource::new("linux", "file_event")));
        let with_service = LogSource {
            service: Some("auditd".into()),
            ..LogSource::default()
        };
        assert!(!with_service.covers(&LogSource::new("linux", "process_creation")));
    }
}
