//! Detections become alerts: severity from the rule level, identity from the
//! authenticated device, status `new`. Repeats aggregate: a detection of the
//! same rule on the same device and process tree ([`group`]), received
//! within the window of the alert's last one, grows that alert (count, last
//! seen, the newest detection) unless an analyst closed it ([`Aggregate`]).
//! Analysts change status, assignee and comments ([`Change`]). Alerts are
//! fanned out per tenant to watchers — new ones, and grown ones again — and a
//! tenant's channel only ever carries that tenant's alerts.

use prost::Message;
use tonic::Status;
use vigil_proto::v1::record::Payload;
use vigil_proto::v1::{Alert, AlertComment, AlertStatus, Detection, Severity, UpdateAlertRequest};

pub(crate) fn severity(level: &str) -> Severity {
    match level.to_ascii_lowercase().as_str() {
        "informational" => Severity::Informational,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => Severity::Unspecified,
    }
}

/// Alert ids sort by time: `<received ns, 20 digits>-<random>`.
pub(crate) fn new_alert_id(received_ns: i64) -> Result<String, vigil_store::StoreError> {
    let rand = vigil_store::new_id()?;
    Ok(format!("{:020}-{}", received_ns.max(0), &rand[..12]))
}

pub(crate) fn from_detection(
    id: String,
    d: Detection,
    device_id: &str,
    hostname: &str,
    time_unix_ns: i64,
    received_unix_ns: i64,
) -> Alert {
    Alert {
        id,
        severity: severity(&d.level) as i32,
        status: AlertStatus::New as i32,
        rule_id: d.rule_id.clone(),
        rule_title: d.rule_title.clone(),
        tags: d.tags.clone(),
        device_id: device_id.to_owned(),
        hostname: hostname.to_owned(),
        time_unix_ns,
        process: d.process.clone(),
        detection: Some(d),
        received_unix_ns,
        count: 1,
        first_seen_unix_ns: received_unix_ns,
        last_seen_unix_ns: received_unix_ns,
        ..Alert::default()
    }
}

/// The process tree a detection belongs to, for aggregation: the parent's
/// GUID of a process start it matched (so repeats of a command from one
/// shell are one alert), else that process start's session, else the acting
/// process's own GUID (repeats by one process); empty when none is known
/// (then device and rule alone).
pub(crate) fn tree_key(d: &Detection) -> String {
    let starts = || {
        d.matched.iter().filter_map(|r| match &r.payload {
            Some(Payload::ProcessStart(s)) => Some(s),
            _ => None,
        })
    };
    if let Some(g) = starts()
        .filter_map(|s| s.parent.as_ref())
        .map(|p| p.guid.as_str())
        .find(|g| !g.is_empty())
    {
        return format!("parent:{g}");
    }
    if let Some(s) = starts().map(|s| s.session_id).find(|s| *s != 0) {
        return format!("session:{s}");
    }
    match d.process.as_ref().map(|p| p.guid.as_str()) {
        Some(g) if !g.is_empty() => format!("process:{g}"),
        _ => String::new(),
    }
}

