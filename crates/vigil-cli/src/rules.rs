//! `vigil rules ...`: tools for rule authors.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use vigil_evaluate::NotFed;
use vigil_rules::{Engine, EngineConfig, FlatEvent, Hit, LogSource, RuleSet};

/// Longest event line read (bytes); longer lines are reported and skipped.
const MAX_LINE: usize = 1 << 20;

fn load(paths: &[PathBuf]) -> (Arc<RuleSet>, vigil_rules::LoadReport) {
    let (set, report) = RuleSet::load_paths(paths);
    for r in &report.rejected {
        eprintln!("rejected: {r}");
    }
    (Arc::new(set), report)
}

/// Validates rules and says how many of them the Linux sensor can feed;
/// returns whether all loaded (rules it cannot feed are not an error).
pub fn check(paths: &[PathBuf], as_json: bool) -> Result<bool> {
    let (set, report) = RuleSet::load_paths(paths);
    let coverage = vigil_evaluate::coverage(&set);
    if as_json {
        let rejected: Vec<_> = report
            .rejected
            .iter()
            .map(|r| json!({"path": r.path.display().to_string(), "line": r.line, "id": r.id, "reason": r.error.to_string()}))
            .collect();
        out!(
            "{}",
            json!({"loaded": report.loaded, "rejected": rejected, "coverage": coverage_json(&coverage)})
        );
    } else {
        for r in &report.rejected {
            out!("{r}");
        }
        out!("{report}");
        out!("{coverage}");
    }
    Ok(report.rejected.is_empty())
}

fn coverage_json(c: &vigil_evaluate::Coverage) -> Value {
    let reasons: Vec<Value> = c
        .reasons
        .iter()
        .map(|(reason, n)| {
            let mut r = match reason {
                NotFed::LogSource(ls) => json!({"logsource": ls}),
                NotFed::Field { source, field } => {
                    json!({"logsource": source.name(), "field": field})
                }
            };
            r["rules"] = json!(n);
            r["reason"] = json!(reason.to_string());
            r
        })
        .collect();
    json!({"rules": c.rules, "fed": c.fed, "not_fed": c.not_fed, "reasons": reasons})
}

/// Writes a bundle of every rule that loads; returns whether all did.
pub fn bundle(paths: &[PathBuf], output: &Path) -> Result<bool> {
    let (set, report) = RuleSet::load_paths_for_bundle(paths);
    for r in &report.rejected {
        eprintln!("rejected (left out of the bundle): {r}");
    }
    let json = set.to_bundle().context("the rule set kept no sources")?;
    let tmp = output.with_extension("vrb.tmp");
    std::fs::write(&tmp, json.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing {}", output.display()))?;
    out!("{report}; bundle written to {}", output.display());
    Ok(report.rejected.is_empty())
}

/// One input event: where it came from, when, and its fields.
struct Input {
    line: usize,
    source: LogSource,
    time_ns: i64,
    /// Decoded once into the engine's flat form (one buffer per event).
    event: FlatEvent,
}

const TIME_FIELDS: &[&str] = &["@timestamp", "timestamp", "UtcTime", "EventTime", "time"];

fn parse_time(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            // Seconds, milliseconds or nanoseconds since the epoch, by magnitude.
            Some(if x < 1e11 {
                x * 1e9
            } else if x < 1e14 {
                x * 1e6
            } else {
                x
            } as i64)
        }
        Value::String(s) => {
            use time::format_description::well_known::Rfc3339;
            if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
                return i64::try_from(t.unix_timestamp_nanos()).ok();
            }
            // "2024-01-02 03:04:05[.fff]" (Sysmon's UtcTime), read as UTC.
            let iso = format!("{}Z", s.trim().replacen(' ', "T", 1));
            time::OffsetDateTime::parse(&iso, &Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
        }
        _ => None,
    }
}

/// Top-level keys of the sensor's JSON lines that carry no event
/// (see `vigil_evaluate::to_json_lines`).
const NOT_EVENTS: &[&str] = &["vigil", "detection", "health", "host"];

