//! Local rule evaluation: records adapted to Sigma fields, matched against the
//! loaded rule set, detections built. Works offline: nothing here needs the server.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use vigil_proto::v1::{Detection, ProcessRef, ProcessStart, Record, record::Payload};
use vigil_rules::{Event, FieldValue, LogSource, RuleSet};

/// A process start as Sigma's `process_creation` category sees it.
pub struct ProcessCreation<'a>(pub &'a ProcessStart);

fn s(v: &str) -> Option<FieldValue<'_>> {
    Some(FieldValue::Str(Cow::Borrowed(v)))
}

impl Event for ProcessCreation<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let p = self.0;
        let parent = p.parent.as_ref();
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
            "LogonId" => Some(FieldValue::Int(i64::from(p.login_uid))),
            "uid" => Some(FieldValue::Int(i64::from(p.uid))),
            "euid" => Some(FieldValue::Int(i64::from(p.euid))),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        let p = self.0;
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

/// The loaded rules, swappable while the sensor runs.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    rules: Arc<RwLock<Arc<RuleSet>>>,
}

impl Evaluator {
    pub fn new(rules: RuleSet) -> Self {
        Evaluator {
            rules: Arc::new(RwLock::new(Arc::new(rules))),
        }
    }

    /// Replaces the rule set atomically; evaluations in flight finish on the old one.
    pub fn replace(&self, rules: RuleSet) {
        if let Ok(mut g) = self.rules.write() {
            *g = Arc::new(rules);
        }
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    /// Detections for one record payload (empty for kinds no rule category covers yet).
    pub fn evaluate(&self, time_unix_ns: i64, payload: &Payload) -> Vec<Detection> {
        let Payload::ProcessStart(start) = payload else {
            return Vec::new();
        };
        let rules = self.rules();
        let source = LogSource::new("linux", "process_creation");
        rules
            .evaluate(&source, &ProcessCreation(start))
            .into_iter()
            .map(|m| Detection {
                rule_id: m.rule.id.clone(),
                rule_title: m.rule.title.clone(),
                level: m.rule.level.as_str().to_owned(),
                tags: m.rule.tags.clone(),
                description: m.rule.description.clone(),
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
            })
            .collect()
    }
}
