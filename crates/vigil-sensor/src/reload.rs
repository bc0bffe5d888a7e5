//! Hot reload of rules: the rule paths are watched (inotify through `notify`);
//! after changes settle, the rules are loaded again and handed over. An edit
//! that introduces a rejection that was not there before keeps the running
//! set and reports why.

use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vigil_rules::{LoadReport, RuleSet, Scope};

/// How long the files must be quiet before reloading (editors write in bursts).
pub const SETTLE: Duration = Duration::from_millis(300);

/// What a reload produced.
#[derive(Debug)]
pub enum Reload {
    /// A new set to swap in, with its load report.
    Swap(Arc<RuleSet>, LoadReport),
    /// The edit broke rules; the running set stays.
    Refused(LoadReport),
}

pub struct RuleWatcher {
    _watcher: notify::RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RuleWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleWatcher").finish_non_exhaustive()
    }
}

fn rejection_keys(r: &LoadReport) -> BTreeSet<(PathBuf, String)> {
    r.rejected
        .iter()
        .map(|x| (x.path.clone(), x.error.to_string()))
        .collect()
}

impl RuleWatcher {
    /// Watches `paths`; `initial` is the report of the set now running.
    pub fn start(
        paths: Vec<PathBuf>,
        initial: &LoadReport,
        on_reload: impl Fn(Reload) + Send + 'static,
    ) -> Result<RuleWatcher, notify::Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && !ev.kind.is_access()
            {
                let _ = tx.send(());
            }
        })?;
        for p in &paths {
            watcher.watch(p, RecursiveMode::Recursive)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let mut known = rejection_keys(initial);
        let thread = std::thread::Builder::new()
            .name("vigil-rule-watch".into())
            .spawn(move || {
                let mut dirty_since: Option<Instant> = None;
                while !stop2.load(Ordering::Relaxed) {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(()) => dirty_since = Some(Instant::now()),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    if dirty_since.is_some_and(|t| t.elapsed() >= SETTLE) {
                        dirty_since = None;
                        let (set, report) = RuleSet::load_paths(&paths);
                        let now = rejection_keys(&report);
                        if now.is_subset(&known) {
                            known = now;
                            // Tenant-wide correlations run on the server, never here.
                            on_reload(Reload::Swap(Arc::new(set.part(Scope::Device)), report));
                        } else {
                            on_reload(Reload::Refused(report));
                        }
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(RuleWatcher {
            _watcher: watcher,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RuleWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "title: t\nid: r1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s: {Image|endswith: /x}\n  condition: s\nlevel: LEVEL\n";

    #[test]
    fn edits_swap_and_broken_edits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yml");
        std::fs::write(&file, RULE.replace("LEVEL", "low")).unwrap();
        let (_, initial) = RuleSet::load_paths(&[dir.path()]);
        let (tx, rx) = std::sync::mpsc::channel();
        let _w = RuleWatcher::start(vec![dir.path().to_owned()], &initial, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
        let next = || {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a reload within 10 s")
        };

        std::fs::write(&file, RULE.replace("LEVEL", "critical")).unwrap();
        match next() {
            Reload::Swap(set, _) => assert_eq!(set.rules()[0].level.as_str(), "critical"),
            other => panic!("expected a swap, got {other:?}"),
        }
        std::fs::write(&file, "title: [broken").unwrap();
        match next() {
            Reload::Refused(report) => assert_eq!(report.rejected.len(), 1),
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::write(&file, RULE.replace("LEVEL", "high")).unwrap();
        match next() {
            Reload::Swap(set, report) => {
                assert_eq!(set.rules()[0].level.as_str(), "high");
                assert!(report.rejected.is_empty());
            }
            other => panic!("expected a swap, got {other:?}"),
        }
    }
}
