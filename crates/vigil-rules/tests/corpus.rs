//! The SigmaHQ corpus as real users load it. Read from `VIGIL_SIGMA_CORPUS`
//! (default `../shared/sigma` from the workspace root); skipped, with the
//! reason printed, when absent. Never copied into this repository.

use std::path::PathBuf;
use vigil_rules::RuleSet;

fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("VIGIL_SIGMA_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sigma"));
    p.is_dir().then_some(p)
}

/// The categories the acceptance criterion names.
fn in_scope(category: Option<&str>) -> bool {
    matches!(category, Some(c) if c == "process_creation" || c.starts_with("file_") || c.starts_with("registry_")
        || c == "network_connection" || c == "dns_query" || c == "image_load")
}

#[test]
fn loads_at_least_99_5_percent_of_the_endpoint_categories() {
    let Some(dir) = corpus() else {
        eprintln!("SKIPPED: Sigma corpus not found (set VIGIL_SIGMA_CORPUS)");
        return;
    };
    let (set, report) = RuleSet::load_paths(&[&dir]);
    assert!(set.len() > 3000, "corpus looks incomplete: {report}");
    // Every rejection names a concrete reason, a file and a line.
    for r in &report.rejected {
        assert!(!r.error.to_string().is_empty() && r.line >= 1, "{r}");
    }
    let loaded = set
        .rules()
        .iter()
        .filter(|r| in_scope(r.logsource.category.as_deref()))
        .count();
    // Rejected rules in scope: read their category straight from the file.
    let rejected = report
        .rejected
        .iter()
        .filter(|r| {
            std::fs::read_to_string(&r.path).is_ok_and(|t| {
                t.lines().any(|l| {
                    let l = l.trim();
                    l.strip_prefix("category:")
                        .is_some_and(|c| in_scope(Some(c.trim())))
                })
            })
        })
        .count();
    let ratio = loaded as f64 / (loaded + rejected) as f64;
    eprintln!(
        "corpus: {report}; endpoint categories {loaded} loaded, {rejected} rejected ({:.2}%)",
        ratio * 100.0
    );
    assert!(
        ratio >= 0.995,
        "only {:.2}% of endpoint-category rules load",
        ratio * 100.0
    );
}
