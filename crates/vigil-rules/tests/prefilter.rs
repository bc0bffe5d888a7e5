//! The compiled path (literal prefilter, literal sets, shared field context)
//! must decide exactly what evaluating every rule one by one decides.
//! Property tests over generated rules and events, and the real corpus over a
//! generated event mix.

use proptest::prelude::*;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use vigil_rules::{Event, FieldValue, FlatEvent, JsonEvent, LoadReport, LogSource, RuleSet};

/// An event that can only be asked for fields by name (as the sensor's
/// records are): the engine's lookup path rather than its visiting path.
struct LookupOnly(JsonEvent);

impl Event for LookupOnly {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.0.field(name)
    }
    fn values(&self) -> Vec<Cow<'_, str>> {
        self.0.values()
    }
}

/// An event that lists each field twice (the `Event` contract allows it, as
/// long as each listing gives what `field` returns).
struct Twice(JsonEvent);

impl Event for Twice {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        self.0.field(name)
    }
    fn values(&self) -> Vec<Cow<'_, str>> {
        self.0.values()
    }
    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        for _ in 0..2 {
            self.0.visit_fields(f);
        }
        true
    }
}

/// What the compiled path decides for `e`, through every event form and
/// twice (the second time from the value cache), must be what evaluating
/// each rule one by one decides.
fn assert_all_forms_agree(
    set: &RuleSet,
    src: &LogSource,
    e: serde_json::Map<String, serde_json::Value>,
) {
    let flat = FlatEvent::from_json(&e);
    let json = JsonEvent(e);
    let want = set.matching_rules_unindexed(src, &json);
    for round in 0..2 {
        assert_eq!(
            set.matching_rules(src, &json),
            want,
            "json, round {round}: {:?}",
            json.0
        );
        assert_eq!(
            set.matching_rules(src, &flat),
            want,
            "flat, round {round}: {:?}",
            json.0
        );
    }
    let twice = Twice(json);
    assert_eq!(
        set.matching_rules(src, &twice),
        want,
        "each field twice: {:?}",
        twice.0.0
    );
    let lookup = LookupOnly(twice.0);
    assert_eq!(
        set.matching_rules(src, &lookup),
        want,
        "by name: {:?}",
        lookup.0.0
    );
}

const FIELDS: &[&str] = &["Image", "CommandLine", "User", "Pid"];
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
            if f == "Pid" {
                // Keywords (keyless values), searched in every value.
                let vals: Vec<String> = vals.iter().map(|v| format!("'{v}'")).collect();
                s.push_str(&format!("    '{m}': [{}]\n", vals.join(", ")));
                continue;
            }
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
            .map(|(k, v)| {
                // Numbers and booleans too: rules compare their text.
                let v = match (k, v.len()) {
                    ("Pid", n) => serde_json::Value::from(n as i64),
                    (_, 7) => serde_json::Value::Bool(true),
                    _ => serde_json::Value::String(v),
                };
                (k.to_owned(), v)
            })
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
            assert_all_forms_agree(&set, &src, e);
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
    // Emerging threats bring keyword rules (searched in every value).
    let (set, _) = RuleSet::load_paths(&[
        corpus.join("rules/windows/process_creation"),
        corpus.join("rules/linux/process_creation"),
        // Keyword rules of every Linux event (wildcards among their keywords).
        corpus.join("rules/linux/builtin"),
        corpus.join("rules-emerging-threats"),
        corpus.join("rules-threat-hunting/windows/process_creation"),
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
            matched += usize::from(!set.matching_rules(&src, &JsonEvent(e.clone())).is_empty());
            assert_all_forms_agree(&set, &src, e);
        }
        assert!(matched > 0, "the mix should trigger some rules");
    }
}

