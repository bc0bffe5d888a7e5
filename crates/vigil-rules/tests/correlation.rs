//! Correlation rules and global filters, from the specification's own examples.

use std::path::Path;
use std::sync::Arc;
use vigil_rules::{Engine, EngineConfig, Hit, JsonEvent, LoadReport, LogSource, RuleSet};

const S: i64 = 1_000_000_000;

fn set(text: &str) -> Arc<RuleSet> {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    set.load_str(Path::new("c.yml"), text, &mut report);
    set.check_references(&mut report);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    Arc::new(set)
}

fn ev(v: serde_json::Value) -> JsonEvent {
    match v {
        serde_json::Value::Object(m) => JsonEvent(m),
        _ => panic!("object"),
    }
}

/// Feeds (time in s, event) and returns the ids of what fired at each step.
fn run(engine: &mut Engine, events: &[(i64, serde_json::Value)]) -> Vec<Vec<String>> {
    let src = LogSource::parse("linux/process_creation");
    events
        .iter()
        .map(|(t, e)| {
            let hits = engine.process(&src, &ev(e.clone()), t * S);
            hits.into_iter().map(|h| name(engine, h)).collect()
        })
        .collect()
}

fn name(engine: &Engine, h: Hit) -> String {
    match h {
        Hit::Rule(i) => engine.rule_set().rules()[i].id.clone(),
        Hit::Correlation(i) => engine.rule_set().correlations()[i].id.clone(),
    }
}

const BASE: &str = r#"
title: failed login
id: failed
name: failed_login
logsource: {product: linux}
detection:
  s: {Outcome: failure}
  condition: s
---
title: good login
id: good
name: successful_login
logsource: {product: linux}
detection:
  s: {Outcome: success}
  condition: s
"#;

fn with(corr: &str) -> Arc<RuleSet> {
    set(&format!("{BASE}---\n{corr}"))
}

#[test]
fn state_survives_a_reload_that_leaves_the_correlation_unchanged() {
    const BRUTE: &str = "title: brute\nid: brute\ncorrelation:\n  type: event_count\n  rules: [failed_login]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 3}\n";
    let f = serde_json::json!({"Outcome": "failure", "User": "a"});
    let two = |e: &mut Engine| run(e, &[(0, f.clone()), (10, f.clone())]);
    // An unrelated rule is added (and the correlation's title edited): the
    // two failures already counted still count.
    let mut e = Engine::new(with(BRUTE), EngineConfig::default());
    assert!(two(&mut e).iter().all(Vec::is_empty));
    let edited = format!(
        "{}---\ntitle: other\nid: other\nlogsource: {{product: linux}}\ndetection:\n  s: {{Outcome: odd}}\n  condition: s\n",
        BRUTE.replace("title: brute", "title: brute force")
    );
    e.reload(with(&edited));
    assert_eq!(run(&mut e, &[(20, f.clone())])[0], vec!["brute"]);
    // The correlation itself changes (a longer window): it starts over.
    let mut e = Engine::new(with(BRUTE), EngineConfig::default());
    two(&mut e);
    e.reload(with(&BRUTE.replace("timespan: 1m", "timespan: 2m")));
    assert!(run(&mut e, &[(20, f.clone())])[0].is_empty());
    assert_eq!(
        run(&mut e, &[(21, f.clone()), (22, f.clone())])[1],
        vec!["brute"]
    );
}

