//! The compiled path (literal prefilter, literal sets, shared field context)
//! must decide exactly what evaluating every rule one by one decides.
//! Property tests over generated rules and events, and the real corpus over a
//! generated event mix.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use vigil_rules::{JsonEvent, LoadReport, LogSource, RuleSet};

const FIELDS: &[&str] = &["Image", "CommandLine", "User"];
const MODS: &[&str] = &[
    "",
    "|contains",
    "|startswith",
    "|endswith",
    "|contains|all",
    "|cased",
    "|contains|cased",
    "|re",
    "|neq",
    "|windash|contains",
];

fn value() -> impl Strategy<Value = String> {
    // A tiny alphabet so generated values and events collide often.
    proptest::string::string_regex("[abAB/-]{0,3}[*?]?[ab]{0,2}").expect("regex")
}

fn selection() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            prop::sample::select(FIELDS),
            prop::sample::select(MODS),
            proptest::collection::vec(value(), 1..4),
        ),
        1..3,
    )
    .prop_map(|entries| {
        let mut s = String::new();
        for (f, m, vals) in entries {
            let vals: Vec<String> = vals
                .into_iter()
                .map(|v| {
                    if m == "|re" {
                        format!("'{}'", v.replace(['*', '?'], "."))
                    } else {
                        format!("'{v}'")
                    }
                })
                .collect();
            s.push_str(&format!("    {f}{m}: [{}]\n", vals.join(", ")));
        }
        s
    })
}

fn condition() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "s1",
        "s1 and s2",
        "s1 or s2",
        "s1 and not s2",
        "1 of s*",
        "all of s*",
        "not s1",
        "(s1 or s2) and s3",
        "s1 and (s2 or not s3)",
    ])
}

fn rule_text() -> impl Strategy<Value = String> {
    (selection(), selection(), selection(), condition()).prop_map(|(a, b, c, cond)| {
        format!("title: t\nlogsource: {{product: p, category: c}}\ndetection:\n  s1:\n{a}  s2:\n{b}  s3:\n{c}  condition: {cond}\n")
    })
}

fn event() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    proptest::collection::vec(
        (
            prop::sample::select(FIELDS),
            proptest::string::string_regex("[abAB/ -]{0,8}").expect("re"),
        ),
        0..4,
    )
    .prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn prefiltered_equals_exhaustive(rules in proptest::collection::vec(rule_text(), 1..6),
                                     events in proptest::collection::vec(event(), 1..8)) {
        let mut set = RuleSet::new();
        let mut report = LoadReport::default();
        for (i, r) in rules.iter().enumerate() {
            set.load_str(Path::new(&format!("r{i}.yml")), r, &mut report);
        }
        let src = LogSource::new("p", "c");
        for e in events {
            let e = JsonEvent(e);
            prop_assert_eq!(set.matching_rules(&src, &e), set.matching_rules_unindexed(&src, &e), "event {:?}", e.0);
        }
    }
}

#[path = "../../../benches/support/events.rs"]
#[allow(dead_code)]
mod events;

#[test]
fn corpus_prefilter_agrees_with_exhaustive_evaluation() {
    let corpus = std::env::var_os("VIGIL_SIGMA_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sigma"));
    if !corpus.is_dir() {
        eprintln!("SKIPPED: Sigma corpus not found (set VIGIL_SIGMA_CORPUS)");
        return;
    }
    let (set, _) = RuleSet::load_paths(&[
        corpus.join("rules/windows/process_creation"),
        corpus.join("rules/linux/process_creation"),
    ]);
    for (src, evs) in [
        (
            LogSource::new("windows", "process_creation"),
            events::generate(1500, 11, events::windows_event),
        ),
        (
            LogSource::new("linux", "process_creation"),
            events::generate(1500, 12, events::linux_event),
        ),
    ] {
        let mut matched = 0;
        for e in evs {
            let e = JsonEvent(e);
            let fast = set.matching_rules(&src, &e);
            assert_eq!(
                fast,
                set.matching_rules_unindexed(&src, &e),
                "event {:?}",
                e.0
            );
            matched += usize::from(!fast.is_empty());
        }
        assert!(matched > 0, "the mix should trigger some rules");
    }
}
