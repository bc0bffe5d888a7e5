//! Rules from outside the process (a rule author's file, a published set,
//! a bundle) that try to hurt the engine: each is refused with an error that
//! says why, nothing panics or overflows the stack, and the good rules beside
//! it still load and match (issue 16, item 3).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use vigil_rules::{JsonEvent, LoadReport, LogSource, RuleSet};

const GOOD: &str = "title: good\nid: good-1\nlogsource: {category: process_creation, product: linux}\n\
                    detection: {s: {Image|endswith: /nc}, condition: s}\n";

/// Loads `hostile` and then, from another file, a good rule; the report.
/// (A file is the unit: a YAML stream that breaks loses what follows it in
/// that file, never another file.)
fn load(hostile: &str) -> (RuleSet, LoadReport) {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    set.load_str(Path::new("hostile.yml"), hostile, &mut report);
    set.load_str(Path::new("good.yml"), GOOD, &mut report);
    (set, report)
}

fn event(v: serde_json::Value) -> JsonEvent {
    match v {
        serde_json::Value::Object(m) => JsonEvent(m),
        _ => unreachable!(),
    }
}

/// Ids of the rules `set` matches on a Linux process_creation event.
fn matching(set: &RuleSet, v: serde_json::Value) -> Vec<String> {
    let src = LogSource::new("linux", "process_creation");
    set.matching_rules(&src, &event(v))
        .into_iter()
        .map(|i| set.rules()[i].id.clone())
        .collect()
}

/// The good rule still loads and matches.
fn good_still_works(set: &RuleSet) {
    let hits = matching(set, serde_json::json!({"Image": "/usr/bin/nc"}));
    assert!(hits.iter().any(|id| id == "good-1"), "{hits:?}");
}

fn refused(hostile: &str, why: &str) {
    let (set, report) = load(hostile);
    let text = report
        .rejected
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !report.rejected.is_empty() && text.to_lowercase().contains(why),
        "expected a rejection saying {why:?}, got: {text}"
    );
    good_still_works(&set);
}

#[test]
fn deeply_nested_conditions_are_refused() {
    let open = "(".repeat(100_000);
    let close = ")".repeat(100_000);
    refused(
        &format!(
            "title: deep\nid: deep-1\nlogsource: {{category: process_creation, product: linux}}\n\
             detection: {{s: {{Image: x}}, condition: '{open}s{close}'}}\n"
        ),
        "nested",
    );
    let nots = "not ".repeat(100_000);
    let (set, _) = load(&format!(
        "title: nots\nid: nots-1\nlogsource: {{category: process_creation, product: linux}}\n\
         detection: {{s: {{Image: x}}, condition: '{nots}s'}}\n"
    ));
    good_still_works(&set);
}

#[test]
fn deeply_nested_yaml_is_refused() {
    // 100,000 nested flow mappings and sequences in the detection.
    let deep_map = format!("{}x{}", "{a: ".repeat(100_000), "}".repeat(100_000));
    let (set, report) = load(&format!(
        "title: y\nid: y-1\nlogsource: {{category: process_creation, product: linux}}\n\
         detection: {{s: {deep_map}, condition: s}}\n"
    ));
    assert!(!report.rejected.is_empty());
    good_still_works(&set);
    let deep_seq = format!("{}x{}", "[".repeat(100_000), "]".repeat(100_000));
    let (set, report) = load(&format!(
        "title: z\nid: z-1\nlogsource: {{category: process_creation, product: linux}}\n\
         detection: {{s: {{Image: {deep_seq}}}, condition: s}}\n"
    ));
    assert!(!report.rejected.is_empty());
    good_still_works(&set);
}

#[test]
fn yaml_alias_bombs_are_refused() {
    // Billion laughs: nine levels of nine aliases each.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let (set, report) = load(&format!(
        "title: bomb\nid: bomb-1\nlogsource: {{category: process_creation, product: linux}}\n\
         {bomb}detection: {{s: {{Image: *a9}}, condition: s}}\n"
    ));
    assert!(!report.rejected.is_empty(), "the bomb was loaded");
    eprintln!("{}", report.rejected[0]);
    good_still_works(&set);
}

#[test]
fn pathological_regular_expressions_are_bounded() {
    // Catastrophic backtracking elsewhere; linear (or refused as too big) here.
    let (set, _) = load(
        "title: re\nid: re-1\nlogsource: {category: process_creation, product: linux}\n\
         detection: {s: {CommandLine|re: '^(a+)+$'}, condition: s}\n",
    );
    good_still_works(&set);
    let t = std::time::Instant::now();
    let hits = matching(
        &set,
        serde_json::json!({"CommandLine": format!("{}b", "a".repeat(100_000))}),
    );
    assert!(!hits.iter().any(|id| id == "re-1"));
    // Not a timing assertion of speed, a bound against exponential blow-up:
    // backtracking would take longer than the age of the universe here.
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    // A regex whose compiled form would be huge is refused.
    refused(
        "title: big\nid: big-1\nlogsource: {category: process_creation, product: linux}\n\
         detection: {s: {CommandLine|re: '(\\w{1000}){1000}'}, condition: s}\n",
        "regex",
    );
}

#[test]
fn files_past_the_size_bound_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yml");
    let filler = format!("# {}\n", "x".repeat(1000));
    std::fs::write(
        &big,
        format!(
            "{GOOD}{}",
            filler.repeat(((1u64 << 20) / 1000) as usize + 10)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        GOOD.replace("good-1", "good-2"),
    )
    .unwrap();
    let (set, report) = RuleSet::load_paths(&[dir.path()]);
    assert!(
        report
            .rejected
            .iter()
            .any(|r| r.path == big && r.to_string().contains("large")),
        "{report}: {:?}",
        report.rejected
    );
    assert!(set.rules().iter().any(|r| r.id == "good-2"));
}

#[test]
fn broken_bundles_are_refused_with_a_reason() {
    for bad in [
        "",
        "{",
        "[]",
        "{\"format\": 99}",
        "{\"files\": [{\"path\": 1}]}",
        &"[".repeat(100_000),
    ] {
        let (set, report) = RuleSet::from_bundle(Path::new("b.vrb"), bad);
        assert!(!report.rejected.is_empty(), "{bad:.40}");
        assert!(set.rules().is_empty());
    }
}
