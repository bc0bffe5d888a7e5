//! Privacy on the device: which level a record is, what the tenant's policy
//! and this device's configuration ask (`Settings`), the keyed pseudonyms
//! applied to every record before it is evaluated, spooled or sent, and the
//! policy and key kept in the data directory.
//!
//! Precedence: optional data follows `[privacy] optional_data` when it is set,
//! the tenant's policy otherwise (off unless it turns it on). Pseudonyms are
//! on when either the policy or the configuration asks. Redaction patterns are
//! the defaults, the configuration's and the tenant's.

use std::borrow::Cow;
use std::path::Path;
use vigil_proto::v1::{
    CrashReport, DataLevel, Path as PbPath, ProcessRef, SensorPolicy, record::Payload,
};
use vigil_pseudonym::Pseudonymizer;
use vigil_redact::Redactor;

/// The tenant's policy as last received (`SensorPolicy`, encoded).
const POLICY_FILE: &str = "privacy-policy.pb";
/// The tenant's pseudonym key (32 bytes), or this device's own when the
/// server gave none.
const KEY_FILE: &str = "pseudonym.key";
/// Written by the panic hook; read (and removed) at the next start.
const CRASH_FILE: &str = "crash.json";

/// A record's data level: the sensor's own diagnostics beyond health are
/// optional, everything else is required security telemetry.
pub(crate) fn level_of(p: &Payload) -> DataLevel {
    match p {
        Payload::Diagnostics(_) => DataLevel::Optional,
        _ => DataLevel::Required,
    }
}

/// What the pipeline applies now.
pub(crate) struct Settings {
    pub(crate) redactor: Redactor,
    pub(crate) pseudonyms: Option<Pseudonymizer>,
    pub(crate) optional: bool,
    /// The tenant policy's version these come from (0: none yet).
    pub(crate) policy_version: u64,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("pseudonyms", &self.pseudonyms.is_some())
            .field("optional", &self.optional)
            .field("policy_version", &self.policy_version)
            .finish_non_exhaustive()
    }
}

/// The settings from this device's configuration and the tenant's policy.
pub(crate) fn settings(
    cfg: &crate::config::PrivacyConfig,
    policy: &SensorPolicy,
    key: Option<[u8; 32]>,
) -> Settings {
    let own = cfg.patterns();
    // A tenant pattern named like one of the device's own is the device's.
    let tenant: Vec<(String, String)> = policy
        .redact
        .iter()
        .filter(|p| !own.iter().any(|(n, _)| *n == p.name))
        .map(|p| (p.name.clone(), p.regex.clone()))
        .collect();
    let redactor = match Redactor::with_rules(&[own.clone(), tenant].concat()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "The tenant's redaction patterns are refused; the defaults and the configured ones apply");
            // The configured ones were checked when the configuration loaded.
            Redactor::with_rules(&own).unwrap_or_default()
        }
    };
    let pseudonymize = cfg.pseudonymize || policy.pseudonymize;
    Settings {
        redactor,
        pseudonyms: match (pseudonymize, key) {
            (true, Some(k)) => Some(Pseudonymizer::new(k)),
            _ => None,
        },
        optional: cfg.optional_data.unwrap_or(policy.optional_data),
        policy_version: policy.version,
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Keeps the tenant's policy (and its key, when given) for the next start.
pub(crate) fn save(dir: &Path, key: Option<&[u8]>, policy: &SensorPolicy) -> std::io::Result<()> {
    if let Some(k) = key
        && k.len() == 32
    {
        write_private(&dir.join(KEY_FILE), k)?;
    }
    write_private(
        &dir.join(POLICY_FILE),
        &prost::Message::encode_to_vec(policy),
    )
}

/// The saved policy (default: none yet) and key.
pub(crate) fn load(dir: &Path) -> (SensorPolicy, Option<[u8; 32]>) {
    let policy = match std::fs::read(dir.join(POLICY_FILE)) {
        Ok(b) => <SensorPolicy as prost::Message>::decode(b.as_slice()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Saved privacy policy unreadable; waiting for the server's");
            SensorPolicy::default()
        }),
        Err(_) => SensorPolicy::default(),
    };
    let key = std::fs::read(dir.join(KEY_FILE))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
    (policy, key)
}