#[test]
fn event_count_fires_at_threshold_per_group_inside_the_window() {
    let s = with(
        "title: brute\nid: brute\ncorrelation:\n  type: event_count\n  rules: [failed_login]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 3}\nlevel: high\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let f = |u: &str| serde_json::json!({"Outcome": "failure", "User": u});
    let out = run(
        &mut e,
        &[
            (0, f("a")),
            (10, f("b")),
            (20, f("a")),
            (30, f("a")),
            (31, f("a")),
        ],
    );
    assert_eq!(
        out[3],
        vec!["brute"],
        "third failure of user a within a minute"
    );
    assert!(out[0].is_empty() && out[1].is_empty() && out[2].is_empty());
    assert!(out[4].is_empty(), "the group starts over after firing");
    // Spread over more than the time span: never three at once.
    let s = with(
        "title: brute\nid: brute\ncorrelation:\n  type: event_count\n  rules: [failed]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 3}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(
        &mut e,
        &[(0, f("a")), (50, f("a")), (100, f("a")), (150, f("a"))],
    );
    assert!(out.iter().all(Vec::is_empty), "{out:?}");
}

#[test]
fn referenced_rules_are_silent_unless_generate() {
    let s = with(
        "title: brute\nid: brute\ncorrelation:\n  type: event_count\n  rules: [failed_login]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 2}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(
        &mut e,
        &[
            (0, serde_json::json!({"Outcome": "failure"})),
            (1, serde_json::json!({"Outcome": "success"})),
        ],
    );
    assert_eq!(out, vec![Vec::<String>::new(), vec!["good".to_owned()]]);
    let s = with(
        "title: brute\nid: brute\ncorrelation:\n  type: event_count\n  generate: true\n  rules: [failed_login]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 2}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(&mut e, &[(0, serde_json::json!({"Outcome": "failure"}))]);
    assert_eq!(out[0], vec!["failed"]);
}

#[test]
fn value_count_counts_distinct_values() {
    let s = with(
        "title: spray\nid: spray\ncorrelation:\n  type: value_count\n  rules: [failed]\n  group-by: [Host]\n  timespan: 5m\n  condition: {field: User, gte: 3}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let f = |u: &str| serde_json::json!({"Outcome": "failure", "Host": "h", "User": u});
    let out = run(
        &mut e,
        &[
            (0, f("a")),
            (1, f("a")),
            (2, f("b")),
            (3, f("b")),
            (4, f("c")),
        ],
    );
    assert_eq!(out[4], vec!["spray"]);
    assert!(out[..4].iter().all(Vec::is_empty));
}

#[test]
fn temporal_and_temporal_ordered() {
    let s = with(
        "title: t\nid: t\ncorrelation:\n  type: temporal\n  rules: [failed_login, successful_login]\n  group-by: [User]\n  timespan: 10m\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let (f, g) = (
        serde_json::json!({"Outcome": "failure", "User": "u"}),
        serde_json::json!({"Outcome": "success", "User": "u"}),
    );
    let out = run(&mut e, &[(0, g.clone()), (60, f.clone())]);
    assert_eq!(out[1], vec!["t"], "any order");

    let s = with(
        "title: o\nid: o\ncorrelation:\n  type: temporal_ordered\n  rules: [failed_login, successful_login]\n  group-by: [User]\n  timespan: 10m\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(&mut e, &[(0, g.clone()), (60, f.clone())]);
    assert!(
        out.iter().all(Vec::is_empty),
        "success before failure is not the sequence: {out:?}"
    );
    let out = run(&mut e, &[(120, g.clone())]);
    assert_eq!(out[0], vec!["o"], "failure at 60 then success at 120");
    let out = run(&mut e, &[(200, f.clone()), (200 + 11 * 60, g.clone())]);
    assert!(
        out.iter().all(Vec::is_empty),
        "outside the time span: {out:?}"
    );
}

#[test]
fn spec_example_chained_correlations_with_names() {
    // sigma-correlation-rules-specification.md, "Failed Logins Followed by Successful Login".
    let s = set(r#"
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"#);
    let mut e = Engine::new(s, EngineConfig::default());
    let src = LogSource {
        product: Some("windows".into()),
        category: None,
        service: Some("security".into()),
    };
    let mut fired = Vec::new();
    for i in 0..10 {
        for h in e.process(
            &src,
            &ev(serde_json::json!({"EventID": 4625, "User": "bob"})),
            i * S,
        ) {
            fired.push(name(&e, h));
        }
    }
    for h in e.process(
        &src,
        &ev(serde_json::json!({"EventID": 4624, "User": "bob"})),
        30 * S,
    ) {
        fired.push(name(&e, h));
    }
    assert_eq!(
        fired,
        vec!["b180ead8-d58f-40b2-ae54-c8940995b9b6"],
        "only the outermost correlation is reported"
    );
}

#[test]
fn aliases_group_across_differently_named_fields() {
    let s = with(
        "title: a\nid: a\ncorrelation:\n  type: temporal\n  rules: [failed_login, successful_login]\n  group-by: [ip]\n  timespan: 1m\n  aliases:\n    ip:\n      failed_login: SourceIp\n      successful_login: DestinationIp\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(
        &mut e,
        &[
            (
                0,
                serde_json::json!({"Outcome": "failure", "SourceIp": "1.2.3.4"}),
            ),
            (
                1,
                serde_json::json!({"Outcome": "success", "DestinationIp": "9.9.9.9"}),
            ),
            (
                2,
                serde_json::json!({"Outcome": "success", "DestinationIp": "1.2.3.4"}),
            ),
        ],
    );
    assert_eq!(out, vec![vec![], vec![], vec!["a".to_owned()]]);
}

#[test]
fn value_sum_avg_percentile() {
    let s = with(
        "title: s\nid: s\ncorrelation:\n  type: value_sum\n  rules: [good]\n  group-by: [User]\n  timespan: 1h\n  condition: {field: Bytes, gt: 100}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let g = |b: i64| serde_json::json!({"Outcome": "success", "User": "u", "Bytes": b});
    let out = run(&mut e, &[(0, g(60)), (1, g(30)), (2, g(20))]);
    assert_eq!(out[2], vec!["s"]);

    let s = with(
        "title: v\nid: v\ncorrelation:\n  type: value_avg\n  rules: [good]\n  group-by: [User]\n  timespan: 1h\n  condition: {field: Bytes, gte: 50}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let out = run(&mut e, &[(0, g(10)), (1, g(200))]);
    assert_eq!(out[1], vec!["v"], "(10 + 200) / 2 >= 50");

    let s = with(
        "title: p\nid: p\ncorrelation:\n  type: value_percentile\n  rules: [good]\n  group-by: [Host]\n  timespan: 1h\n  condition: {field: Image, lte: 10}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let img = |i: &str| serde_json::json!({"Outcome": "success", "Host": "h", "Image": i});
    let mut events: Vec<(i64, serde_json::Value)> =
        (0..20).map(|t| (t, img("/bin/common"))).collect();
    events.push((21, img("/tmp/rare")));
    let out = run(&mut e, &events);
    assert_eq!(out[20], vec!["p"], "1 of 21 is under 10%");
    assert!(out[..20].iter().all(Vec::is_empty));
}

#[test]
fn upper_bounds_are_judged_when_the_window_closes() {
    let s = with(
        "title: few\nid: few\ncorrelation:\n  type: event_count\n  rules: [good]\n  group-by: [User]\n  timespan: 1m\n  condition: {lt: 3}\n",
    );
    let mut e = Engine::new(s, EngineConfig::default());
    let g = |u: &str| serde_json::json!({"Outcome": "success", "User": u});
    let out = run(
        &mut e,
        &[(0, g("a")), (1, g("b")), (2, g("b")), (3, g("b"))],
    );
    assert!(
        out.iter().all(Vec::is_empty),
        "nothing is judged before the window closes"
    );
    let closed: Vec<String> = e.flush().into_iter().map(|h| name(&e, h)).collect();
    assert_eq!(closed, vec!["few"], "user a had 1 (< 3); user b had 3");
    // A later event of the same group closes the window too.
    let mut e = Engine::new(
        with(
            "title: few\nid: few\ncorrelation:\n  type: event_count\n  rules: [good]\n  group-by: [User]\n  timespan: 1m\n  condition: {lt: 3}\n",
        ),
        EngineConfig::default(),
    );
    let out = run(&mut e, &[(0, g("a")), (120, g("a"))]);
    assert_eq!(out[1], vec!["few"]);
}

#[test]
fn state_is_bounded_and_evictions_are_counted() {
    let s = with(
        "title: b\nid: b\ncorrelation:\n  type: event_count\n  rules: [failed]\n  group-by: [User]\n  timespan: 1h\n  condition: {gte: 2}\n",
    );
    let mut e = Engine::new(
        s,
        EngineConfig {
            max_groups: 2,
            max_entries_per_group: 100,
        },
    );
    let f = |u: &str| serde_json::json!({"Outcome": "failure", "User": u});
    let out = run(
        &mut e,
        &[(0, f("a")), (1, f("b")), (2, f("c")), (3, f("a"))],
    );
    assert_eq!(e.evictions(), 2, "c evicted a, then a evicted b");
    assert!(
        out[3].is_empty(),
        "a's first failure was evicted with its group"
    );
}

#[test]
fn filters_suppress_named_rules_only() {
    let s = set(&format!(
        "{BASE}---\ntitle: ignore svc\nid: f1\nlogsource: {{product: linux}}\nfilter:\n  rules: [failed]\n  selection: {{User|startswith: svc_}}\n  condition: selection\n"
    ));
    let src = LogSource::parse("linux/process_creation");
    let hit = |v| {
        s.evaluate(&src, &ev(v))
            .iter()
            .map(|m| m.rule.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        hit(serde_json::json!({"Outcome": "failure", "User": "svc_backup"})),
        Vec::<String>::new()
    );
    assert_eq!(
        hit(serde_json::json!({"Outcome": "failure", "User": "alice"})),
        vec!["failed"]
    );
    assert_eq!(
        hit(serde_json::json!({"Outcome": "success", "User": "svc_backup"})),
        vec!["good"]
    );
}

#[test]
fn bad_correlations_are_rejected_with_reasons() {
    for (corr, why) in [
        (
            "correlation: {type: event_count, rules: [nope], timespan: 1m, condition: {gte: 1}}",
            "unknown rule `nope`",
        ),
        (
            "correlation: {type: sometimes, rules: [failed], timespan: 1m}",
            "unknown type",
        ),
        (
            "correlation: {type: event_count, rules: [failed], timespan: 1m}",
            "condition",
        ),
        (
            "correlation: {type: event_count, rules: [failed], timespan: soon, condition: {gte: 1}}",
            "timespan",
        ),
        (
            "correlation: {type: value_count, rules: [failed], timespan: 1m, condition: {gte: 1}}",
            "field",
        ),
        (
            "correlation: {type: event_count, rules: [failed], timespan: 1m, condition: {most: 1}}",
            "operator",
        ),
    ] {
        let mut set = RuleSet::new();
        let mut report = LoadReport::default();
        set.load_str(
            Path::new("c.yml"),
            &format!("{BASE}---\ntitle: c\nid: c\n{corr}\n"),
            &mut report,
        );
        set.check_references(&mut report);
        assert_eq!(report.rejected.len(), 1, "{corr}");
        assert!(
            report.rejected[0].error.to_string().contains(why),
            "{corr}: {}",
            report.rejected[0].error
        );
        assert_eq!(report.rejected[0].id.as_deref(), Some("c"));
    }
}
