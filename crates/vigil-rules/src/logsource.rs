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
    /// leaves out match anything.
    pub fn covers(&self, event: &LogSource) -> bool {
        fn ok(rule: &Option<String>, ev: &Option<String>) -> bool {
            match (rule, ev) {
                (None, _) => true,
                (Some(r), Some(e)) => r.eq_ignore_ascii_case(e),
                (Some(_), None) => false,
            }
        }
        ok(&self.product, &event.product)
            && ok(&self.category, &event.category)
            && ok(&self.service, &event.service)
    }
}
