//! The correlation engine: a rule set evaluated over a stream of events,
//! correlation state kept between them.
//!
//! Streaming semantics (the spec describes queries over stored events; an
//! engine that sees events one at a time must choose):
//! - A condition made only of `gt`/`gte` fires as soon as it holds, on a
//!   sliding window, and the group starts over.
//! - A condition with `lt`, `lte`, `eq` or `neq` can only be judged when the
//!   window closes: the window opens at a group's first event and closes
//!   `timespan` later; it is judged when a later event of that group arrives,
//!   or on [`Engine::advance`]/[`Engine::flush`].
//! - `temporal` without a condition fires when every referenced rule has
//!   matched inside the window; `temporal_ordered` when they matched in order.
//! - `value_percentile` compares, at each event, the share (in percent) of
//!   that event's field value among the group's values in the window.
//!
//! State is bounded: at most [`EngineConfig::max_groups`] groups per
//! correlation (the least recently updated is evicted first) and
//! [`EngineConfig::max_entries_per_group`] entries per group; evictions are
//! counted ([`Engine::evictions`]).

use crate::correlation::{Correlation, CorrelationType};
use crate::event::Event;
use crate::logsource::LogSource;
use crate::ruleset::RuleSet;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Bounds on correlation state.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub max_groups: usize,
    pub max_entries_per_group: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_groups: 100_000,
            max_entries_per_group: 10_000,
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    start: i64,
    last: i64,
    times: VecDeque<i64>,
    values: VecDeque<(i64, String)>,
    numbers: VecDeque<(i64, f64)>,
    /// Per referenced rule: latest match time (temporal) or chain start (ordered).
    seen: Vec<Option<i64>>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
}

/// What matched: a rule or a correlation of the engine's rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Rule(usize),
    Correlation(usize),
}

/// One correlation group an event (or a correlation it completed) was added
/// to, from [`Engine::process_traced`]: what a caller needs to keep its own
/// evidence per group, e.g. the events that made a correlation fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// Index of the correlation in the engine's rule set.
    pub correlation: usize,
    /// The group's key (its `group-by` values).
    pub group: String,
    /// What fed it: a rule that matched the event, or a correlation that
    /// fired on it (a correlation of correlations).
    pub by: Hit,
    /// Whether the correlation fired for this group on this event (silent
    /// ones too: a correlation only others refer to fires without a [`Hit`]).
    pub fired: bool,
}

/// Evaluates a rule set over a stream of events, keeping correlation state.
#[derive(Debug)]
pub struct Engine {
    set: Arc<RuleSet>,
    config: EngineConfig,
    states: Vec<State>,
    evictions: u64,
    /// Per rule: (correlation, position in its `rules`).
    rule_refs: Vec<Vec<(usize, usize)>>,
    corr_refs: Vec<Vec<(usize, usize)>>,
    /// Rules that only feed correlations (referenced without `generate`).
    silent: Vec<bool>,
    silent_corr: Vec<bool>,
}

/// Chained correlations deeper than this are not followed.
const MAX_CHAIN: usize = 8;

impl Engine {
    pub fn new(set: Arc<RuleSet>, config: EngineConfig) -> Engine {
        let corrs = set.correlations();
        let mut rule_refs = vec![Vec::new(); set.rules().len()];
        let mut corr_refs = vec![Vec::new(); corrs.len()];
        let mut silent = vec![false; set.rules().len()];
        let mut silent_corr = vec![false; corrs.len()];
        let mut generated = vec![false; set.rules().len()];
        for (ci, c) in corrs.iter().enumerate() {
            for (pos, r) in c.rules.iter().enumerate() {
                for (ri, rule) in set.rules().iter().enumerate() {
                    if rule.is_named(r) {
                        rule_refs[ri].push((ci, pos));
                        silent[ri] = true;
                        generated[ri] |= c.generate;
                    }
                }
                for (cj, other) in corrs.iter().enumerate() {
                    if cj != ci && other.is_named(r) {
                        corr_refs[cj].push((ci, pos));
                        silent_corr[cj] = !c.generate;
                    }
                }
            }
        }
        for (s, g) in silent.iter_mut().zip(&generated) {
            *s &= !g;
        }
        let states = corrs.iter().map(|_| State::default()).collect();
        Engine {
            set,
            config,
            states,
            evictions: 0,
            rule_refs,
            corr_refs,
            silent,
            silent_corr,
        }
    }

    /// The engine for a new rule set (a hot reload), keeping the state of
    /// every correlation whose own definition did not change (same id, type,
    /// referenced rules, group-by, timespan, fields, condition, aliases and
    /// `generate`): an edit elsewhere in the rules does not restart its
    /// window. State of correlations that changed or went away is dropped.
    pub fn reload(&mut self, set: Arc<RuleSet>) {
        let mut next = Engine::new(set, self.config);
        next.evictions = self.evictions;
        let old = self.set.correlations();
        for (ci, c) in next.set.correlations().iter().enumerate() {
            if let Some(oi) = old
                .iter()
                .position(|o| o.id == c.id && o.same_definition(c))
                && let (Some(from), Some(to)) = (self.states.get_mut(oi), next.states.get_mut(ci))
            {
                *to = std::mem::take(from);
            }
        }
        *self = next;
    }