/// Command lines that begin alike take the literals of the one searched
/// before them, with the clause bits made for those literals: when the
/// literals taken change, the bits must change with them, or a rule needing
/// a literal taken now but not before would be missed.
#[test]
fn literals_taken_from_the_last_command_line_bring_their_own_clause_bits() {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    for (i, lit) in ["alpha", "omega"].into_iter().enumerate() {
        set.load_str(
            Path::new(&format!("r{i}.yml")),
            &format!(
                "title: {lit}\nlogsource: {{product: p, category: c}}\ndetection:\n  s: {{CommandLine|contains: ' {lit} '}}\n  condition: s\n"
            ),
            &mut report,
        );
    }
    // Enough literals for the gram search, which takes from the last value.
    let fillers: Vec<String> = (0..800)
        .map(|i| format!("'filler-{i:04}-literal'"))
        .collect();
    set.load_str(
        Path::new("fillers.yml"),
        &format!(
            "title: fillers\nlogsource: {{product: p, category: c}}\ndetection:\n  s: {{CommandLine|contains: [{}]}}\n  condition: s\n",
            fillers.join(", ")
        ),
        &mut report,
    );
    assert!(report.rejected.is_empty(), "{report}");
    let src = LogSource::new("p", "c");
    // One shape, 44 bytes alike, then the literal, then a tail never seen.
    let start = "C:\\Windows\\system32\\cmd.exe /c start /b run";
    for (i, lit) in ["alpha", "alpha", "omega", "omega", "alpha"]
        .into_iter()
        .enumerate()
    {
        let cmd = format!("{start} {lit} {}", format!("{i}").repeat(30));
        let mut e = serde_json::Map::new();
        e.insert("CommandLine".into(), cmd.clone().into());
        let want = vec![usize::from(lit == "omega")];
        assert_eq!(
            set.matching_rules(&src, &JsonEvent(e.clone())),
            want,
            "{cmd}"
        );
        assert_all_forms_agree(&set, &src, e);
    }
}

/// A set of the one rule whose `detection:` block is `detection` (log source p/c).
fn one_rule(detection: &str) -> RuleSet {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    set.load_str(
        Path::new("r.yml"),
        &format!("title: t\nlogsource: {{product: p, category: c}}\ndetection:\n{detection}"),
        &mut report,
    );
    assert_eq!(report.rejected.len(), 0, "{report}");
    set
}

/// More distinct values than a field's cache holds: values take each other's
/// slots, and a slot must never answer for a value it no longer holds. Each
/// value comes twice (so it is kept), and comes back after 20,000 others
/// were kept (more than the cache's 16,384 slots: its slot has most likely
/// changed hands).
#[test]
fn value_cache_replacement_keeps_answers_exact() {
    let set = one_rule(
        "  s:\n    CommandLine|contains: ['evil', 'x7']\n  k: ['needle']\n  condition: s or k\n",
    );
    let src = LogSource::new("p", "c");
    let check = |i: u32| {
        let cmd = match i % 7 {
            0 => format!("run evil {i}"),
            1 => format!("value {i} with needle"),
            _ => format!("benign {i}"),
        };
        let serde_json::Value::Object(m) =
            serde_json::json!({ "CommandLine": cmd, "Other": format!("o{}", i % 5) })
        else {
            unreachable!()
        };
        let want = i % 7 < 2 || cmd.contains("x7");
        let got = set.matching_rules(&src, &FlatEvent::from_json(&m));
        assert_eq!(!got.is_empty(), want, "{cmd}");
    };
    for i in 0..40_000u32 {
        check(i);
        check(i);
        if let Some(old) = i.checked_sub(20_000) {
            check(old);
        }
    }
}

/// Remembered verdicts of rules over several fields are kept in small
/// buckets chosen by the newest value the rules read: more candidates than a
/// bucket holds, over values that recur with changing partners (the user
/// decides the verdict, not the candidacy), push each other out, and every
/// verdict must stay exact.
#[test]
fn more_candidates_than_a_verdict_bucket_holds_stay_exact() {
    let mut set = RuleSet::new();
    let mut report = LoadReport::default();
    for r in 0..20 {
        set.load_str(
            Path::new(&format!("r{r}.yml")),
            &format!(
                "title: r{r}\nlogsource: {{product: p, category: c}}\ndetection:\n  \
                 a: {{CommandLine|contains: 'run'}}\n  b: {{Image|endswith: 'x{}.exe'}}\n  \
                 f: {{User: 'u{}'}}\n  condition: a and b and not f\n",
                r % 5,
                r % 3
            ),
            &mut report,
        );
    }
    assert!(report.rejected.is_empty(), "{report}");
    let src = LogSource::new("p", "c");
    for round in 0..6u32 {
        for i in 0..300u32 {
            let serde_json::Value::Object(m) = serde_json::json!({
                "CommandLine": format!("run job {}", i % 40),
                "Image": format!("C:\\x{}.exe", (i + round) % 7),
                "User": format!("u{}", (i * 7 + round) % 4),
            }) else {
                unreachable!()
            };
            let flat = FlatEvent::from_json(&m);
            assert_eq!(
                set.matching_rules(&src, &flat),
                set.matching_rules_unindexed(&src, &JsonEvent(m.clone())),
                "round {round}, {m:?}"
            );
        }
    }
}