/// What makes repeats one alert: device, rule and process tree, each
/// length-prefixed so no two triples read the same. The store keeps only a
/// keyed digest of it.
pub(crate) fn group(a: &Alert) -> Vec<u8> {
    let tree = a.detection.as_ref().map(tree_key).unwrap_or_default();
    let mut out = Vec::new();
    for part in [a.device_id.as_str(), a.rule_id.as_str(), tree.as_str()] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// What ListAlerts filters find an alert by: the materials of its index
/// postings (the store keeps keyed digests of them).
pub(crate) enum AlertTerm<'a> {
    Severity(i32),
    Status(i32),
    Rule(&'a str),
    Device(&'a str),
    Assignee(&'a str),
    /// The hour and the day of the alert's event time (since the epoch).
    Hour(i64),
    Day(i64),
}

pub(crate) const HOUR_NS: i64 = 3_600 * 1_000_000_000;
pub(crate) const DAY_NS: i64 = 24 * HOUR_NS;

impl AlertTerm<'_> {
    pub(crate) fn material(&self) -> Vec<u8> {
        match self {
            AlertTerm::Severity(n) => format!("severity\0{n}"),
            AlertTerm::Status(n) => format!("status\0{n}"),
            AlertTerm::Rule(r) => format!("rule\0{r}"),
            AlertTerm::Device(d) => format!("device\0{d}"),
            AlertTerm::Assignee(a) => format!("assignee\0{a}"),
            AlertTerm::Hour(h) => format!("hour\0{h}"),
            AlertTerm::Day(d) => format!("day\0{d}"),
        }
        .into_bytes()
    }
}

/// An alert's terms.
pub(crate) fn alert_terms(a: &Alert) -> Vec<Vec<u8>> {
    let mut t = vec![
        AlertTerm::Severity(a.severity).material(),
        AlertTerm::Status(a.status).material(),
        AlertTerm::Rule(&a.rule_id).material(),
        AlertTerm::Device(&a.device_id).material(),
    ];
    if !a.assignee.is_empty() {
        t.push(AlertTerm::Assignee(&a.assignee).material());
    }
    t.push(AlertTerm::Hour(a.time_unix_ns.div_euclid(HOUR_NS)).material());
    t.push(AlertTerm::Day(a.time_unix_ns.div_euclid(DAY_NS)).material());
    t
}

/// The hour and day terms that cover event times `lo..hi` (ns, `hi`
/// exclusive): whole days in the middle, hours at the ends. `None` when the
/// window spans more than `max_days` (then it is not worth a lookup).
pub(crate) fn time_terms(lo: i64, hi: i64, max_days: i64) -> Option<Vec<Vec<u8>>> {
    if hi <= lo {
        return Some(Vec::new());
    }
    let last = hi - 1;
    if (last - lo) / DAY_NS > max_days {
        return None;
    }
    let (h0, h1) = (lo.div_euclid(HOUR_NS), last.div_euclid(HOUR_NS));
    // Days wholly inside the window.
    let d0 = (lo + DAY_NS - 1).div_euclid(DAY_NS);
    let d1 = (last + 1).div_euclid(DAY_NS);
    let mut out = Vec::new();
    if d0 < d1 {
        out.extend((d0..d1).map(|d| AlertTerm::Day(d).material()));
        out.extend((h0..d0 * 24).map(|h| AlertTerm::Hour(h).material()));
        out.extend((d1 * 24..=h1).map(|h| AlertTerm::Hour(h).material()));
    } else {
        out.extend((h0..=h1).map(|h| AlertTerm::Hour(h).material()));
    }
    Some(out)
}

/// The aggregation rule the store applies in the batch's transaction, and
/// what it indexes alerts by (also for analysts' updates).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Aggregate {
    pub(crate) window_ns: i64,
}

impl vigil_store::AlertMerge for Aggregate {
    fn merge(&self, stored: &[u8], new: &[u8]) -> Option<Vec<u8>> {
        let (mut a, n) = (Alert::decode(stored).ok()?, Alert::decode(new).ok()?);
        let open = matches!(
            AlertStatus::try_from(a.status),
            Ok(AlertStatus::New | AlertStatus::InProgress)
        );
        let within = n.received_unix_ns.saturating_sub(a.last_seen_unix_ns) <= self.window_ns;
        if self.window_ns <= 0 || !open || !within {
            return None;
        }
        // The first detection stays the evidence; the newest is kept beside it.
        a.count = a.count.max(1).saturating_add(1);
        a.last_seen_unix_ns = a.last_seen_unix_ns.max(n.received_unix_ns);
        a.latest_detection = n.detection;
        Some(a.encode_to_vec())
    }

    fn terms(&self, alert: &[u8]) -> Vec<Vec<u8>> {
        Alert::decode(alert)
            .map(|a| alert_terms(&a))
            .unwrap_or_default()
    }
}

/// Longest assignee, in characters.
pub(crate) const MAX_ASSIGNEE: usize = 128;
/// Longest comment, in characters.
pub(crate) const MAX_COMMENT: usize = 4000;
/// Most comments an alert holds.
pub(crate) const MAX_COMMENTS: usize = 100;

/// A validated analyst change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Change {
    status: Option<AlertStatus>,
    /// `Some(None)`: unassign.
    assignee: Option<Option<String>>,
    comment: Option<String>,
}

impl Change {
    pub(crate) fn from_request(r: &UpdateAlertRequest) -> Result<Change, Status> {
        let status = match AlertStatus::try_from(r.status) {
            Ok(AlertStatus::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => return Err(Status::invalid_argument("unknown alert status")),
        };
        let assignee = match (&r.assignee, r.clear_assignee) {
            (Some(_), true) => {
                return Err(Status::invalid_argument(
                    "assignee and clear_assignee together",
                ));
            }
            (Some(a), false) => {
                let n = a.chars().count();
                if n == 0 || n > MAX_ASSIGNEE || a.chars().any(char::is_control) {
                    return Err(Status::invalid_argument(format!(
                        "assignee must be 1..{MAX_ASSIGNEE} printable characters"
                    )));
                }
                Some(Some(a.clone()))
            }
            (None, true) => Some(None),
            (None, false) => None,
        };
        let comment = if r.comment.is_empty() {
            None
        } else {
            let n = r.comment.chars().count();
            if n > MAX_COMMENT
                || r.comment
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(Status::invalid_argument(format!(
                    "a comment is 1..{MAX_COMMENT} characters, without control characters but newline and tab"
                )));
            }
            Some(r.comment.clone())
        };
        if status.is_none() && assignee.is_none() && comment.is_none() {
            return Err(Status::invalid_argument(
                "nothing to change: give a status, an assignee or a comment",
            ));
        }
        Ok(Change {
            status,
            assignee,
            comment,
        })
    }

