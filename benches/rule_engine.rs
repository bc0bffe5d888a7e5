//! Single-thread rule evaluation throughput with the SigmaHQ corpus loaded,
//! over a realistic mix (about 1% malicious), and the memory the compiled set
//! takes. `cargo bench --bench rule_engine` (corpus from VIGIL_SIGMA_CORPUS,
//! default ../shared/sigma). One part alone: `-- windows`, `-- windows-uncached`,
//! `-- linux`, `-- whole`. Knobs: EVENTS (event count), PASSES (repeat the
//! timed loop, for profilers), PASS_TIMES (print each pass), PROFILE_RULES
//! (where the time goes: candidates, costly rules, each field's search),
//! MIX=fresh|recurring (Windows: only the events whose command line never
//! recurs, or only the others), DISTINCT=k (only k recurring events, repeated).

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;
use support::events;
use vigil_rules::{FlatEvent, LogSource, RuleSet};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn rule_files(corpus: &Path, product: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for top in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        let mut stack = vec![corpus.join(top)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yml")
                    && std::fs::read_to_string(&p).is_ok_and(|t| {
                        t.contains("category: process_creation")
                            && t.contains(&format!("product: {product}"))
                    })
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// `n` generated events in the flat form, laid out one after another in
/// memory as a stream read from a buffer is: generated as JSON lines into one
/// buffer first (no heap of freed JSON maps is left behind to slow the
/// allocator during the timed loop, nor scattered between the events).
fn flat_events(
    n: usize,
    seed: u64,
    generator: fn(&mut events::Rng) -> serde_json::Value,
) -> Vec<FlatEvent> {
    let mut r = events::Rng::new(seed);
    let mut lines = String::new();
    for _ in 0..n {
        lines.push_str(&generator(&mut r).to_string());
        lines.push('\n');
    }
    let decoded: Vec<FlatEvent> = lines
        .lines()
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        })
        .map(|m| FlatEvent::from_json(&m))
        .collect();
    decoded
}

/// Events evaluated per batch (see the timed loop in `run`): about 180 KB,
/// well inside the L2 cache.
const CHUNK: usize = 256;

/// The timed loop, apart so profilers can isolate it
/// (`valgrind --tool=callgrind --toggle-collect=rule_engine::timed_pass`).
#[inline(never)]
fn timed_pass(compiled: &vigil_rules::SourceRules<'_>, evs: &[FlatEvent]) -> usize {
    evs.iter()
        .filter(|e| !compiled.matching_rules(*e).is_empty())
        .count()
}

