//! Vigil's own rule pack (rules/): every rule loads, carries ATT&CK tags, has
//! tests, and passes them.

use std::path::PathBuf;
use std::sync::Arc;
use vigil_rules::RuleSet;
use vigil_rules::testing::{find_test_files, run_tests};

#[test]
fn every_shipped_rule_loads_is_tagged_tested_and_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let (set, report) = RuleSet::load_paths(&[&dir]);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let total = set.rules().len() + set.correlations().len();
    assert!(total >= 40, "the pack has {total} rules");
    assert!(!set.correlations().is_empty(), "the pack has correlations");
    for r in set.rules() {
        assert!(
            r.tags.iter().any(|t| t.starts_with("attack.t")),
            "{} has no ATT&CK technique",
            r.title
        );
    }
    for c in set.correlations() {
        assert!(
            c.tags.iter().any(|t| t.starts_with("attack.t")),
            "{} has no ATT&CK technique",
            c.title
        );
    }
    let mut ids: Vec<&str> = set
        .rules()
        .iter()
        .map(|r| r.id.as_str())
        .chain(set.correlations().iter().map(|c| c.id.as_str()))
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "rule ids are unique");
    let set = Arc::new(set);
    let result = run_tests(&set, &find_test_files(&[&dir]));
    assert!(
        result.failed.is_empty(),
        "{}",
        result
            .failed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        result.untested.is_empty(),
        "rules without tests: {:?}",
        result.untested
    );
    assert!(
        result.passed >= 2 * total,
        "{} cases for {total} rules",
        result.passed
    );
}
