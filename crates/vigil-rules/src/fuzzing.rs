//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the replay
//! of their corpora and regressions in `cargo test` (`tests/fuzz_regressions.rs`),
//! so both run the same code and check the same properties. Not an API.

use crate::{FieldValue, FlatEvent, LoadReport, LogSource, RuleSet};
use std::path::Path;

/// Rule text of any bytes: loaded (YAML, documents, conditions, modifiers),
/// then every rule's log source evaluated on two events holding every field a
/// rule reads, the compiled matcher checked against the rule-by-rule path,
/// and the accepted documents written as a bundle and read back.
pub fn rule_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut set = RuleSet::for_bundle();
    let mut report = LoadReport::default();
    set.load_str(Path::new("fuzz.yml"), text, &mut report);
    evaluate(&set, text);
    if let Some(bundle) = set.to_bundle() {
        let (again, report) = RuleSet::from_bundle(Path::new("fuzz.vrb"), &bundle);
        assert!(
            again.len() == set.len() || !report.rejected.is_empty(),
            "a bundle of accepted documents lost rules without saying why"
        );
    }
}

/// A rule bundle (`.vrb`, JSON) of any bytes, then evaluated as above.
pub fn rule_bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (set, _report) = RuleSet::from_bundle(Path::new("fuzz.vrb"), text);
    evaluate(&set, text);
}

/// Every rule's log source, on a fixed event and on one whose values are the
/// input's last line: the prefilter decides what evaluating each rule decides.
fn evaluate(set: &RuleSet, text: &str) {
    let tail = text.lines().last().unwrap_or_default();
    let fixed = r"C:\Windows\System32\cmd.exe /c whoami /all > \\host\share\out.txt";
    let mut sources: Vec<LogSource> = set.rules().iter().map(|r| r.logsource.clone()).collect();
    sources.truncate(8);
    for value in [fixed, tail] {
        let mut event = FlatEvent::new();
        for (i, rule) in set.rules().iter().take(64).enumerate() {
            for field in rule.fields() {
                if i % 3 == 2 {
                    event.push(field, FieldValue::Int(value.len() as i64));
                } else {
                    event.push(field, FieldValue::Str(value.into()));
                }
            }
        }
        event.push("CommandLine", FieldValue::Str(value.into()));
        for source in &sources {
            let indexed = set.matching_rules(source, &event);
            let each = set.matching_rules_unindexed(source, &event);
            assert_eq!(indexed, each, "the prefilter and the rules disagree");
        }
    }
}
