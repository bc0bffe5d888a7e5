use crate::correlation::{Correlation, Scope};
use crate::document::{Document, compile_document};
use crate::error::{Rejection, RuleError};
use crate::eval::Ctx;
use crate::event::Event;
use crate::field::CompileOptions;
use crate::index::Index;
use crate::logsource::LogSource;
use crate::rule::{Filter, Rule};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Rule test files end so; loading rules skips them.
pub const TEST_SUFFIX: &str = ".tests.yml";

/// A rule file larger than this is rejected unread.
pub const MAX_RULE_FILE_BYTES: u64 = 1 << 20;

/// A rule bundle larger than this is rejected unread.
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// File extension of rule bundles (JSON).
pub const BUNDLE_EXTENSION: &str = "vrb";
const BUNDLE_FORMAT: &str = "vigil-rule-bundle";
const BUNDLE_VERSION: u32 = 1;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BundleDoc {
    path: String,
    line: usize,
    doc: Value,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Bundle {
    format: String,
    version: u32,
    documents: Vec<BundleDoc>,
}

/// Directory walks stop this deep (symlink loops, runaway trees).
const MAX_DIR_DEPTH: usize = 32;

/// The result of loading rules: what loaded and, for each rule that did not, why.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub rejected: Vec<Rejection>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} loaded, {} rejected",
            self.loaded,
            self.rejected.len()
        )
    }
}

/// A rule that matched an event.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub rule: &'a Rule,
}

/// A set of compiled rules, evaluated together.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    filters: Vec<Filter>,
    correlations: Vec<Correlation>,
    /// Where each correlation came from, for reference errors.
    correlation_origins: Vec<(PathBuf, usize)>,
    options: CompileOptions,
    /// Field names interned to ids, so a per-event lookup is an index.
    field_ids: HashMap<String, u32>,
    /// The accepted documents as loaded, kept only when a bundle will be written.
    sources: Option<Vec<BundleDoc>>,
    /// Prefilter per event log source, built on first use.
    /// A short list: sources are few, and a scan beats hashing three strings per event.
    indexes: RwLock<Vec<(LogSource, Arc<Index>)>>,
}

impl Clone for RuleSet {
    fn clone(&self) -> Self {
        RuleSet {
            rules: self.rules.clone(),
            filters: self.filters.clone(),
            correlations: self.correlations.clone(),
            correlation_origins: self.correlation_origins.clone(),
            options: self.options.clone(),
            field_ids: self.field_ids.clone(),
            sources: self.sources.clone(),
            indexes: RwLock::default(),
        }
    }
}