fn run(
    corpus: &Path,
    product: &str,
    generator: fn(&mut events::Rng) -> serde_json::Value,
    n: usize,
) {
    let files = rule_files(corpus, product);
    // Warm-up events of another seed: a sensor runs continuously, so the
    // figure is for a warm engine (regex lazy DFAs built, caches filled).
    let warm = flat_events(20_000, 7, generator);
    let rss0 = rss_kib();
    let t = Instant::now();
    let (set, report) = RuleSet::load_paths(&files);
    let load = t.elapsed();
    let source = LogSource::new(product, "process_creation");
    // Build the per-source index before timing (sensors do this once at load).
    for e in &warm {
        let _ = set.matching_rules(&source, e);
    }
    let rss1 = rss_kib();
    if std::env::var_os("PROFILE_RULES").is_some() {
        let (applicable, always) = set.prepare(&source);
        for i in set.unconditional_rules(&source) {
            println!("  always: {}", set.rules()[i].title);
        }
        let mut per_rule = vec![0usize; set.len()];
        let mut cands = 0;
        for e in &warm {
            for i in set.candidates(&source, e) {
                per_rule[i] += 1;
                cands += 1;
            }
        }
        println!(
            "{applicable} rules apply, {always} evaluated always, {:.1} candidates per event",
            cands as f64 / warm.len() as f64
        );
        let mut often: Vec<(usize, usize)> = per_rule
            .iter()
            .copied()
            .enumerate()
            .filter(|x| x.1 > 0)
            .collect();
        often.sort_by_key(|x| std::cmp::Reverse(x.1));
        for (i, n) in often.iter().take(25) {
            let t = Instant::now();
            for e in &warm {
                let _ = set.rules()[*i].matches(e);
            }
            let ns = t.elapsed().as_secs_f64() * 1e9 / warm.len() as f64;
            println!(
                "  candidate in {:>5.1}% ({ns:>5.0} ns/eval): {}",
                *n as f64 * 100.0 / warm.len() as f64,
                set.rules()[*i].title
            );
        }
        let refs: Vec<&dyn vigil_rules::Event> =
            warm.iter().map(|e| e as &dyn vigil_rules::Event).collect();
        let mut prof = set.prefilter_profile(&source, &refs);
        prof.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (f, ns) in prof.iter().take(20) {
            println!("  scan {ns:>8.0} ns  {f}");
        }
        let t = Instant::now();
        for _ in 0..20 {
            for e in &warm {
                let _ = set.candidates(&source, e);
            }
        }
        println!(
            "prefilter alone: {:.0} ns/event",
            t.elapsed().as_secs_f64() * 1e9 / (20.0 * warm.len() as f64)
        );
        // Which rules cost the most, one by one (for engine work, not a figure).
        let sample = flat_events(300, 3, generator);
        let mut costs: Vec<(f64, String)> = set
            .rules()
            .iter()
            .map(|r| {
                let t = Instant::now();
                for e in &sample {
                    let _ = r.matches(e);
                }
                (
                    t.elapsed().as_secs_f64() * 1e9 / sample.len() as f64,
                    r.title.clone(),
                )
            })
            .collect();
        costs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let total: f64 = costs.iter().map(|c| c.0).sum();
        println!("total {total:.0} ns/event over all rules");
        for (ns, t) in costs.iter().take(15) {
            println!("{ns:>10.0} ns  {t}");
        }
    }
    // Decoded before timing starts, into the flat form the CLI evaluates.
    let mut evs = flat_events(n, 42, generator);
    // MIX=fresh keeps only events whose command line never recurs (a GUID
    // or a random id in it), MIX=recurring only the others (engine work: the
    // two costs apart).
    let fresh = |e: &FlatEvent| {
        vigil_rules::Event::field(e, "CommandLine").is_some_and(|c| {
            let c = c.as_text();
            c.contains("--type=renderer") || c.contains('{')
        })
    };
    // DISTINCT=k: only k recurring events, repeated (the cached path alone).
    if let Some(k) = std::env::var("DISTINCT").ok().and_then(|k| k.parse().ok()) {
        let base: Vec<FlatEvent> = evs.iter().filter(|e| !fresh(e)).take(k).cloned().collect();
        if !base.is_empty() {
            evs = (0..n).map(|i| base[i % base.len()].clone()).collect();
        }
    }
    match std::env::var("MIX").as_deref() {
        Ok("fresh") => evs.retain(fresh),
        Ok("recurring") => evs.retain(|e| !fresh(e)),
        _ => {}
    }
    let n = evs.len();
    // PASSES > 1 repeats the loop (for profilers, so evaluation dominates the samples).
    let passes: usize = std::env::var("PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if std::env::var_os("PROFILE_RULES").is_some() {
        // The floor: reading every field of every event once, lower-cased.
        let mut buf: Vec<u8> = Vec::new();
        let mut bytes = 0usize;
        let t = Instant::now();
        for e in &evs {
            vigil_rules::Event::visit_fields(e, &mut |_, v| {
                if let vigil_rules::FieldValue::Str(s) = v {
                    buf.clear();
                    buf.extend_from_slice(s.as_bytes());
                    buf.make_ascii_lowercase();
                    bytes += buf.len();
                }
            });
        }
        println!(
            "reading the events alone: {:.0} ns/event ({} bytes/event)",
            t.elapsed().as_secs_f64() * 1e9 / evs.len() as f64,
            bytes / evs.len().max(1)
        );
    }
    let mut matched_events = 0usize;
    let compiled = set.for_source(&source);
    // A sensor evaluates an event right after decoding it, while it is in
    // cache; 200,000 decoded events (about 140 MB) are not. So each batch of
    // CHUNK events is copied afresh (untimed, as decoding would be) and then
    // evaluated (timed): the figure is evaluation, not memory latency.
    let mut busy = std::time::Duration::ZERO;
    let mut batch: Vec<FlatEvent> = Vec::with_capacity(CHUNK);
    for _pass in 0..passes {
        let mut pass_busy = std::time::Duration::ZERO;
        matched_events = 0;
        for chunk in evs.chunks(CHUNK) {
            batch.clear();
            batch.extend(chunk.iter().cloned());
            let t = Instant::now();
            matched_events += timed_pass(&compiled, &batch);
            pass_busy += t.elapsed();
        }
        busy += pass_busy;
        if std::env::var_os("PASS_TIMES").is_some() {
            println!(
                "pass {_pass}: {:.0} events/s",
                evs.len() as f64 / pass_busy.as_secs_f64()
            );
        }
    }
    let secs = busy.as_secs_f64() / passes as f64;
    let cache = RuleSet::cache_stats();
    println!(
        "{product}/process_creation: {} rules ({report}), load {:.2} s, compiled set +{} MiB RSS; {} events, {:.2}% matched, field values found in cache {:.1}%; {:.0} events/s",
        set.len(),
        load.as_secs_f64(),
        rss1.saturating_sub(rss0) / 1024,
        n,
        matched_events as f64 * 100.0 / n as f64,
        cache.hits as f64 * 100.0 / cache.lookups.max(1) as f64,
        n as f64 / secs
    );
    // Engine tuning: where the candidates' verdicts came from (warm-up included).
    let candidates = (cache.remembered + cache.evaluated_keyed + cache.evaluated_unkeyed).max(1);
    println!(
        "  candidate verdicts: {:.1}% remembered, {:.1}% evaluated and remembered, {:.1}% evaluated (not rememberable)",
        cache.remembered as f64 * 100.0 / candidates as f64,
        cache.evaluated_keyed as f64 * 100.0 / candidates as f64,
        cache.evaluated_unkeyed as f64 * 100.0 / candidates as f64,
    );
}

