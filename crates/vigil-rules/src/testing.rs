//! Tests that come with rules: a rule file `name.yml` may have a sibling
//! `name.tests.yml` with sample events the rule must and must not match, and,
//! for correlations, timed sequences. The format is documented in
//! rules/README.md; `vigil rules test` runs them.

use crate::engine::{Engine, EngineConfig, Hit};
use crate::event::JsonEvent;
use crate::logsource::LogSource;
use crate::ruleset::RuleSet;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The suffix that marks a test file (and keeps it from loading as a rule).
pub use crate::ruleset::TEST_SUFFIX;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// `product/category`; defaults to the rule's own log source.
    #[serde(default)]
    logsource: Option<String>,
    #[serde(default, rename = "match")]
    matches: Vec<Map<String, Value>>,
    #[serde(default)]
    no_match: Vec<Map<String, Value>>,
    #[serde(default)]
    sequences: Vec<SequenceCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceCase {
    #[serde(default)]
    name: Option<String>,
    /// Events in order; a `_time` field (seconds) places each in time,
    /// otherwise they are one second apart.
    events: Vec<Map<String, Value>>,
    /// Whether the rule fires over the sequence.
    expect: bool,
}

/// One failed case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    pub test_file: PathBuf,
    pub rule_id: String,
    pub case: String,
    pub reason: String,
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: rule {}: {}: {}",
            self.test_file.display(),
            self.rule_id,
            self.case,
            self.reason
        )
    }
}

#[derive(Debug, Default)]
pub struct TestReport {
    pub passed: usize,
    pub failed: Vec<TestFailure>,
    /// Rules (ids) in the set that no test file covers.
    pub untested: Vec<String>,
}

/// Every `*.tests.yml` under `paths`.
pub fn find_test_files<P: AsRef<Path>>(paths: &[P]) -> Vec<PathBuf> {
    fn walk(p: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if depth > 32 {
            return;
        }
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), depth + 1, out);
                }
            }
        } else if p.to_string_lossy().ends_with(TEST_SUFFIX) {
            out.push(p.to_owned());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p.as_ref(), 0, &mut out);
    }
    out.sort();
    out
}

/// The rule file a test file belongs to.
pub fn rule_file_for(test_file: &Path) -> PathBuf {
    let s = test_file.to_string_lossy();
    PathBuf::from(format!("{}.yml", s.strip_suffix(TEST_SUFFIX).unwrap_or(&s)))
}

enum Target {
    Rule(usize),
    Correlation(usize),
}

fn time_of(ev: &Map<String, Value>, index: usize) -> i64 {
    let secs = ev
        .get("_time")
        .and_then(Value::as_f64)
        .unwrap_or(index as f64);
    (secs * 1e9) as i64
}

/// Runs every test file against `set` (which should hold the rules under test
/// and whatever they reference).
pub fn run_tests(set: &Arc<RuleSet>, test_files: &[PathBuf]) -> TestReport {
    let mut report = TestReport::default();
    let mut covered = std::collections::HashSet::new();
    for tf in test_files {
        let fail = |report: &mut TestReport, rule: &str, case: String, reason: String| {
            report.failed.push(TestFailure {
                test_file: tf.clone(),
                rule_id: rule.to_owned(),
                case,
                reason,
            })
        };
        let tests: TestFile = match std::fs::read_to_string(tf)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_saphyr::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(t) => t,
            Err(e) => {
                fail(
                    &mut report,
                    "?",
                    "file".into(),
                    format!("cannot read tests: {e}"),
                );
                continue;
            }
        };
        // The rule under test is the first document of the sibling rule file.
        let rule_file = rule_file_for(tf);
        let id = std::fs::read_to_string(&rule_file).ok().and_then(|t| {
            let docs: Vec<Value> = serde_saphyr::from_multiple(&t).ok()?;
            let d = docs.into_iter().find(|d| d.is_object())?;
            d.get("id")
                .or_else(|| d.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let Some(id) = id else {
            fail(
                &mut report,
                "?",
                "file".into(),
                format!("no rule with an id in {}", rule_file.display()),
            );
            continue;
        };
        let target = if let Some(i) = set.rules().iter().position(|r| r.id == id) {
            Target::Rule(i)
        } else if let Some(i) = set.correlations().iter().position(|c| c.id == id) {
            Target::Correlation(i)
        } else {
            fail(
                &mut report,
                &id,
                "file".into(),
                "the rule did not load (see `vigil rules check`)".into(),
            );
            continue;
        };
        covered.insert(id.clone());
        let source = match (&tests.logsource, &target) {
            (Some(ls), _) => LogSource::parse(ls),
            (None, Target::Rule(i)) => set.rules()[*i].logsource.clone(),
            (None, Target::Correlation(_)) => {
                fail(
                    &mut report,
                    &id,
                    "file".into(),
                    "correlation tests need `logsource: product/category`".into(),
                );
                continue;
            }
        };
        let singles = tests
            .matches
            .iter()
            .map(|e| (true, e))
            .chain(tests.no_match.iter().map(|e| (false, e)));
        let (mut m, mut nm) = (0, 0);
        for (expect, ev) in singles {
            let case = if expect {
                format!("match[{m}]")
            } else {
                format!("no_match[{nm}]")
            };
            *(if expect { &mut m } else { &mut nm }) += 1;
            let hit = match target {
                Target::Rule(i) => set
                    .matching_rules(&source, &JsonEvent(ev.clone()))
                    .contains(&i),
                Target::Correlation(_) => false,
            };
            if hit == expect {
                report.passed += 1;
            } else {
                let what = if expect { "did not match" } else { "matched" };
                fail(
                    &mut report,
                    &id,
                    case,
                    format!("{what} {}", Value::Object(ev.clone())),
                );
            }
        }
        for (n, seq) in tests.sequences.iter().enumerate() {
            let mut engine = Engine::new(Arc::clone(set), EngineConfig::default());
            let mut fired = false;
            for (k, ev) in seq.events.iter().enumerate() {
                let t = time_of(ev, k);
                let je = JsonEvent(ev.clone());
                match target {
                    Target::Rule(i) => fired |= set.matching_rules(&source, &je).contains(&i),
                    Target::Correlation(c) => {
                        fired |= engine
                            .process(&source, &je, t)
                            .contains(&Hit::Correlation(c))
                    }
                }
            }
            if let Target::Correlation(c) = target {
                fired |= engine.flush().contains(&Hit::Correlation(c));
            }
            let case = seq
                .name
                .clone()
                .unwrap_or_else(|| format!("sequences[{n}]"));
            if fired == seq.expect {
                report.passed += 1;
            } else {
                fail(
                    &mut report,
                    &id,
                    case,
                    if seq.expect {
                        "did not fire".into()
                    } else {
                        "fired".into()
                    },
                );
            }
        }
    }
    report.untested = set
        .rules()
        .iter()
        .map(|r| &r.id)
        .chain(set.correlations().iter().map(|c| &c.id))
        .filter(|id| !covered.contains(*id))
        .cloned()
        .collect();
    report
}
