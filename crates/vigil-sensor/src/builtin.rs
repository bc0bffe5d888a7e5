//! Vigil's own rule pack, compiled into the sensor (see `build.rs`): the rules
//! a sensor runs when it is given none.

use vigil_rules::{LoadReport, RuleSet};

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

/// The built-in pack, loaded as if from `rules/NAME`.
pub(crate) fn rules() -> (RuleSet, LoadReport) {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    for (name, text) in RULES {
        set.load_str(
            &std::path::Path::new("builtin:rules").join(name),
            text,
            &mut report,
        );
    }
    (set, report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_builtin_pack_loads_whole() {
        let (set, report) = super::rules();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert!(set.len() >= 5, "only {} rules", set.len());
        assert_eq!(report.loaded, super::RULES.len());
    }
}