/// Reads a JSONL file. Without `flat`, each line is Vigil's event form:
/// `{"logsource": {"product": …, "category": …}, "time": …, "event": {…}}`
/// (other top-level keys, such as the sensor's `vigil`, are ignored);
/// with it, a flat object of Sigma fields under the given log source.
fn read_events(path: &Path, flat: Option<&LogSource>) -> Result<Vec<Input>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (line, text) in std::io::BufReader::new(f).lines().enumerate() {
        let text =
            text.with_context(|| format!("{}:{}: not UTF-8 text", path.display(), line + 1))?;
        if text.trim().is_empty() {
            continue;
        }
        if text.len() > MAX_LINE {
            eprintln!(
                "{}:{}: line longer than {MAX_LINE} bytes, skipped",
                path.display(),
                line + 1
            );
            continue;
        }
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}:{}: not JSON ({e}), skipped", path.display(), line + 1);
                continue;
            }
        };
        let Value::Object(obj) = v else {
            eprintln!(
                "{}:{}: not a JSON object, skipped",
                path.display(),
                line + 1
            );
            continue;
        };
        let (source, time, fields) = match flat {
            Some(src) => {
                let t = TIME_FIELDS
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(parse_time));
                (src.clone(), t, obj)
            }
            None => {
                let ls = obj.get("logsource").and_then(Value::as_object);
                let get = |k: &str| {
                    ls.and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase)
                };
                let source = LogSource {
                    product: get("product"),
                    category: get("category"),
                    service: get("service"),
                };
                let t = obj.get("time").and_then(parse_time);
                match obj.get("event") {
                    Some(Value::Object(e)) => (source, t, e.clone()),
                    // The sensor's lines that are not events (a process
                    // exit, a detection, health, host): nothing to match.
                    None if NOT_EVENTS.iter().any(|k| obj.contains_key(*k)) => continue,
                    _ => {
                        eprintln!(
                            "{}:{}: expected {{\"logsource\": …, \"event\": {{…}}}} (or pass --logsource for flat events), skipped",
                            path.display(),
                            line + 1
                        );
                        continue;
                    }
                }
            }
        };
        // Without a timestamp, events are one second apart in file order.
        let time_ns = time.unwrap_or((line as i64).saturating_mul(1_000_000_000));
        out.push(Input {
            line,
            source,
            time_ns,
            event: FlatEvent::from_json(&fields),
        });
    }
    Ok(out)
}

fn hit_json(set: &RuleSet, line: usize, h: Hit) -> Value {
    let (id, title) = match h {
        Hit::Rule(i) => (&set.rules()[i].id, &set.rules()[i].title),
        Hit::Correlation(i) => (&set.correlations()[i].id, &set.correlations()[i].title),
    };
    json!({"event": line, "rule": id, "title": title})
}

pub fn matches(paths: &[PathBuf], events: &Path, logsource: Option<&str>) -> Result<()> {
    let (set, _) = load(paths);
    let flat = logsource.map(LogSource::parse);
    let inputs = read_events(events, flat.as_ref())?;
    let mut engine = Engine::new(Arc::clone(&set), EngineConfig::default());
    let mut last = 0;
    for input in &inputs {
        for h in engine.process(&input.source, &input.event, input.time_ns) {
            out!("{}", hit_json(&set, input.line, h));
        }
        last = input.line;
    }
    // Windows still open at the end of the input are judged now.
    for h in engine.flush() {
        out!("{}", hit_json(&set, last, h));
    }
    if engine.evictions() > 0 {
        eprintln!("correlation state evictions: {}", engine.evictions());
    }
    Ok(())
}

pub fn test(paths: &[PathBuf]) -> Result<bool> {
    let (set, report) = load(paths);
    let files = vigil_rules::testing::find_test_files(paths);
    let result = vigil_rules::testing::run_tests(&set, &files);
    for f in &result.failed {
        out!("FAIL {f}");
    }
    for id in &result.untested {
        eprintln!("untested: rule {id} has no tests file");
    }
    out!("{} passed, {} failed", result.passed, result.failed.len());
    Ok(result.failed.is_empty() && report.rejected.is_empty())
}

pub fn bench(paths: &[PathBuf], events: &Path, logsource: Option<&str>) -> Result<()> {
    let t = Instant::now();
    let (set, report) = load(paths);
    let flat = logsource.map(LogSource::parse);
    let inputs = read_events(events, flat.as_ref())?;
    anyhow::ensure!(!inputs.is_empty(), "no events in {}", events.display());
    let mut sources: Vec<&LogSource> = inputs.iter().map(|i| &i.source).collect();
    let mut seen = std::collections::HashSet::new();
    sources.retain(|s| seen.insert(*s));
    let compiled: Vec<_> = sources.iter().map(|s| set.for_source(s)).collect();
    let which: Vec<usize> = inputs
        .iter()
        .map(|i| sources.iter().position(|s| **s == i.source).unwrap_or(0))
        .collect();
    out!("{report} in {:.3} s", t.elapsed().as_secs_f64());
    // Single thread, evaluation only; repeat until a second has passed.
    let mut n = 0usize;
    let mut matched = 0usize;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < 1.0 {
        for (i, &w) in inputs.iter().zip(&which) {
            matched += usize::from(!compiled[w].matching_rules(&i.event).is_empty());
        }
        n += inputs.len();
    }
    let secs = t.elapsed().as_secs_f64();
    let cache = RuleSet::cache_stats();
    out!(
        "{} events, {:.2}% matched, {:.0}% of field values found in the value cache",
        n,
        matched as f64 * 100.0 / n as f64,
        cache.hits as f64 * 100.0 / cache.lookups.max(1) as f64
    );
    out!("{:.0} events/s", n as f64 / secs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_several_forms() {
        assert_eq!(
            parse_time(&json!(1_700_000_000)),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time(&json!(1_700_000_000_000i64)),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time(&json!("1970-01-01T00:00:01Z")),
            Some(1_000_000_000)
        );
        assert_eq!(
            parse_time(&json!("1970-01-01 00:00:02.500")),
            Some(2_500_000_000)
        );
        assert_eq!(parse_time(&json!("yesterday")), None);
    }
}
