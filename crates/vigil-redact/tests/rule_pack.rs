//! What redaction changes for Vigil's own rule pack. Every rule's test
//! events (rules/**/NAME.tests.yml) get a secret in their command lines
//! (`--password=…`, a URL with credentials, a bearer token), and the pack's
//! tests run twice: on those events as they are, and redacted as the sensor
//! redacts them. The verdicts must be the same, but for the rules listed
//! here on purpose: today, none.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use vigil_redact::Redactor;
use vigil_rules::RuleSet;
use vigil_rules::testing::{TEST_SUFFIX, find_test_files, run_tests};

/// Rules whose test events match differently once redacted (rule ids).
const CHANGED_BY_REDACTION: &[&str] = &[];

/// Secrets added to every command line.
const SECRETS: &str = " --password=Hunter2-xyz https://bob:pw-Hunter2@example.com/x -H 'Authorization: Bearer abcdefgh12345'";

fn visit(v: &mut serde_json::Value, r: Option<&Redactor>, changed: &mut u32) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if let (true, serde_json::Value::String(s)) = (k == "CommandLine", &mut *x) {
                    s.push_str(SECRETS);
                    if let Some(r) = r {
                        let (out, done) = r.text(s.as_bytes());
                        assert!(!done.is_empty());
                        *changed += 1;
                        *s = String::from_utf8_lossy(&out).into_owned();
                        assert!(!s.contains("Hunter2"), "{s}");
                    }
                } else {
                    visit(x, r, changed);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| visit(x, r, changed)),
        _ => {}
    }
}

fn copy(from: &Path, to: &Path, r: Option<&Redactor>, changed: &mut u32) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy(&src, &dst, r, changed);
        } else if src.to_string_lossy().ends_with(TEST_SUFFIX) {
            let text = std::fs::read_to_string(&src).unwrap();
            let mut v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            visit(&mut v, r, changed);
            // JSON is YAML: the harness reads it as it reads the original.
            std::fs::write(&dst, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The rules whose tests fail on the pack's events with secrets added
/// (redacted or not).
fn failing(redactor: Option<&Redactor>, changed: &mut u32) -> (Vec<String>, usize) {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let dir = tempfile::tempdir().unwrap();
    copy(&rules, dir.path(), redactor, changed);
    let (set, report) = RuleSet::load_paths(&[dir.path()]);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let result = run_tests(&Arc::new(set), &find_test_files(&[dir.path()]));
    let mut failed: Vec<String> = result.failed.iter().map(|f| f.rule_id.clone()).collect();
    failed.sort_unstable();
    failed.dedup();
    (failed, result.passed)
}

#[test]
fn redaction_changes_only_the_listed_rules_of_the_pack() {
    let mut changed = 0;
    let (plain, ran) = failing(None, &mut changed);
    let (redacted, _) = failing(Some(&Redactor::default()), &mut changed);
    assert!(changed > 50, "{changed} command lines redacted");
    assert!(ran > 100, "{ran} cases ran");
    let differ: Vec<&String> = plain
        .iter()
        .filter(|r| !redacted.contains(r))
        .chain(redacted.iter().filter(|r| !plain.contains(r)))
        .collect();
    assert_eq!(
        differ, CHANGED_BY_REDACTION,
        "verdicts that redaction changes"
    );
    eprintln!(
        "{changed} command lines redacted; {} rules already differ with the secrets appended, the same with and without redaction",
        plain.len()
    );
}