/// The saved key, or a new one of this device's own (saved): a sensor that
/// must pseudonymize never sends a name because it lacks the tenant's key.
/// Its pseudonyms are then stable on this device only.
pub(crate) fn key_or_own(dir: &Path, key: Option<[u8; 32]>) -> Option<[u8; 32]> {
    if key.is_some() {
        return key;
    }
    let mut k = [0u8; 32];
    if getrandom::fill(&mut k).is_err() {
        return None;
    }
    match write_private(&dir.join(KEY_FILE), &k) {
        Ok(()) => {
            tracing::warn!(
                "No pseudonym key from the server: this device's own is used (pseudonyms stable on this device only)"
            );
            Some(k)
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot keep a pseudonym key");
            None
        }
    }
}

/// Replaces identifying values in a record by the tenant's pseudonyms:
/// user names of human accounts, host names, home-directory segments of
/// paths and command lines. Returns the fields it changed.
pub(crate) fn pseudonymize(p: &Pseudonymizer, payload: &mut Payload) -> Vec<String> {
    let mut changed = Vec::new();
    let mut note = |hit: bool, field: &str| {
        if hit {
            changed.push(field.to_owned());
        }
    };
    match payload {
        Payload::ProcessStart(s) => {
            note(user(p, &mut s.user_name, s.uid), "user_name");
            let mut argv = false;
            for a in &mut s.argv {
                if let Cow::Owned(b) = p.home_segments(a) {
                    *a = b;
                    argv = true;
                }
            }
            note(argv, "argv");
            note(text(p, &mut s.command_line), "command_line");
            note(path(p, &mut s.executable), "executable");
            note(path(p, &mut s.cwd), "cwd");
            note(process(p, &mut s.parent), "parent");
        }
        Payload::File(f) => {
            note(path(p, &mut f.path), "path");
            note(path(p, &mut f.previous_path), "previous_path");
            note(user(p, &mut f.user_name, f.process_uid), "user_name");
            note(process(p, &mut f.process), "process");
        }
        Payload::Registry(r) => {
            note(text(p, &mut r.key_path), "key_path");
            note(text(p, &mut r.new_key_path), "new_key_path");
            note(process(p, &mut r.process), "process");
        }
        Payload::Network(n) => {
            note(user(p, &mut n.user_name, n.uid), "user_name");
            note(process(p, &mut n.process), "process");
        }
        Payload::Host(h) => {
            if let Cow::Owned(s) = p.host(&h.hostname) {
                h.hostname = s;
                note(true, "hostname");
            }
        }
        Payload::Detection(d) => note(process(p, &mut d.process), "process"),
        Payload::ProcessExit(_) | Payload::Health(_) | Payload::Diagnostics(_) => {}
    }
    changed
}

fn user(p: &Pseudonymizer, name: &mut String, uid: u32) -> bool {
    match p.user(name, Some(uid)) {
        Cow::Owned(s) => {
            *name = s;
            true
        }
        Cow::Borrowed(_) => false,
    }
}

fn text(p: &Pseudonymizer, s: &mut String) -> bool {
    match p.home_segments_str(s) {
        Cow::Owned(t) => {
            *s = t;
            true
        }
        Cow::Borrowed(_) => false,
    }
}

fn path(p: &Pseudonymizer, path: &mut Option<PbPath>) -> bool {
    let Some(x) = path else {
        return false;
    };
    if !x.raw.is_empty() {
        let Cow::Owned(b) = p.home_segments(&x.raw) else {
            return false;
        };
        x.text = String::from_utf8_lossy(&b).into_owned();
        x.raw = b;
        return true;
    }
    text(p, &mut x.text)
}

fn process(p: &Pseudonymizer, r: &mut Option<ProcessRef>) -> bool {
    r.as_mut().is_some_and(|r| process_ref(p, r))
}