impl RuleSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose rules compile with `options` (e.g. placeholder values).
    pub fn with_options(options: CompileOptions) -> Self {
        RuleSet {
            options,
            ..RuleSet::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    pub fn correlations(&self) -> &[Correlation] {
        &self.correlations
    }

    /// Loads every `.yml`/`.yaml` file under `paths` (files or directories).
    /// Bad rules are reported; the good ones load regardless.
    pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> (RuleSet, LoadReport) {
        RuleSet::new().load_all(paths)
    }

    fn load_all<P: AsRef<Path>>(mut self, paths: &[P]) -> (RuleSet, LoadReport) {
        let mut report = LoadReport::default();
        for p in paths {
            let mut files = Vec::new();
            collect_files(p.as_ref(), 0, &mut files, &mut report);
            files.sort();
            for f in files {
                self.load_file(&f, &mut report);
            }
        }
        self.check_references(&mut report);
        (self, report)
    }

    fn load_file(&mut self, path: &Path, report: &mut LoadReport) {
        let reject = |report: &mut LoadReport, error| {
            report.rejected.push(Rejection {
                path: path.to_owned(),
                line: 1,
                id: None,
                error,
            })
        };
        let limit = if is_bundle(path) {
            MAX_BUNDLE_BYTES
        } else {
            MAX_RULE_FILE_BYTES
        };
        match std::fs::metadata(path) {
            Ok(m) if m.len() > limit => {
                return reject(report, RuleError::Io(format!("larger than {limit} bytes")));
            }
            Err(e) => return reject(report, RuleError::Io(e.to_string())),
            Ok(_) => {}
        }
        match std::fs::read_to_string(path) {
            Ok(text) if is_bundle(path) => self.load_bundle(path, &text, report),
            Ok(text) => self.load_str(path, &text, report),
            Err(e) => reject(report, RuleError::Io(e.to_string())),
        }
    }

    /// Loads rules from YAML text (one rule per document); `path` names them in reports.
    pub fn load_str(&mut self, path: &Path, text: &str, report: &mut LoadReport) {
        let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                report.rejected.push(Rejection {
                    path: path.to_owned(),
                    line: yaml_error_line(&msg).unwrap_or(1),
                    id: None,
                    error: RuleError::Yaml(first_line(&msg)),
                });
                return;
            }
        };
        let starts = document_starts(text);
        let docs: Vec<(usize, Value)> = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| (starts.get(i).copied().unwrap_or(1), d))
            .collect();
        self.add_documents(path, docs, Some(text), report);
    }

    /// Compiles parsed documents (with their first line) from `path`.
    fn add_documents(
        &mut self,
        path: &Path,
        docs: Vec<(usize, Value)>,
        text: Option<&str>,
        report: &mut LoadReport,
    ) {
        if let Ok(mut m) = self.indexes.write() {
            m.clear();
        }
        for (start, doc) in docs {
            if doc.is_null() {
                continue;
            }
            match compile_document(&doc, &self.options) {
                Ok(mut d) => {
                    let ids = &mut self.field_ids;
                    let mut intern = |name: &str| {
                        let next = ids.len() as u32;
                        *ids.entry(name.to_owned()).or_insert(next)
                    };
                    match &mut d {
                        Document::Rule(r) => r.detection.intern(&mut intern),
                        Document::Filter(f) => f.detection.intern(&mut intern),
                        Document::Correlation(_) => {}
                    }
                    match d {
                        Document::Rule(r) => self.rules.push(r),
                        Document::Filter(f) => self.filters.push(f),
                        Document::Correlation(c) => {
                            self.correlations.push(c);
                            self.correlation_origins.push((path.to_owned(), start));
                        }
                    }
                    if let Some(src) = &mut self.sources {
                        src.push(BundleDoc {
                            path: path.display().to_string(),
                            line: start,
                            doc,
                        });
                    }
                    report.loaded += 1;
                }
                Err(error) => {
                    let id = doc.get("id").and_then(Value::as_str).map(str::to_owned);
                    let line = text
                        .and_then(|t| error_line(t, start, &error))
                        .unwrap_or(start);
                    report.rejected.push(Rejection {
                        path: path.to_owned(),
                        line,
                        id,
                        error,
                    });
                }
            }
        }
    }

    /// An empty set that keeps the documents it is given (through
    /// [`RuleSet::load_str`]), so that [`RuleSet::to_bundle`] can write them:
    /// how a server compiles rule text it received (no file is read).
    pub fn for_bundle() -> RuleSet {
        RuleSet {
            sources: Some(Vec::new()),
            ..RuleSet::default()
        }
    }

    /// Loads like [`RuleSet::load_paths`] and keeps the accepted documents, so
    /// that [`RuleSet::to_bundle`] can write them.
    pub fn load_paths_for_bundle<P: AsRef<Path>>(paths: &[P]) -> (RuleSet, LoadReport) {
        RuleSet {
            sources: Some(Vec::new()),
            ..RuleSet::default()
        }
        .load_all(paths)
    }

    /// A rule bundle: every accepted document, already validated, as JSON. A
    /// server compiles rules once and ships this; loading it skips YAML and
    /// the file walk. `None` unless the set was loaded with
    /// [`RuleSet::load_paths_for_bundle`].
    pub fn to_bundle(&self) -> Option<String> {
        let docs = self.sources.as_ref()?;
        serde_json::to_string(&Bundle {
            format: BUNDLE_FORMAT.into(),
            version: BUNDLE_VERSION,
            documents: docs.clone(),
        })
        .ok()
    }

    /// Loads a bundle written by [`RuleSet::to_bundle`].
    pub fn from_bundle(path: &Path, json: &str) -> (RuleSet, LoadReport) {
        let mut set = RuleSet::default();
        let mut report = LoadReport::default();
        set.load_bundle(path, json, &mut report);
        set.check_references(&mut report);
        (set, report)
    }

    fn load_bundle(&mut self, path: &Path, json: &str, report: &mut LoadReport) {
        let bundle: Bundle = match serde_json::from_str(json) {
            Ok(b) => b,
            Err(e) => {
                report.rejected.push(Rejection {
                    path: path.to_owned(),
                    line: e.line(),
                    id: None,
                    error: RuleError::Io(format!("not a rule bundle: {e}")),
                });
                return;
            }
        };
        if bundle.format != BUNDLE_FORMAT || bundle.version != BUNDLE_VERSION {
            report.rejected.push(Rejection {
                path: path.to_owned(),
                line: 1,
                id: None,
                error: RuleError::Io(format!(
                    "bundle format {} v{} is not {BUNDLE_FORMAT} v{BUNDLE_VERSION}",
                    bundle.format, bundle.version
                )),
            });
            return;
        }
        // Documents keep the file and line they came from, for reports.
        let mut by_file: Vec<(String, Vec<(usize, Value)>)> = Vec::new();
        for d in bundle.documents {
            match by_file.last_mut() {
                Some((p, docs)) if *p == d.path => docs.push((d.line, d.doc)),
                _ => by_file.push((d.path, vec![(d.line, d.doc)])),
            }
        }
        for (p, docs) in by_file {
            self.add_documents(Path::new(&p), docs, None, report);
        }
    }

    /// Rejects correlations that reference rules or correlations the set does
    /// not hold (they could never fire), or a correlation of the other
    /// [`Scope`] (a sensor and the server would each miss one of the two).
    /// Call after the last file is loaded; [`RuleSet::load_paths`] does.
    pub fn check_references(&mut self, report: &mut LoadReport) {
        loop {
            let bad = self.correlations.iter().enumerate().find_map(|(i, c)| {
                c.rules.iter().find_map(|r| {
                    let rule = self.rules.iter().any(|x| x.is_named(r));
                    let other = self
                        .correlations
                        .iter()
                        .find(|x| x.id != c.id && x.is_named(r));
                    match other {
                        Some(o) if o.scope != c.scope => Some((
                            i,
                            format!(
                                "correlation of scope {} references `{r}`, a correlation of scope {}",
                                c.scope.as_str(),
                                o.scope.as_str()
                            ),
                        )),
                        None if !rule => Some((
                            i,
                            format!("correlation references unknown rule `{r}`"),
                        )),
                        _ => None,
                    }
                })
            });
            let Some((i, why)) = bad else { break };
            let c = self.correlations.remove(i);
            let (path, line) = self.correlation_origins.remove(i);
            if let Some(src) = &mut self.sources {
                let p = path.display().to_string();
                src.retain(|d| !(d.path == p && d.line == line));
            }
            report.loaded = report.loaded.saturating_sub(1);
            report.rejected.push(Rejection {
                path,
                line,
                id: Some(c.id),
                error: RuleError::Detection(why),
            });
        }
    }

    /// Whether any correlation runs tenant-wide (on the server).
    pub fn has_tenant_scope(&self) -> bool {
        self.correlations.iter().any(|c| c.scope == Scope::Tenant)
    }

    /// The part of the set that runs where `scope` says.
    ///
    /// - [`Scope::Device`], what a sensor runs: every filter, the
    ///   correlations of device scope, and every rule but those only
    ///   tenant-scope correlations without `generate` reference (they would
    ///   not alert on their own anyway).
    /// - [`Scope::Tenant`], what the server runs over a tenant's records: the
    ///   correlations of tenant scope, the rules they reference, and the
    ///   filters. The referenced rules are there to feed the correlations;
    ///   sensors raise their matches where they alert at all (`generate`), so
    ///   the server must not alert on [`crate::Hit::Rule`] of this part.
    ///
    /// Indices ([`crate::Hit`]) refer to the part, not to `self`. The part
    /// keeps no documents for a bundle.
    pub fn part(&self, scope: Scope) -> RuleSet {
        let keep: Vec<bool> = self.correlations.iter().map(|c| c.scope == scope).collect();
        let rules = match scope {
            // A rule only tenant-wide correlations use, none with `generate`,
            // would be silent on a sensor (Sigma: referenced rules do not
            // alert): it does not run there at all.
            Scope::Device => self
                .rules
                .iter()
                .filter(|r| {
                    let mut users = self
                        .correlations
                        .iter()
                        .filter(|c| c.rules.iter().any(|n| r.is_named(n)))
                        .peekable();
                    users.peek().is_none() || users.any(|c| c.scope == Scope::Device || c.generate)
                })
                .cloned()
                .collect(),
            Scope::Tenant => self
                .rules
                .iter()
                .filter(|r| {
                    self.correlations
                        .iter()
                        .zip(&keep)
                        .any(|(c, k)| *k && c.rules.iter().any(|n| r.is_named(n)))
                })
                .cloned()
                .collect(),
        };
        let pick = |v: &[Correlation]| -> Vec<Correlation> {
            v.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.clone())
                .collect()
        };
        RuleSet {
            rules,
            filters: self.filters.clone(),
            correlations: pick(&self.correlations),
            correlation_origins: self
                .correlation_origins
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(o, _)| o.clone())
                .collect(),
            options: self.options.clone(),
            // Ids interned by the whole set are still valid in a part.
            field_ids: self.field_ids.clone(),
            sources: None,
            indexes: RwLock::default(),
        }
    }

    fn index(&self, source: &LogSource) -> Arc<Index> {
        if let Some(ix) = self.indexes.read().ok().and_then(|m| {
            m.iter()
                .find(|(s, _)| s == source)
                .map(|(_, ix)| Arc::clone(ix))
        }) {
            return ix;
        }
        let ix = Arc::new(Index::build(&self.rules, source));
        if let Ok(mut m) = self.indexes.write() {
            // Bounded: sources are few (product/category pairs); never let a
            // stream of odd sources grow the cache without end.
            if m.len() >= 64 {
                m.clear();
            }
            m.push((source.clone(), Arc::clone(&ix)));
        }
        ix
    }

    /// Builds the prefilter for `source` now rather than on its first event;
    /// returns (rules that apply, rules evaluated on every event).
    pub fn prepare(&self, source: &LogSource) -> (usize, usize) {
        let ix = self.index(source);
        (ix.applicable, ix.unconditional())
    }

    /// Indices of the rules whose log source covers `source`, whose detection
    /// matches `event`, and that no applicable filter suppresses, in rule order.
    pub fn matching_rules(&self, source: &LogSource, event: &dyn Event) -> Vec<usize> {
        self.for_source(source).matching_rules(event)
    }

    /// The rules for one log source, compiled, for evaluating many events of
    /// that source without finding its matcher each time.
    pub fn for_source<'a>(&'a self, source: &'a LogSource) -> SourceRules<'a> {
        SourceRules {
            set: self,
            source,
            index: self.index(source),
        }
    }

    /// Rules the prefilter cannot narrow down: evaluated on every event (engine tuning).
    #[doc(hidden)]
    pub fn unconditional_rules(&self, source: &LogSource) -> Vec<usize> {
        self.index(source)
            .unconditional_rules()
            .iter()
            .map(|&i| i as usize)
            .collect()
    }

    /// Per prefilter field: (name, ns per event scanning it) (engine tuning).
    #[doc(hidden)]
    pub fn prefilter_profile(
        &self,
        source: &LogSource,
        events: &[&dyn Event],
    ) -> Vec<(String, f64)> {
        self.index(source).profile(events)
    }

    /// Turns the field value caches of this thread on (the default) or off
    /// (engine tuning: to measure what they bring).
    #[doc(hidden)]
    pub fn use_value_cache(on: bool) {
        Index::use_value_cache(on)
    }

    /// How often this thread found field values in its caches (engine tuning).
    #[doc(hidden)]
    pub fn cache_stats() -> crate::index::CacheStats {
        Index::cache_stats()
    }

    /// The rules the prefilter passes on for `event` (engine tuning).
    #[doc(hidden)]
    pub fn candidates(&self, source: &LogSource, event: &dyn Event) -> Vec<usize> {
        self.index(source)
            .candidates(event)
            .into_iter()
            .map(|i| i as usize)
            .collect()
    }

    /// The same as [`RuleSet::matching_rules`] without the prefilter: every
    /// applicable rule is evaluated. The reference the prefilter is tested against.
    #[doc(hidden)]
    pub fn matching_rules_unindexed(&self, source: &LogSource, event: &dyn Event) -> Vec<usize> {
        let mut ctx = Ctx::new(event);
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.logsource.covers(source)
                && r.matches_in(&mut ctx)
                && !self.filtered(r, source, &mut ctx)
            {
                out.push(i);
            }
        }
        out
    }

    fn filtered<'r>(&'r self, rule: &Rule, source: &LogSource, ctx: &mut Ctx<'r, '_>) -> bool {
        self.filters.iter().any(|f| {
            f.rules.iter().any(|r| rule.is_named(r))
                && f.logsource.covers(source)
                && f.matches_in(ctx)
        })
    }

    /// The rules that match `event` on their own (no correlation state; see
    /// [`crate::Engine`] for correlations).
    pub fn evaluate<'a>(&'a self, source: &LogSource, event: &dyn Event) -> Vec<Match<'a>> {
        self.matching_rules(source, event)
            .into_iter()
            .map(|i| Match {
                rule: &self.rules[i],
            })
            .collect()
    }
}

