//! The examples of sigma-rules-specification.md (v2.1), as written there, each
//! with events that must and must not match.

use std::path::Path;
use vigil_rules::{JsonEvent, LoadReport, LogSource, RuleSet};

fn rule(detection: &str) -> Result<RuleSet, LoadReport> {
    let text =
        format!("title: spec example\nlogsource: {{product: windows}}\ndetection:\n{detection}");
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    set.load_str(Path::new("spec.yml"), &text, &mut report);
    if report.rejected.is_empty() {
        Ok(set)
    } else {
        Err(report)
    }
}

fn matches(set: &RuleSet, v: serde_json::Value) -> bool {
    let serde_json::Value::Object(m) = v else {
        panic!("object")
    };
    !set.evaluate(&LogSource::parse("windows/x"), &JsonEvent(m))
        .is_empty()
}

#[test]
fn lists_of_strings_and_maps() {
    let s = rule("    keywords:\n        - 'EVILSERVICE'\n        - 'svchost.exe -n evil'\n    condition: keywords\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"Message": "service EvilService started"})
    ));
    assert!(matches(
        &s,
        serde_json::json!({"CommandLine": "C:\\x\\svchost.exe -n evil"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"Message": "svchost.exe -k netsvcs"})
    ));

    let s = rule("    selection:\n        - Image|endswith: '\\\\example.exe'\n        - Description|contains: 'Test executable'\n    condition: selection\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"Image": "C:\\temp\\example.exe"})
    ));
    assert!(matches(
        &s,
        serde_json::json!({"Description": "A Test Executable here"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"Image": "C:\\temp\\myexample.exe"})
    ));
}

#[test]
fn maps() {
    let s = rule("    selection:\n        EventLog: Security\n        EventID:\n            - 517\n            - 1102\n    condition: selection\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"EventLog": "Security", "EventID": 1102})
    ));
    assert!(matches(
        &s,
        serde_json::json!({"EventLog": "security", "EventID": "517"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"EventLog": "System", "EventID": 517})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"EventLog": "Security", "EventID": 4624})
    ));

    let s = rule("    selection:\n          EventLog: Security\n          EventID: 4769\n          TicketOptions: '0x40810000'\n          TicketEncryption: '0x17'\n    condition: selection\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"EventLog": "Security", "EventID": 4769, "TicketOptions": "0x40810000", "TicketEncryption": "0x17"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"EventLog": "Security", "EventID": 4769, "TicketOptions": "0x40810000", "TicketEncryption": "0x12"})
    ));
}

#[test]
fn special_values_empty_null_and_existence() {
    let s = rule("    selection:\n        EventID: 4738\n    filter:\n        PasswordLastSet: null\n    condition: selection and not filter\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"EventID": 4738, "PasswordLastSet": "2024-01-01"})
    ));
    assert!(!matches(&s, serde_json::json!({"EventID": 4738})));
    assert!(!matches(
        &s,
        serde_json::json!({"EventID": 4738, "PasswordLastSet": null})
    ));

    let s = rule("    selection_main:\n        FieldA: 'something'\n    selection_empty1:\n        FieldB: ''\n    selection_empty2:\n        FieldB: null\n    condition: selection_main and 1 of selection_empty*\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"FieldA": "something", "FieldB": ""})
    ));
    assert!(matches(&s, serde_json::json!({"FieldA": "something"})));
    assert!(!matches(
        &s,
        serde_json::json!({"FieldA": "something", "FieldB": "x"})
    ));

    // The specification's "invalid example": null inside a list of values.
    let err = rule("    selection_main:\n        FieldA: 'something'\n        FieldB:\n            - ''\n            - null\n    condition: selection_main\n").unwrap_err();
    assert!(
        err.rejected[0]
            .error
            .to_string()
            .contains("null cannot be part of a list"),
        "{}",
        err.rejected[0].error
    );

    let s = rule("    selection:\n        EventID: 4738\n        PasswordLastSet|exists: true\n    condition: selection\n").unwrap();
    assert!(
        matches(
            &s,
            serde_json::json!({"EventID": 4738, "PasswordLastSet": null})
        ),
        "exists checks presence only"
    );
    assert!(!matches(&s, serde_json::json!({"EventID": 4738})));
}

