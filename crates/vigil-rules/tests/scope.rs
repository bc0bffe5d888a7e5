//! The `vigil: {scope: ...}` custom attribute, the split of a set into what
//! a sensor and what the server runs, and the descriptive attributes
//! (author, references) carried into compiled rules.

use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use vigil_rules::{
    Engine, EngineConfig, Fed, Hit, JsonEvent, LoadReport, LogSource, RuleError, RuleSet, Scope,
};

fn load(text: &str) -> (RuleSet, LoadReport) {
    let mut set = RuleSet::for_bundle();
    let mut report = LoadReport::default();
    set.load_str(Path::new("t.yml"), text, &mut report);
    set.check_references(&mut report);
    (set, report)
}

fn ok(text: &str) -> RuleSet {
    let (set, report) = load(text);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    set
}

const RULES: &str = r#"
title: Created file
id: created
name: created
author: Vigil project, Someone Else
references:
    - https://example.org/a
    - https://example.org/b
logsource: {product: linux, category: file_event}
detection: {s: {TargetFilename|startswith: /tmp/}, condition: s}
---
title: Shell
id: shell
logsource: {product: linux, category: process_creation}
detection: {s: {Image|endswith: /sh}, condition: s}
---
title: Same file on three devices
id: spread
author: Vigil project
references: https://example.org/c
vigil:
    scope: tenant
correlation:
    type: value_count
    rules: [created]
    group-by: [Hashes]
    timespan: 10m
    condition: {field: DeviceId, gte: 3}
---
title: Shell bursts
id: burst
correlation:
    type: event_count
    rules: [shell]
    group-by: [User]
    timespan: 1m
    condition: {gte: 2}
"#;

#[test]
fn author_and_references_are_read() {
    let set = ok(RULES);
    let r = &set.rules()[0];
    assert_eq!(r.author, "Vigil project, Someone Else");
    assert_eq!(
        r.references,
        ["https://example.org/a", "https://example.org/b"]
    );
    assert_eq!(set.rules()[1].author, "");
    assert!(set.rules()[1].references.is_empty());
    let c = &set.correlations()[0];
    assert_eq!(c.author, "Vigil project");
    // A single string is a list of one, as for tags.
    assert_eq!(c.references, ["https://example.org/c"]);
    let (_, report) = load(
        "title: t\nauthor: [a]\nlogsource: {product: linux}\ndetection: {s: {a: b}, condition: s}\n",
    );
    assert!(matches!(
        &report.rejected[0].error,
        RuleError::WrongType { field, .. } if field == "author"
    ));
}

#[test]
fn scope_defaults_to_device_and_tenant_is_read() {
    let set = ok(RULES);
    let scopes: Vec<Scope> = set.correlations().iter().map(|c| c.scope).collect();
    assert_eq!(scopes, [Scope::Tenant, Scope::Device]);
    assert!(set.has_tenant_scope());
    let explicit = RULES.replace("id: burst\n", "id: burst\nvigil: {scope: device}\n");
    assert_eq!(ok(&explicit).correlations()[1].scope, Scope::Device);
}

#[test]
fn bad_scopes_are_rejected() {
    let corr = |vigil: &str| {
        format!(
            "title: s\nid: s\nlogsource: {{product: linux}}\ndetection: {{s: {{a: b}}, condition: s}}\n---\n\
             title: c\nid: c\n{vigil}\ncorrelation: {{type: event_count, rules: [s], timespan: 1m, condition: {{gte: 2}}}}\n"
        )
    };
    for (vigil, field) in [
        ("vigil: {scope: everywhere}", "vigil.scope"),
        ("vigil: {scope: [tenant]}", "vigil.scope"),
        ("vigil: tenant", "vigil"),
    ] {
        let (_, report) = load(&corr(vigil));
        assert_eq!(report.rejected.len(), 1, "{vigil}");
        assert!(
            matches!(&report.rejected[0].error, RuleError::WrongType { field: f, .. } if f == field),
            "{vigil}: {:?}",
            report.rejected[0].error
        );
    }
    // A misspelt key is an error, not a silent default.
    let (_, report) = load(&corr("vigil: {scop: tenant}"));
    assert!(report.rejected[0].error.to_string().contains("vigil.scop"));
    // Only correlations run tenant-wide.
    let (_, report) = load(
        "title: t\nvigil: {scope: tenant}\nlogsource: {product: linux}\ndetection: {s: {a: b}, condition: s}\n",
    );
    assert!(matches!(
        &report.rejected[0].error,
        RuleError::WrongType { field, .. } if field == "vigil.scope"
    ));
}