    /// What the audit entry says: never the comment's text, nor the assignee's name.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str_name()));
        }
        match &self.assignee {
            Some(Some(a)) => parts.push(format!("assignee=<{} chars>", a.chars().count())),
            Some(None) => parts.push("assignee=none".into()),
            None => {}
        }
        if let Some(c) = &self.comment {
            parts.push(format!("comment=<{} chars>", c.chars().count()));
        }
        parts.join(" ")
    }

    /// Applies the change to `a`, by `author` at `now`.
    pub(crate) fn apply(&self, a: &mut Alert, author: &str, now: i64) -> Result<(), Status> {
        if let Some(c) = &self.comment {
            if a.comments.len() >= MAX_COMMENTS {
                return Err(Status::failed_precondition(format!(
                    "the alert holds the most comments there may be ({MAX_COMMENTS})"
                )));
            }
            a.comments.push(AlertComment {
                author: author.to_owned(),
                time_unix_ns: now,
                text: c.clone(),
            });
        }
        if let Some(s) = self.status {
            a.status = s as i32;
        }
        if let Some(x) = &self.assignee {
            a.assignee = x.clone().unwrap_or_default();
        }
        a.updated_unix_ns = now;
        a.updated_by = author.to_owned();
        Ok(())
    }
}

/// MITRE ATT&CK ids a rule's Sigma tags name: techniques
/// (`attack.t1003.008` → `T1003.008`) and tactics (`attack.credential_access`
/// → `TA0006`), in tag order, once each.
pub(crate) fn attack_ids(tags: &[String]) -> Vec<String> {
    const TACTICS: [(&str, &str); 14] = [
        ("reconnaissance", "TA0043"),
        ("resource_development", "TA0042"),
        ("initial_access", "TA0001"),
        ("execution", "TA0002"),
        ("persistence", "TA0003"),
        ("privilege_escalation", "TA0004"),
        ("defense_evasion", "TA0005"),
        ("credential_access", "TA0006"),
        ("discovery", "TA0007"),
        ("lateral_movement", "TA0008"),
        ("collection", "TA0009"),
        ("command_and_control", "TA0011"),
        ("exfiltration", "TA0010"),
        ("impact", "TA0040"),
    ];
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let Some(rest) = t
            .to_ascii_lowercase()
            .strip_prefix("attack.")
            .map(str::to_owned)
        else {
            continue;
        };
        let id = if rest.starts_with('t')
            && rest[1..]
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(rest.to_ascii_uppercase())
        } else {
            let name = rest.replace('-', "_");
            TACTICS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, id)| (*id).to_owned())
        };
        if let Some(id) = id
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

/// Per-tenant broadcast of new and grown alerts.
pub(crate) type AlertBus = crate::live::Bus<Alert>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(m: &[u8]) -> (String, i64) {
        let s = String::from_utf8(m.to_vec()).unwrap();
        let (k, v) = s.split_once('\0').unwrap();
        (k.to_owned(), v.parse().unwrap())
    }

    /// Every hour from `lo` to `hi` (exclusive) is covered exactly once.
    fn covered_hours(terms: &[Vec<u8>]) -> Vec<i64> {
        let mut hours: Vec<i64> = terms
            .iter()
            .flat_map(|m| match parse(m) {
                (k, d) if k == "day" => (d * 24..d * 24 + 24).collect::<Vec<_>>(),
                (_, h) => vec![h],
            })
            .collect();
        hours.sort();
        hours
    }

    #[test]
    fn time_windows_are_covered_by_days_inside_and_hours_at_the_ends() {
        let t = 1_765_000_000 * 1_000_000_000i64;
        for (lo, hi) in [
            (t, t + 1),
            (t, t + HOUR_NS),
            (t + 5, t + 3 * DAY_NS + 7 * HOUR_NS),
            (t - 40 * DAY_NS, t),
            (-HOUR_NS * 3, HOUR_NS * 2),
        ] {
            let terms = time_terms(lo, hi, 400).unwrap();
            let want: Vec<i64> = (lo.div_euclid(HOUR_NS)..=(hi - 1).div_euclid(HOUR_NS)).collect();
            assert_eq!(covered_hours(&terms), want, "{lo}..{hi}");
            assert!(terms.len() <= 48 + 42, "{}", terms.len());
        }
        assert!(time_terms(t, t, 400).unwrap().is_empty());
        assert!(time_terms(t, t + 500 * DAY_NS, 400).is_none());
        // An alert's own terms name its hour and day.
        let a = Alert {
            time_unix_ns: t,
            ..Default::default()
        };
        let terms = alert_terms(&a);
        assert!(terms.contains(&AlertTerm::Hour(t / HOUR_NS).material()));
        assert!(terms.contains(&AlertTerm::Day(t / DAY_NS).material()));
    }

    #[test]
    fn attack_ids_come_from_technique_and_tactic_tags() {
        let tags: Vec<String> = [
            "attack.credential_access",
            "attack.t1003.008",
            "attack.T1059",
            "attack.t1003.008",
            "attack.defense-evasion",
            "cve.2021-1234",
            "attack.g0032",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            attack_ids(&tags),
            ["TA0006", "T1003.008", "T1059", "TA0005"]
        );
    }
}
