//! Local rule evaluation: records matched against the loaded rule set
//! (correlations included) under every log source they map to, detections
//! built. Works offline: nothing here needs the server.

use crate::source::{Source, for_each_event};
use std::sync::Arc;
use vigil_proto::v1::{Detection, ProcessRef, Record, record::Payload};
use vigil_rules::{Engine, EngineConfig, Hit, Level, LogSource, RuleSet};

/// The rules and their correlation state. Owned by the pipeline thread.
pub struct Evaluator {
    engine: Engine,
    /// Indexed by [`Source::index`].
    sources: [LogSource; 4],
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("rules", &self.engine.rule_set().len())
            .finish_non_exhaustive()
    }
}

fn prepare(rules: &RuleSet, sources: &[LogSource]) {
    for s in sources {
        rules.prepare(s);
    }
}

impl Evaluator {
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Self {
        let sources = Source::ALL.map(Source::logsource);
        prepare(&rules, &sources);
        Evaluator {
            engine: Engine::new(rules, config),
            sources,
        }
    }

    /// Swaps in a new rule set between two events. Correlations whose
    /// definition did not change keep their state (see [`Engine::reload`]).
    pub fn replace(&mut self, rules: Arc<RuleSet>) {
        prepare(&rules, &self.sources);
        self.engine.reload(rules);
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        self.engine.rule_set()
    }

    /// Correlation state dropped to stay within bounds.
    pub fn evictions(&self) -> u64 {
        self.engine.evictions()
    }

    /// Detections for one record payload: the payload is evaluated as each
    /// event it maps to (see [`for_each_event`]); a rule or correlation that
    /// fires on several of them (a rule for all of `product: linux`) is one
    /// detection. Kinds that map to no event give none.
    pub fn evaluate(
        &mut self,
        time_unix_ns: i64,
        payload: &Payload,
        ancestry: &[ProcessRef],
    ) -> Vec<Detection> {
        let mut hits: Vec<Hit> = Vec::new();
        let Evaluator { engine, sources } = self;
        for_each_event(payload, ancestry, |event| {
            let source = &sources[event.source().index()];
            for h in engine.process(source, event, time_unix_ns) {
                if !hits.contains(&h) {
                    hits.push(h);
                }
            }
        });
        if hits.is_empty() {
            return Vec::new();
        }
        let set = Arc::clone(self.engine.rule_set());
        let process = acting_process(payload);
        hits.into_iter()
            .map(|h| {
                let mut d = detection_of(&set, h);
                d.matched = vec![Record {
                    // The sequence is filled in when the event is spooled.
                    sequence: 0,
                    time_unix_ns,
                    payload: Some(payload.clone()),
                    ..Record::default()
                }];
                d.process = process.clone();
                d
            })
            .collect()
    }
}

/// What a rule or correlation of `set` says about itself, as a detection
/// (no matched events, no process).
pub fn detection_of(set: &RuleSet, hit: Hit) -> Detection {
    let (id, title, level, tags, description, author, references): (
        &str,
        &str,
        Level,
        &[String],
        &str,
        &str,
        &[String],
    ) = match hit {
        Hit::Rule(i) => {
            let r = &set.rules()[i];
            let d = &r.description;
            (
                &r.id,
                &r.title,
                r.level,
                &r.tags,
                d,
                &r.author,
                &r.references,
            )
        }
        Hit::Correlation(i) => {
            let c = &set.correlations()[i];
            let d = &c.description;
            (
                &c.id,
                &c.title,
                c.level,
                &c.tags,
                d,
                &c.author,
                &c.references,
            )
        }
    };
    Detection {
        rule_id: id.to_owned(),
        rule_title: title.to_owned(),
        level: level.as_str().to_owned(),
        tags: tags.to_vec(),
        description: description.to_owned(),
        author: author.to_owned(),
        references: references.to_vec(),
        ..Detection::default()
    }
}

/// The process a record is about: the one started, or the one that acted.
pub fn acting_process(payload: &Payload) -> Option<ProcessRef> {
    match payload {
        Payload::ProcessStart(s) => Some(ProcessRef {
            guid: s.guid.clone(),
            pid: s.pid,
            executable: s.executable.clone(),
            command_line: s.command_line.clone(),
        }),
        Payload::File(f) => f.process.clone(),
        Payload::Network(n) => n.process.clone(),
        Payload::Registry(r) => r.process.clone(),
        Payload::Detection(d) => d.process.clone(),
        Payload::ProcessExit(_)
        | Payload::Host(_)
        | Payload::Health(_)
        | Payload::Diagnostics(_) => None,
    }
}