#[test]
fn wildcards_and_escapes() {
    let s = rule("    selection:\n        Image: 'prog?.exe'\n    condition: selection\n").unwrap();
    assert!(matches(&s, serde_json::json!({"Image": "progA.exe"})));
    assert!(!matches(&s, serde_json::json!({"Image": "prog.exe"})));
    let s = rule("    selection:\n        Image: 'antivirus_V*.exe'\n    condition: selection\n")
        .unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"Image": "antivirus_V21.2.1.exe"})
    ));
    // `\\*`: a backslash followed by a wildcard; `\\\*`: backslash and star, both plain;
    // `\\\\`: a plain double backslash; a single `\` before a letter is plain.
    let s = rule("    a:\n        F: 'x\\\\*'\n    condition: a\n").unwrap();
    assert!(matches(&s, serde_json::json!({"F": "x\\anything"})));
    assert!(!matches(&s, serde_json::json!({"F": "xanything"})));
    let s = rule("    a:\n        F: 'x\\\\\\*'\n    condition: a\n").unwrap();
    assert!(matches(&s, serde_json::json!({"F": "x\\*"})));
    assert!(!matches(&s, serde_json::json!({"F": "x\\y"})));
    let s = rule("    a:\n        F: 'a\\\\\\\\b'\n    condition: a\n").unwrap();
    assert!(matches(&s, serde_json::json!({"F": "a\\\\b"})));
    let s = rule("    a:\n        F: 'C:\\Windows'\n    condition: a\n").unwrap();
    assert!(matches(&s, serde_json::json!({"F": "c:\\windows"})));
}

#[test]
fn placeholders_need_expand() {
    let s = rule("    a:\n        F: '%name%'\n    condition: a\n").unwrap();
    assert!(
        matches(&s, serde_json::json!({"F": "%NAME%"})),
        "without expand, a placeholder is a literal value"
    );
    assert!(
        rule("    a:\n        F|expand: '%name%'\n    condition: a\n").is_err(),
        "an unconfigured placeholder is rejected"
    );
}

#[test]
fn keyword_searches() {
    let s = rule("    mimikatz_keywords:\n        - 'event::clear'\n        - 'event::drop'\n    condition: mimikatz_keywords\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"CommandLine": "mimikatz # event::drop"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"CommandLine": "event::list"})
    ));

    let s = rule("    keywords_cmdlet:\n        '|all':\n            - 'OabVirtualDirectory'\n            - ' -ExternalUrl '\n    condition: keywords_cmdlet\n").unwrap();
    assert!(matches(
        &s,
        serde_json::json!({"Payload": "Set-OabVirtualDirectory -ExternalUrl http://x"})
    ));
    assert!(!matches(
        &s,
        serde_json::json!({"Payload": "Get-OabVirtualDirectory"})
    ));
}

#[test]
fn conditions() {
    let base = "    selection1:\n        A: a\n    selection2:\n        B: b\n    keywords1:\n        - k1\n    keywords2:\n        - k2\n    filter1:\n        C: c\n    _example:\n        D: d\n";
    let cases: &[(&str, serde_json::Value, bool)] = &[
        (
            "keywords1 or keywords2",
            serde_json::json!({"X": "k2"}),
            true,
        ),
        ("1 of them", serde_json::json!({"B": "b"}), true),
        ("1 of them", serde_json::json!({"D": "d"}), false),
        (
            "all of selection*",
            serde_json::json!({"A": "a", "B": "b"}),
            true,
        ),
        ("all of selection*", serde_json::json!({"A": "a"}), false),
        (
            "1 of selection* and keywords1",
            serde_json::json!({"A": "a", "X": "k1"}),
            true,
        ),
        (
            "1 of selection* and not 1 of filter*",
            serde_json::json!({"A": "a", "C": "c"}),
            false,
        ),
        (
            "keywords1 and not filter1",
            serde_json::json!({"X": "k1"}),
            true,
        ),
        (
            "selection1 and (keywords1 or keywords2)",
            serde_json::json!({"A": "a", "X": "k2"}),
            true,
        ),
        (
            "selection1 and (keywords1 or keywords2)",
            serde_json::json!({"X": "k2"}),
            false,
        ),
        // Precedence: not binds tighter than and, and tighter than or.
        (
            "selection1 or selection2 and not filter1",
            serde_json::json!({"A": "a", "C": "c"}),
            true,
        ),
    ];
    for (cond, event, want) in cases {
        let s = rule(&format!("{base}    condition: {cond}\n")).unwrap();
        assert_eq!(matches(&s, event.clone()), *want, "{cond} on {event}");
    }
    // A list of conditions is OR-ed.
    let s = rule(&format!(
        "{base}    condition:\n        - selection1\n        - selection2\n"
    ))
    .unwrap();
    assert!(matches(&s, serde_json::json!({"B": "b"})));
}