fn main() {
    let corpus = std::env::var_os("VIGIL_SIGMA_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/sigma"));
    if !corpus.is_dir() {
        println!(
            "rule_engine: skipped: no Sigma corpus at {} (set VIGIL_SIGMA_CORPUS)",
            corpus.display()
        );
        return;
    }
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // Each measurement runs in its own process, so RSS figures do not mix.
    match std::env::args().nth(1).as_deref() {
        Some("windows") => run(&corpus, "windows", events::windows_event, n),
        Some("windows-uncached") => {
            // The same without the field value caches: every value scanned.
            RuleSet::use_value_cache(false);
            run(&corpus, "windows", events::windows_event, n)
        }
        Some("linux") => run(&corpus, "linux", events::linux_event, n),
        Some("whole") => {
            let rss0 = rss_kib();
            let t = Instant::now();
            let (whole, report) = RuleSet::load_paths(&[&corpus]);
            whole.prepare(&LogSource::new("windows", "process_creation"));
            whole.prepare(&LogSource::new("linux", "process_creation"));
            println!(
                "whole corpus: {report} in {:.2} s, compiled set +{} MiB RSS",
                t.elapsed().as_secs_f64(),
                rss_kib().saturating_sub(rss0) / 1024
            );
            drop(whole);
            // The same rules from a bundle (what a server ships to sensors).
            let (b, _) = RuleSet::load_paths_for_bundle(&[&corpus]);
            let json = b.to_bundle().expect("bundle");
            drop(b);
            let t = Instant::now();
            let (from_bundle, report) = RuleSet::from_bundle(Path::new("corpus.vrb"), &json);
            println!(
                "whole corpus from a {} MiB bundle: {report} in {:.2} s",
                json.len() >> 20,
                t.elapsed().as_secs_f64()
            );
            drop(from_bundle);
        }
        _ => {
            let exe = std::env::current_exe().expect("own path");
            for part in ["windows", "windows-uncached", "linux", "whole"] {
                let status = std::process::Command::new(&exe)
                    .arg(part)
                    .status()
                    .expect("runs");
                assert!(status.success(), "{part} failed");
            }
        }
    }
}