    pub fn rule_set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// Correlation groups or entries dropped to stay within bounds.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Evaluates one event observed at `time_ns`; returns what matched.
    pub fn process(&mut self, source: &LogSource, event: &dyn Event, time_ns: i64) -> Vec<Hit> {
        self.evaluate(source, event, time_ns, None)
    }

    /// As [`Engine::process`], and appends to `trace` every correlation group
    /// the event was added to, in the order it happened.
    pub fn process_traced(
        &mut self,
        source: &LogSource,
        event: &dyn Event,
        time_ns: i64,
        trace: &mut Vec<Fed>,
    ) -> Vec<Hit> {
        self.evaluate(source, event, time_ns, Some(trace))
    }

    fn evaluate(
        &mut self,
        source: &LogSource,
        event: &dyn Event,
        time_ns: i64,
        mut trace: Option<&mut Vec<Fed>>,
    ) -> Vec<Hit> {
        let set = Arc::clone(&self.set);
        let mut hits = Vec::new();
        for ri in set.matching_rules(source, event) {
            if !self.silent[ri] {
                hits.push(Hit::Rule(ri));
            }
            let rule = &set.rules()[ri];
            let names: Vec<&str> = std::iter::once(rule.id.as_str())
                .chain(rule.name.as_deref())
                .collect();
            for (ci, pos) in self.rule_refs[ri].clone() {
                let by = Hit::Rule(ri);
                let trace = trace.as_deref_mut();
                self.feed(ci, pos, by, &names, event, time_ns, &mut hits, 0, trace);
            }
        }
        hits
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        ci: usize,
        pos: usize,
        by: Hit,
        names: &[&str],
        event: &dyn Event,
        t: i64,
        hits: &mut Vec<Hit>,
        depth: usize,
        mut trace: Option<&mut Vec<Fed>>,
    ) {
        if depth > MAX_CHAIN {
            return;
        }
        let set = Arc::clone(&self.set);
        let c = &set.correlations()[ci];
        let key = c.key(names, event);
        let value = c.value(event);
        let fired = {
            let cfg = self.config;
            let state = &mut self.states[ci];
            if !state.groups.contains_key(&key)
                && state.groups.len() >= cfg.max_groups
                && let Some(oldest) = state
                    .groups
                    .iter()
                    .min_by_key(|(_, g)| g.last)
                    .map(|(k, _)| k.clone())
            {
                state.groups.remove(&oldest);
                self.evictions += 1;
            }
            let n_rules = c.rules.len();
            let g = state.groups.entry(key.clone()).or_insert_with(|| Group {
                start: t,
                seen: vec![None; n_rules],
                ..Group::default()
            });
            let mut fired = false;
            // A closed window (non-eager conditions) is judged before this event joins.
            if !c.eager() && t - g.start > c.timespan_ns {
                fired = judge(c, g);
                *g = Group {
                    start: t,
                    seen: vec![None; n_rules],
                    ..Group::default()
                };
            }
            g.last = t;
            let evicted = add(
                c,
                g,
                pos,
                t,
                value.as_deref(),
                event,
                cfg.max_entries_per_group,
            );
            self.evictions += evicted;
            if c.eager() || matches!(c.kind, CorrelationType::ValuePercentile) {
                if now_holds(c, g, value.as_deref()) {
                    fired = true;
                    *g = Group {
                        start: t,
                        seen: vec![None; n_rules],
                        ..Group::default()
                    };
                }
            } else if matches!(
                c.kind,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            ) && c.condition.is_empty()
                && now_holds(c, g, value.as_deref())
            {
                fired = true;
                *g = Group {
                    start: t,
                    seen: vec![None; n_rules],
                    ..Group::default()
                };
            }
            fired
        };
        if let Some(tr) = trace.as_deref_mut() {
            tr.push(Fed {
                correlation: ci,
                group: key,
                by,
                fired,
            });
        }
        if fired {
            self.fire(ci, event, t, hits, depth, trace);
        }
    }

    fn fire(
        &mut self,
        ci: usize,
        event: &dyn Event,
        t: i64,
        hits: &mut Vec<Hit>,
        depth: usize,
        mut trace: Option<&mut Vec<Fed>>,
    ) {
        if !self.silent_corr[ci] {
            hits.push(Hit::Correlation(ci));
        }
        let set = Arc::clone(&self.set);
        let c = &set.correlations()[ci];
        let names: Vec<&str> = std::iter::once(c.id.as_str())
            .chain(c.name.as_deref())
            .collect();
        for (cj, pos) in self.corr_refs[ci].clone() {
            let by = Hit::Correlation(ci);
            let trace = trace.as_deref_mut();
            self.feed(cj, pos, by, &names, event, t, hits, depth + 1, trace);
        }
    }

    /// Judges windows that closed before `now_ns` (conditions with upper
    /// bounds); returns the correlations that fired.
    pub fn advance(&mut self, now_ns: i64) -> Vec<Hit> {
        self.close(|start, span| now_ns - start > span)
    }

