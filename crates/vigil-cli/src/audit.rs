//! `vigil audit ...`: read and verify the hash-chained audit log (auditors
//! and admins: their tenant's; the operator: the deployment's).

use crate::client::{Api, rpc};
use crate::display::{Table, print, rfc3339};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use vigil_proto::v1::{
    AuditEntry, ListAuditEntriesRequest, VerifyAuditLogRequest, VerifyAuditLogResponse,
};

/// The most entries the server returns in one page.
const PAGE_MAX: u32 = 1000;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first, following pages until --limit or the end.
    List {
        /// Only entries after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// At most this many entries (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only calls of this method (e.g. `CreateApiToken`).
        #[arg(long, value_name = "M")]
        method: Option<String>,
        /// Only calls by this actor (a token's name, a device id, or `anonymous`).
        #[arg(long, value_name = "A")]
        actor: Option<String>,
        /// Only refused calls.
        #[arg(long)]
        refused: bool,
    },
    /// Re-read the whole log on the server and check every link of its chain; exit status 1 if broken.
    Verify,
}

/// Runs the command; `Ok(false)` when the log failed verification.
pub async fn run(api: &Api, cmd: AuditCommand, json: bool) -> Result<bool> {
    let mut audit = api.audit();
    match cmd {
        AuditCommand::List {
            mut after,
            limit,
            method,
            actor,
            refused,
        } => {
            let mut rows = Vec::new();
            let mut got = 0usize;
            while limit.is_none_or(|l| got < l) {
                let r = audit
                    .list_audit_entries(ListAuditEntriesRequest {
                        after_seq: after,
                        limit: page_limit(limit, got),
                        method: method.clone().unwrap_or_default(),
                        actor: actor.clone().unwrap_or_default(),
                        refused_only: refused,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                for e in r.entries {
                    if limit.is_some_and(|l| got >= l) {
                        break;
                    }
                    got += 1;
                    if json {
                        out!("{}", to_json(&e));
                    } else {
                        rows.push(e);
                    }
                }
                match next_after(after, r.next_after_seq) {
                    Some(n) => after = n,
                    None => break,
                }
            }
            if !json {
                if rows.is_empty() {
                    eprintln!("no audit entries");
                } else {
                    print(&table(&rows).lines())?;
                }
            }
            Ok(true)
        }
        AuditCommand::Verify => {
            let r = audit
                .verify_audit_log(VerifyAuditLogRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                out!("{}", verify_json(&r));
            } else {
                out!("{}", verify_line(&r));
            }
            Ok(r.ok)
        }
    }
}

/// Entries to ask for in one page: what `--limit` leaves, at most a full page.
pub fn page_limit(limit: Option<usize>, got: usize) -> u32 {
    match limit {
        None => PAGE_MAX,
        Some(l) => u32::try_from(l.saturating_sub(got))
            .unwrap_or(PAGE_MAX)
            .min(PAGE_MAX),
    }
}

/// The `after_seq` of the next page, or `None` at the end: the server said
/// 0, or (a server bug) did not move forward, which would loop forever.
pub fn next_after(after: u64, next: u64) -> Option<u64> {
    (next != 0 && next > after).then_some(next)
}

/// The `audit list` table.
pub fn table(entries: &[AuditEntry]) -> Table {
    let mut t = Table::new(&[
        "seq", "time", "actor", "role", "tenant", "method", "result", "summary",
    ]);
    for e in entries {
        t.row(vec![
            e.seq.to_string(),
            rfc3339(e.time_unix_ns),
            e.actor.clone(),
            role(&e.role),
            if e.tenant_id.is_empty() {
                "-".into()
            } else {
                e.tenant_id.clone()
            },
            e.method.clone(),
            e.result.clone(),
            e.summary.clone(),
        ]);
    }
    t
}

/// A role as the command line writes it, whatever spelling the log uses;
/// an unknown one as it stands, and none as `-`.
fn role(r: &str) -> String {
    if r.is_empty() {
        return "-".into();
    }
    crate::role::parse(r).map_or_else(|_| r.to_owned(), |r| crate::role::name(r).into())
}

pub fn to_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "time": rfc3339(e.time_unix_ns),
        "time_unix_ns": e.time_unix_ns,
        "actor": e.actor,
        "actor_id": e.actor_id,
        "role": e.role,
        "tenant_id": e.tenant_id,
        "method": e.method,
        "summary": e.summary,
        "result": e.result,
        "peer": e.peer,
        "prev": e.prev,
        "mac": e.mac,
    })
}

