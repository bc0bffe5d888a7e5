//! `vigil rules ...`: tools for rule authors.

use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;

/// Validates rules; returns whether all loaded.
pub fn check(paths: &[PathBuf], as_json: bool) -> Result<bool> {
    let (_set, report) = vigil_rules::RuleSet::load_paths(paths);
    if as_json {
        let rejected: Vec<_> = report
            .rejected
            .iter()
            .map(|r| json!({"path": r.path.display().to_string(), "line": r.line, "id": r.id, "reason": r.error.to_string()}))
            .collect();
        println!("{}", json!({"loaded": report.loaded, "rejected": rejected}));
    } else {
        for r in &report.rejected {
            println!("{r}");
        }
        println!("{report}");
    }
    Ok(report.rejected.is_empty())
}