fn collect_files(path: &Path, depth: usize, out: &mut Vec<PathBuf>, report: &mut LoadReport) {
    if depth > MAX_DIR_DEPTH {
        report.rejected.push(Rejection {
            path: path.to_owned(),
            line: 1,
            id: None,
            error: RuleError::Io(format!("directory nesting deeper than {MAX_DIR_DEPTH}")),
        });
        return;
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    collect_files(&p, depth + 1, out, report);
                } else if is_rule_file(&p) {
                    out.push(p);
                }
            }
        }
        Err(_) if path.is_file() => out.push(path.to_owned()),
        Err(e) => report.rejected.push(Rejection {
            path: path.to_owned(),
            line: 1,
            id: None,
            error: RuleError::Io(e.to_string()),
        }),
    }
}

fn is_bundle(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some(BUNDLE_EXTENSION)
}

fn is_rule_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yml" | "yaml" | BUNDLE_EXTENSION)
    ) && !p.to_string_lossy().ends_with(TEST_SUFFIX)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// 1-based line where each YAML document begins.
fn document_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && i > 0 {
            starts.push(i + 2);
        } else if line.starts_with("---") && i == 0 {
            starts[0] = 2;
        }
    }
    starts
}

/// Points an error at the line of the construct it names, searching from the
/// document's first line.
fn error_line(text: &str, start: usize, error: &RuleError) -> Option<usize> {
    let needle = match error {
        RuleError::UnknownModifier { field, modifier } => {
            format!("{field}|{}", modifier.split('|').next().unwrap_or_default())
        }
        RuleError::MissingField(_) => return None,
        RuleError::Condition(_) | RuleError::UnknownSelection(_) => "condition".to_owned(),
        // Detection errors open with the field they concern: "`Field`: ...".
        RuleError::Detection(msg) => match msg.strip_prefix('`').and_then(|m| m.split_once('`')) {
            Some((field, _)) if field != "keywords" => format!("{field}|"),
            _ => return None,
        },
        RuleError::WrongType { field, .. } | RuleError::Regex { field, .. } => field.clone(),
        _ => return None,
    };
    // Prefer a line that starts with the key; fall back to any mention.
    let lines = || text.lines().enumerate().skip(start.saturating_sub(1));
    let key = |l: &str| {
        let l = l
            .trim_start()
            .trim_start_matches("- ")
            .trim_start_matches(['\'', '"']);
        l.starts_with(needle.as_str())
    };
    lines()
        .find(|(_, l)| key(l))
        .or_else(|| lines().find(|(_, l)| l.contains(needle.as_str())))
        .map(|(i, _)| i + 1)
}

/// serde-saphyr errors say "line N"; pull N out for the report.
fn yaml_error_line(msg: &str) -> Option<usize> {
    let idx = msg.find("line ")?;
    msg[idx + 5..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A rule set's matcher for one log source; see [`RuleSet::for_source`].
pub struct SourceRules<'a> {
    set: &'a RuleSet,
    source: &'a LogSource,
    index: Arc<Index>,
}

impl SourceRules<'_> {
    /// As [`RuleSet::matching_rules`] for this source.
    pub fn matching_rules(&self, event: &dyn Event) -> Vec<usize> {
        let mut ctx = Ctx::new(event);
        let mut out = Vec::new();
        self.index
            .matching(&self.set.rules, &mut ctx, &mut out, |r, ctx| {
                !self.set.filtered(r, self.source, ctx)
            });
        out
    }
}