/// `audit log OK: N entries`, or `audit log FAILED at line L: REASON`.
pub fn verify_line(r: &VerifyAuditLogResponse) -> String {
    if r.ok {
        format!("audit log OK: {} entries", r.entries)
    } else {
        format!(
            "audit log FAILED at line {}: {}",
            r.first_bad_line,
            crate::display::clean(&r.reason)
        )
    }
}

pub fn verify_json(r: &VerifyAuditLogResponse) -> Value {
    json!({
        "ok": r.ok,
        "entries": r.entries,
        "first_bad_line": r.first_bad_line,
        "reason": r.reason,
        "log": r.log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 7,
            time_unix_ns: 1_700_000_000_000_000_000,
            actor: "jane".into(),
            actor_id: "tok1".into(),
            role: "read_only".into(),
            tenant_id: "acme".into(),
            method: "CreateApiToken".into(),
            summary: "role=analyst name=bob".into(),
            result: "permission denied: admin role required".into(),
            peer: "10.0.0.5:5512".into(),
            prev: "aa".into(),
            mac: "bb".into(),
        }
    }

    #[test]
    fn the_list_table_has_the_documented_columns() {
        let t = table(&[entry()]);
        assert_eq!(
            t.header(),
            [
                "seq", "time", "actor", "role", "tenant", "method", "result", "summary"
            ]
        );
        assert_eq!(
            t.rows()[0],
            [
                "7",
                "2023-11-14T22:13:20Z",
                "jane",
                "read-only",
                "acme",
                "CreateApiToken",
                "permission denied: admin role required",
                "role=analyst name=bob"
            ]
        );
    }

    #[test]
    fn roles_in_the_log_are_shown_in_the_command_line_spelling() {
        assert_eq!(role("ROLE_OPERATOR"), "operator");
        assert_eq!(role("admin"), "admin");
        assert_eq!(role("device"), "device");
        assert_eq!(role(""), "-");
    }

    #[test]
    fn json_keeps_every_field() {
        let v = to_json(&entry());
        assert_eq!(v.as_object().unwrap().len(), 13);
        assert_eq!(v["seq"], 7);
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["mac"], "bb");
    }

    #[test]
    fn paging_stops_at_the_limit_the_end_or_a_server_that_does_not_advance() {
        assert_eq!(page_limit(None, 5000), 1000);
        assert_eq!(page_limit(Some(250), 0), 250);
        assert_eq!(page_limit(Some(2500), 2000), 500);
        assert_eq!(page_limit(Some(10), 10), 0);
        assert_eq!(page_limit(Some(usize::MAX), 0), 1000);
        assert_eq!(next_after(0, 100), Some(100));
        assert_eq!(next_after(100, 0), None);
        assert_eq!(next_after(100, 100), None);
        assert_eq!(next_after(100, 50), None);
    }

    #[test]
    fn verify_output() {
        let ok = VerifyAuditLogResponse {
            ok: true,
            entries: 1204,
            log: "acme".into(),
            ..Default::default()
        };
        assert_eq!(verify_line(&ok), "audit log OK: 1204 entries");
        let bad = VerifyAuditLogResponse {
            ok: false,
            entries: 1204,
            first_bad_line: 17,
            reason: "mac mismatch".into(),
            log: "acme".into(),
        };
        assert_eq!(
            verify_line(&bad),
            "audit log FAILED at line 17: mac mismatch"
        );
        assert_eq!(
            verify_json(&bad),
            json!({"ok": false, "entries": 1204, "first_bad_line": 17, "reason": "mac mismatch", "log": "acme"})
        );
    }
}