/// Lists `Image` twice with different values (`field` answers the second):
/// outside the `Event` contract, and it must not teach the value cache a
/// wrong answer for the first value.
struct Inconsistent;

impl Event for Inconsistent {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        (name == "Image").then_some(FieldValue::Str(Cow::Borrowed("c:\\evil.exe")))
    }
    fn values(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed("c:\\evil.exe")]
    }
    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        f("Image", FieldValue::Str(Cow::Borrowed("c:\\benign.exe")));
        f("Image", FieldValue::Str(Cow::Borrowed("c:\\evil.exe")));
        true
    }
}

#[test]
fn a_field_listed_twice_does_not_poison_cached_verdicts() {
    let set = one_rule("  s:\n    Image|endswith: '\\evil.exe'\n  condition: s\n");
    let src = LogSource::new("p", "c");
    let benign = || {
        let mut e = FlatEvent::new();
        e.push("Image", FieldValue::Str(Cow::Borrowed("c:\\benign.exe")));
        e
    };
    // Seen once (not kept yet): the inconsistent event is the one to keep it.
    assert!(set.matching_rules(&src, &benign()).is_empty());
    assert_eq!(set.matching_rules(&src, &Inconsistent), vec![0]);
    for _ in 0..3 {
        assert!(set.matching_rules(&src, &benign()).is_empty());
    }
}

/// Keyword lists with a wildcard, a regex or `cased` among their values
/// cannot be decided by literal bits alone, but every value they match
/// still contains a literal: such a rule is a candidate only for events
/// where some value (of any field) holds one, and then decides exactly as
/// evaluated alone, wherever the value is.
#[test]
fn keyword_rules_with_wildcards_are_candidates_only_when_a_value_holds_a_literal() {
    let src = LogSource::new("p", "c");
    for detection in [
        // A wildcard among plain keywords (SigmaHQ's lnx_shell_susp_commands).
        "  keywords:\n    - 'wget * - http* | sh'\n    - '*; chmod +x /tmp/*'\n    - 'history -c'\n  condition: keywords\n",
        // Every keyword required, one a wildcard.
        "  keywords:\n    '|all':\n      - 'wget * - http'\n      - 'history -c'\n  condition: keywords\n",
        // A regex keyword.
        "  keywords:\n    '|re': ['wget .* - http', '(?i)HISTORY -C']\n  condition: keywords\n",
        // Cased keywords.
        "  keywords:\n    '|cased': ['wget * - http', 'History -c']\n  condition: keywords\n",
    ] {
        let set = one_rule(detection);
        let quiet =
            serde_json::json!({"Image": "/usr/bin/true", "CommandLine": "/bin/true x", "Pid": 4});
        let serde_json::Value::Object(quiet) = quiet else {
            unreachable!()
        };
        assert!(
            set.candidates(&src, &JsonEvent(quiet.clone())).is_empty(),
            "an event without any of the literals is no candidate: {detection}"
        );
        assert_all_forms_agree(&set, &src, quiet);
        let mut matched = 0;
        for (field, value) in [
            ("CommandLine", "wget -q - http://x | sh"),
            ("CommandLine", "WGET -q - HTTP://x | SH; history -c"),
            (
                "ParentCommandLine",
                "sh -c 'wget a - http://b | sh; history -c'",
            ),
            ("User", "history -c"),
            ("CommandLine", "a;  chmod +x /tmp/y"),
            ("CommandLine", "History -c; wget x - httpd"),
        ] {
            let e = serde_json::json!({"Image": "/usr/bin/x", field: value, "Pid": 7});
            let serde_json::Value::Object(e) = e else {
                unreachable!()
            };
            matched += set.matching_rules(&src, &JsonEvent(e.clone())).len();
            assert_all_forms_agree(&set, &src, e);
        }
        assert!(matched > 0, "some events match: {detection}");
    }
}