    /// Judges every open window, as at the end of the input.
    pub fn flush(&mut self) -> Vec<Hit> {
        self.close(|_, _| true)
    }

    fn close(&mut self, closed: impl Fn(i64, i64) -> bool) -> Vec<Hit> {
        let set = Arc::clone(&self.set);
        let mut hits = Vec::new();
        for (ci, c) in set.correlations().iter().enumerate() {
            if c.eager()
                || c.condition.is_empty()
                || matches!(c.kind, CorrelationType::ValuePercentile)
            {
                continue;
            }
            let state = &mut self.states[ci];
            let done: Vec<String> = state
                .groups
                .iter()
                .filter(|(_, g)| closed(g.start, c.timespan_ns))
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                if let Some(mut g) = state.groups.remove(&k)
                    && judge(c, &mut g)
                    && !self.silent_corr[ci]
                {
                    hits.push(Hit::Correlation(ci));
                }
            }
        }
        hits
    }
}

/// Adds one match to a group; returns how many old entries were dropped.
fn add(
    c: &Correlation,
    g: &mut Group,
    pos: usize,
    t: i64,
    value: Option<&str>,
    event: &dyn Event,
    cap: usize,
) -> u64 {
    let mut evicted = 0;
    // Sliding windows (eager) forget what fell out of the time span.
    if c.eager() || c.condition.is_empty() || matches!(c.kind, CorrelationType::ValuePercentile) {
        let horizon = t - c.timespan_ns;
        while g.times.front().is_some_and(|x| *x < horizon) {
            g.times.pop_front();
        }
        while g.values.front().is_some_and(|x| x.0 < horizon) {
            g.values.pop_front();
        }
        while g.numbers.front().is_some_and(|x| x.0 < horizon) {
            g.numbers.pop_front();
        }
        for s in g.seen.iter_mut() {
            if s.is_some_and(|x| x < horizon) {
                *s = None;
            }
        }
    }
    match c.kind {
        CorrelationType::EventCount => g.times.push_back(t),
        CorrelationType::ValueCount | CorrelationType::ValuePercentile => {
            if let Some(v) = value {
                g.values.push_back((t, v.to_owned()));
            }
        }
        CorrelationType::ValueSum | CorrelationType::ValueAvg => {
            if let Some(n) = c
                .fields
                .first()
                .and_then(|f| event.field(f))
                .and_then(|v| v.as_number())
            {
                g.numbers.push_back((t, n));
            }
        }
        CorrelationType::Temporal => {
            if let Some(s) = g.seen.get_mut(pos) {
                *s = Some(t);
            }
        }
        CorrelationType::TemporalOrdered => {
            // seen[i] = start time of the latest chain that reached rule i.
            let start = if pos == 0 {
                Some(t)
            } else {
                g.seen.get(pos - 1).copied().flatten()
            };
            if let (Some(start), Some(slot)) = (start, g.seen.get_mut(pos))
                && t - start <= c.timespan_ns
            {
                *slot = Some(start);
            }
        }
    }
    for q in [g.times.len(), g.values.len(), g.numbers.len()] {
        if q > cap {
            evicted += 1;
        }
    }
    while g.times.len() > cap {
        g.times.pop_front();
    }
    while g.values.len() > cap {
        g.values.pop_front();
    }
    while g.numbers.len() > cap {
        g.numbers.pop_front();
    }
    evicted
}

fn distinct(g: &Group) -> usize {
    let mut v: Vec<&str> = g.values.iter().map(|(_, s)| s.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// The aggregate the condition is compared with.
fn measure(c: &Correlation, g: &Group, current: Option<&str>) -> Option<f64> {
    Some(match c.kind {
        CorrelationType::EventCount => g.times.len() as f64,
        CorrelationType::ValueCount => distinct(g) as f64,
        CorrelationType::ValueSum => g.numbers.iter().map(|x| x.1).sum(),
        CorrelationType::ValueAvg => {
            if g.numbers.is_empty() {
                return None;
            }
            g.numbers.iter().map(|x| x.1).sum::<f64>() / g.numbers.len() as f64
        }
        CorrelationType::ValuePercentile => {
            let cur = current?;
            let total = g.values.len();
            if total == 0 {
                return None;
            }
            g.values.iter().filter(|(_, v)| v == cur).count() as f64 * 100.0 / total as f64
        }
        CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
            g.seen.iter().filter(|s| s.is_some()).count() as f64
        }
    })
}

fn now_holds(c: &Correlation, g: &Group, current: Option<&str>) -> bool {
    match c.kind {
        CorrelationType::Temporal if c.condition.is_empty() => g.seen.iter().all(Option::is_some),
        CorrelationType::TemporalOrdered if c.condition.is_empty() => {
            g.seen.last().copied().flatten().is_some()
        }
        _ => measure(c, g, current).is_some_and(|m| c.holds(m)),
    }
}

fn judge(c: &Correlation, g: &mut Group) -> bool {
    let n = g.times.len()
        + g.values.len()
        + g.numbers.len()
        + g.seen.iter().filter(|s| s.is_some()).count();
    n > 0 && measure(c, g, None).is_some_and(|m| c.holds(m))
}
