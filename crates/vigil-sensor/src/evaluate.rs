//! Local rule evaluation: records adapted to Sigma fields, matched against the
//! loaded rule set (correlations included), detections built. Works offline:
//! nothing here needs the server.

use std::borrow::Cow;
use std::sync::Arc;
use vigil_proto::v1::{Detection, ProcessRef, ProcessStart, Record, record::Payload};
use vigil_rules::{Engine, EngineConfig, Event, FieldValue, Hit, Level, LogSource, RuleSet};

/// A process start as Sigma's `process_creation` category sees it, with its
/// ancestry (parent first) for rules that look up the tree.
pub struct ProcessCreation<'a> {
    pub start: &'a ProcessStart,
    pub ancestry: &'a [ProcessRef],
    /// Executables of all known ancestors, parent first, joined by `|`;
    /// built only if a rule asks for `Ancestors`.
    ancestors: std::cell::OnceCell<String>,
}

impl<'a> ProcessCreation<'a> {
    pub fn new(start: &'a ProcessStart, ancestry: &'a [ProcessRef]) -> Self {
        ProcessCreation {
            start,
            ancestry,
            ancestors: std::cell::OnceCell::new(),
        }
    }

    fn ancestors(&self) -> &str {
        self.ancestors.get_or_init(|| {
            self.ancestry
                .iter()
                .filter_map(|a| a.executable.as_ref().map(|e| e.text.as_str()))
                .collect::<Vec<_>>()
                .join("|")
        })
    }
}

fn s(v: &str) -> Option<FieldValue<'_>> {
    Some(FieldValue::Str(Cow::Borrowed(v)))
}

impl Event for ProcessCreation<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let p = self.start;
        let parent = p.parent.as_ref().or(self.ancestry.first());
        let grandparent = self.ancestry.get(1);
        match name {
            "Image" => s(&p.executable.as_ref()?.text),
            "CommandLine" => s(&p.command_line),
            "CurrentDirectory" => s(&p.cwd.as_ref()?.text),
            "User" => s(&p.user_name),
            "ProcessId" => Some(FieldValue::Int(i64::from(p.pid))),
            "ParentProcessId" => Some(FieldValue::Int(i64::from(p.parent_pid))),
            "ProcessGuid" => s(&p.guid),
            "ParentProcessGuid" => s(&p.parent_guid),
            "ParentImage" => s(&parent?.executable.as_ref()?.text),
            "ParentCommandLine" => s(&parent?.command_line),
            "GrandParentImage" => s(&grandparent?.executable.as_ref()?.text),
            "GrandParentCommandLine" => s(&grandparent?.command_line),
            "Ancestors" => s(self.ancestors()),
            "LogonId" => Some(FieldValue::Int(i64::from(p.login_uid))),
            "uid" => Some(FieldValue::Int(i64::from(p.uid))),
            "euid" => Some(FieldValue::Int(i64::from(p.euid))),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        let p = self.start;
        let mut v = vec![
            Cow::Borrowed(p.command_line.as_str()),
            Cow::Borrowed(p.user_name.as_str()),
        ];
        if let Some(e) = &p.executable {
            v.push(Cow::Borrowed(e.text.as_str()));
        }
        if let Some(c) = &p.cwd {
            v.push(Cow::Borrowed(c.text.as_str()));
        }
        v
    }
}

/// The rules and their correlation state. Owned by the pipeline thread.
pub struct Evaluator {
    engine: Engine,
    source: LogSource,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("rules", &self.engine.rule_set().len())
            .finish_non_exhaustive()
    }
}

impl Evaluator {
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Self {
        let source = LogSource::new("linux", "process_creation");
        rules.prepare(&source);
        Evaluator {
            engine: Engine::new(rules, config),
            source,
        }
    }

    /// Swaps in a new rule set between two events. Correlations whose
    /// definition did not change keep their state (see [`Engine::reload`]).
    pub fn replace(&mut self, rules: Arc<RuleSet>) {
        rules.prepare(&self.source);
        self.engine.reload(rules);
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        self.engine.rule_set()
    }

    /// Correlation state dropped to stay within bounds.
    pub fn evictions(&self) -> u64 {
        self.engine.evictions()
    }

    /// Detections for one record payload (empty for kinds no collector feeds rules yet).
    pub fn evaluate(
        &mut self,
        time_unix_ns: i64,
        payload: &Payload,
        ancestry: &[ProcessRef],
    ) -> Vec<Detection> {
        let Payload::ProcessStart(start) = payload else {
            return Vec::new();
        };
        let event = ProcessCreation::new(start, ancestry);
        let hits = self.engine.process(&self.source, &event, time_unix_ns);
        let set = Arc::clone(self.engine.rule_set());
        hits.into_iter()
            .map(|h| {
                let (id, title, level, tags, description): (&str, &str, Level, &[String], &str) =
                    match h {
                        Hit::Rule(i) => {
                            let r = &set.rules()[i];
                            (&r.id, &r.title, r.level, &r.tags, &r.description)
                        }
                        Hit::Correlation(i) => {
                            let c = &set.correlations()[i];
                            (&c.id, &c.title, c.level, &c.tags, &c.description)
                        }
                    };
                Detection {
                    rule_id: id.to_owned(),
                    rule_title: title.to_owned(),
                    level: level.as_str().to_owned(),
                    tags: tags.to_vec(),
                    description: description.to_owned(),
                    // The sequence is filled in when the event is spooled.
                    matched: vec![Record {
                        sequence: 0,
                        time_unix_ns,
                        payload: Some(payload.clone()),
                    }],
                    process: Some(ProcessRef {
                        guid: start.guid.clone(),
                        pid: start.pid,
                        executable: start.executable.clone(),
                        command_line: start.command_line.clone(),
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::v1::Path as PbPath;

    fn pref(exe: &str, cmd: &str) -> ProcessRef {
        ProcessRef {
            guid: String::new(),
            pid: 1,
            executable: Some(PbPath {
                text: exe.into(),
                ..Default::default()
            }),
            command_line: cmd.into(),
        }
    }

    #[test]
    fn ancestry_fields_reach_rules() {
        let mut set = RuleSet::new();
        let mut report = vigil_rules::LoadReport::default();
        set.load_str(
            std::path::Path::new("t.yml"),
            "title: webshell child\nid: w\nlogsource: {product: linux, category: process_creation}\n\
             detection:\n  s:\n    Ancestors|contains: /nginx\n    Image|endswith: /id\n  condition: s\nlevel: high\n",
            &mut report,
        );
        assert_eq!(report.loaded, 1, "{:?}", report.rejected);
        let mut ev = Evaluator::new(Arc::new(set), EngineConfig::default());
        let start = ProcessStart {
            executable: Some(PbPath {
                text: "/usr/bin/id".into(),
                ..Default::default()
            }),
            command_line: "id".into(),
            ..Default::default()
        };
        // sh (parent) ← php-fpm ← nginx: the web server is a grand-grandparent.
        let tree = [
            pref("/usr/bin/sh", "sh -c id"),
            pref("/usr/sbin/php-fpm", "php-fpm"),
            pref("/usr/sbin/nginx", "nginx"),
        ];
        let p = Payload::ProcessStart(start.clone());
        let d = ev.evaluate(1, &p, &tree);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].level, "high");
        let pc = ProcessCreation::new(&start, &tree);
        assert_eq!(
            pc.field("GrandParentImage")
                .map(|v| v.as_text().into_owned()),
            Some("/usr/sbin/php-fpm".into())
        );
        assert!(ev.evaluate(2, &p, &tree[..1]).is_empty());
    }
}