#[test]
fn a_correlation_references_correlations_of_its_own_scope_only() {
    let text = format!(
        "{RULES}---\ntitle: Chained\nid: chained\nvigil: {{scope: tenant}}\n\
         correlation: {{type: event_count, rules: [burst], timespan: 1h, condition: {{gte: 2}}}}\n"
    );
    let (set, report) = load(&text);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].id.as_deref(), Some("chained"));
    assert!(
        report.rejected[0]
            .error
            .to_string()
            .contains("scope tenant references `burst`"),
        "{}",
        report.rejected[0].error
    );
    assert_eq!(set.correlations().len(), 2);
}

#[test]
fn the_set_splits_into_what_sensors_and_the_server_run() {
    let set = ok(RULES);
    let device = set.part(Scope::Device);
    let ids = |s: &RuleSet| -> (Vec<String>, Vec<String>) {
        (
            s.rules().iter().map(|r| r.id.clone()).collect(),
            s.correlations().iter().map(|c| c.id.clone()).collect(),
        )
    };
    assert_eq!(
        ids(&device),
        // `created` feeds only the tenant-wide correlation, which does not generate.
        (vec!["shell".into()], vec!["burst".into()])
    );
    assert!(!device.has_tenant_scope());
    let tenant = set.part(Scope::Tenant);
    assert_eq!(
        ids(&tenant),
        (vec!["created".into()], vec!["spread".into()])
    );
    // A set without tenant-wide correlations gives the server nothing to run.
    let none = device.part(Scope::Tenant);
    assert!(none.rules().is_empty() && none.correlations().is_empty());

    // The server's part fires across devices; the sensor's part never sees it.
    let src = LogSource::new("linux", "file_event");
    let ev = |device: &str| {
        JsonEvent(
            json!({"TargetFilename": "/tmp/x", "Hashes": "SHA256=AB", "DeviceId": device})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
    };
    let mut server = Engine::new(Arc::new(tenant), EngineConfig::default());
    let mut trace: Vec<Fed> = Vec::new();
    let mut fired = Vec::new();
    for (i, d) in ["a", "b", "b", "c"].iter().enumerate() {
        fired.push(server.process_traced(&src, &ev(d), i as i64 * 1_000_000_000, &mut trace));
    }
    // The referenced rule is silent on the server: only the correlation is a hit.
    assert_eq!(fired, [vec![], vec![], vec![], vec![Hit::Correlation(0)]]);
    assert_eq!(trace.len(), 4);
    assert!(
        trace
            .iter()
            .all(|f| f.correlation == 0 && f.group == "SHA256=AB" && f.by == Hit::Rule(0))
    );
    assert_eq!(
        trace.iter().map(|f| f.fired).collect::<Vec<_>>(),
        [false, false, false, true]
    );

    let mut sensor = Engine::new(Arc::new(device), EngineConfig::default());
    for (i, d) in ["a", "b", "c"].iter().enumerate() {
        assert!(sensor.process(&src, &ev(d), i as i64).is_empty());
    }
    // With `generate`, the referenced rule alerts: on the sensors.
    let generating = RULES.replace(
        "    condition: {field: DeviceId, gte: 3}\n",
        "    condition: {field: DeviceId, gte: 3}\n    generate: true\n",
    );
    let set = ok(&generating);
    assert!(set.correlations()[0].generate);
    let device = set.part(Scope::Device);
    assert_eq!(device.rules().len(), 2);
    let mut sensor = Engine::new(Arc::new(device), EngineConfig::default());
    assert_eq!(sensor.process(&src, &ev("a"), 0), [Hit::Rule(0)]);
}

#[test]
fn the_scope_travels_in_a_bundle() {
    let set = ok(RULES);
    let bundle = set.to_bundle().unwrap_or_default();
    let (back, report) = RuleSet::from_bundle(Path::new("b.vrb"), &bundle);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(back.correlations()[0].scope, Scope::Tenant);
    assert_eq!(back.correlations()[0].references, ["https://example.org/c"]);
    assert_eq!(back.part(Scope::Device).correlations().len(), 1);
}