pub(crate) fn process_ref(p: &Pseudonymizer, r: &mut ProcessRef) -> bool {
    let exe = path(p, &mut r.executable);
    text(p, &mut r.command_line) | exe
}

/// Installs a panic hook that keeps a crash report in `dir` for the next
/// start (the default hook still prints). Only the first call installs it.
pub(crate) fn keep_crash_reports(dir: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = dir.to_path_buf();
    ONCE.call_once(move || {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let report = serde_json::json!({
                "time_unix_ns": crate::pipeline::now_ns(),
                "sensor_version": env!("CARGO_PKG_VERSION"),
                "thread": std::thread::current().name().unwrap_or("").to_owned(),
                // Bounded: a panic message can hold anything.
                "message": message.chars().take(2048).collect::<String>(),
                "location": info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default(),
            });
            let _ = write_private(&dir.join(CRASH_FILE), report.to_string().as_bytes());
            previous(info);
        }));
    });
}

/// The previous run's crash report, if it left one (removed once read). Its
/// message goes through `redactor`: a panic message may quote a command line.
pub(crate) fn take_crash_report(dir: &Path, redactor: &Redactor) -> Option<CrashReport> {
    let path = dir.join(CRASH_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    // Redacted word by word as a command line would be (`-pSECRET`,
    // `--password SECRET`), then as text.
    let mut words: Vec<Vec<u8>> = s("message")
        .split(' ')
        .map(|w| w.as_bytes().to_vec())
        .collect();
    redactor.argv(&mut words);
    let joined = words.join(&b' ');
    let (redacted, _) = redactor.text(&joined);
    let report = CrashReport {
        time_unix_ns: v.get("time_unix_ns").and_then(|x| x.as_i64()).unwrap_or(0),
        sensor_version: s("sensor_version"),
        thread: s("thread"),
        message: String::from_utf8_lossy(&redacted).into_owned(),
        location: s("location"),
    };
    tracing::warn!(location = %report.location, thread = %report.thread, "The previous run ended in a panic");
    Some(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::PrivacyConfig;
    use vigil_proto::v1::{FileEvent, HostInfo, ProcessStart, RedactionPattern};

    #[test]
    fn the_configuration_and_the_policy_decide_together() {
        let off = SensorPolicy::default();
        let on = SensorPolicy {
            version: 3,
            optional_data: true,
            pseudonymize: true,
            redact: vec![RedactionPattern {
                name: "ticket".into(),
                regex: "TKT-(?P<secret>[0-9]+)".into(),
            }],
        };
        let key = Some([1u8; 32]);
        let cfg = PrivacyConfig::default();
        let s = settings(&cfg, &off, key);
        assert!(!s.optional && s.pseudonyms.is_none());
        let s = settings(&cfg, &on, key);
        assert!(s.optional && s.pseudonyms.is_some());
        assert_eq!(s.policy_version, 3);
        let (out, r) = s.redactor.text(b"see TKT-123456");
        assert_eq!(out.as_ref(), b"see TKT-[REDACTED]");
        assert_eq!(r.counts(), [("ticket".to_owned(), 1)]);
        // The device's own choice on optional data wins both ways.
        let mut no = PrivacyConfig {
            optional_data: Some(false),
            ..PrivacyConfig::default()
        };
        assert!(!settings(&no, &on, key).optional);
        no.optional_data = Some(true);
        assert!(settings(&no, &off, key).optional);
        // Either asks for pseudonyms; without a key there are none to make.
        let yes = PrivacyConfig {
            pseudonymize: true,
            ..PrivacyConfig::default()
        };
        assert!(settings(&yes, &off, key).pseudonyms.is_some());
        assert!(settings(&yes, &off, None).pseudonyms.is_none());
        // A tenant pattern that does not compile leaves the defaults working.
        let bad = SensorPolicy {
            redact: vec![RedactionPattern {
                name: "bad".into(),
                regex: "(".into(),
            }],
            ..SensorPolicy::default()
        };
        let (out, _) = settings(&cfg, &bad, key)
            .redactor
            .text(b"x --password=hunter2");
        assert_eq!(out.as_ref(), b"x --password=[REDACTED]");
    }

    #[test]
    fn policy_and_key_survive_a_restart_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), (SensorPolicy::default(), None));
        let p = SensorPolicy {
            version: 7,
            pseudonymize: true,
            ..SensorPolicy::default()
        };
        save(dir.path(), Some(&[9u8; 32]), &p).unwrap();
        assert_eq!(load(dir.path()), (p.clone(), Some([9u8; 32])));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        // A later policy without a key keeps the key.
        save(dir.path(), None, &SensorPolicy::default()).unwrap();
        assert_eq!(load(dir.path()).1, Some([9u8; 32]));
        // A device without the tenant's key makes its own once.
        let other = tempfile::tempdir().unwrap();
        let own = key_or_own(other.path(), None).unwrap();
        assert_eq!(load(other.path()).1, Some(own));
    }

    #[test]
    fn names_and_home_directories_are_replaced_everywhere_they_appear() {
        let p = Pseudonymizer::new([5u8; 32]);
        let alice = p.user("alice", None).into_owned();
        let mut start = Payload::ProcessStart(ProcessStart {
            uid: 1000,
            user_name: "alice".into(),
            argv: vec![b"cat".to_vec(), b"/home/alice/notes.txt".to_vec()],
            command_line: "cat /home/alice/notes.txt".into(),
            cwd: Some(PbPath {
                text: "/home/alice".into(),
                ..Default::default()
            }),
            executable: Some(PbPath {
                text: "/usr/bin/cat".into(),
                ..Default::default()
            }),
            parent: Some(ProcessRef {
                command_line: "bash --rcfile /home/alice/.bashrc".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let changed = pseudonymize(&p, &mut start);
        assert_eq!(
            changed,
            ["user_name", "argv", "command_line", "cwd", "parent"]
        );
        let Payload::ProcessStart(s) = &start else {
            unreachable!()
        };
        assert_eq!(s.user_name, alice);
        assert_eq!(s.command_line, format!("cat /home/{alice}/notes.txt"));
        assert_eq!(s.argv[1], format!("/home/{alice}/notes.txt").into_bytes());
        assert_eq!(s.executable.as_ref().unwrap().text, "/usr/bin/cat");
        // Twice changes nothing more.
        let again = start.clone();
        pseudonymize(&p, &mut start);
        assert_eq!(start, again);
        // root keeps its name; a file path in a home directory does not.
        let mut file = Payload::File(FileEvent {
            user_name: "root".into(),
            process_uid: 0,
            path: Some(PbPath {
                text: "/home/bob/.ssh/authorized_keys".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(pseudonymize(&p, &mut file), ["path"]);
        let mut host = Payload::Host(HostInfo {
            hostname: "laptop-7".into(),
            ..Default::default()
        });
        assert_eq!(pseudonymize(&p, &mut host), ["hostname"]);
        let Payload::Host(h) = host else {
            unreachable!()
        };
        assert!(h.hostname.starts_with("pnh-"));
    }

    #[test]
    fn a_crash_report_is_read_once_with_secrets_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let report = serde_json::json!({
            "time_unix_ns": 5, "sensor_version": "0.1.0", "thread": "pipeline",
            "message": "bad argv: psql --password=hunter2 https://bob:pw1@db/x", "location": "src/x.rs:9",
        });
        std::fs::write(dir.path().join(CRASH_FILE), report.to_string()).unwrap();
        let r = take_crash_report(dir.path(), &Redactor::default()).unwrap();
        assert_eq!(
            r.message,
            "bad argv: psql --password=[REDACTED] https://bob:[REDACTED]@db/x"
        );
        assert_eq!(
            (r.location.as_str(), r.thread.as_str()),
            ("src/x.rs:9", "pipeline")
        );
        assert!(take_crash_report(dir.path(), &Redactor::default()).is_none());
    }
}
