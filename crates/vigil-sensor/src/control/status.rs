//! `status`: the running sensor's state as the control socket reports it,
//! and as people read it.

use super::{Context, PIPELINE_WAIT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The sensor's state. Serialized as is for `status --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether a sensor answered (false: what its data directory tells).
    pub running: bool,
    pub sensor_version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub rss_bytes: u64,
    pub data_dir: String,
    /// `connected` (to a server) or `standalone` (JSON lines, no server).
    pub mode: String,
    /// Sources running, and those that fell back or are off, with why.
    pub sources: Vec<String>,
    pub fallbacks: Vec<String>,
    pub rules: RulesStatus,
    pub spool: Option<SpoolStatus>,
    /// Records and events lost since start, by reason.
    pub losses: BTreeMap<String, u64>,
    /// Secrets replaced in command lines since start, by rule.
    pub redacted: BTreeMap<String, u64>,
    pub connection: Option<Connection>,
    /// Set when the pipeline did not describe itself in time: sources,
    /// rules, losses and redactions are then as it last did (or empty).
    pub pipeline_stale: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesStatus {
    /// Identifies the rule set running (BLAKE3 of its rule ids).
    pub version: String,
    /// Rules and correlations running.
    pub count: u32,
    /// The version published on the server that runs (0: local rules).
    pub published_version: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStatus {
    pub records: u64,
    pub bytes: u64,
    /// 0 when not known (read from a stopped sensor's data directory).
    pub capacity_bytes: u64,
    /// Records evicted unsent because the spool was full, since it was made.
    pub evicted: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `connected`, `connecting` (retrying, see `last_error`), or `unknown`.
    pub state: String,
    pub endpoint: String,
    pub device_id: String,
    pub tenant_id: String,
    pub sessions_opened: u64,
    pub last_error: Option<String>,
    /// When the server last acknowledged records (Unix ns; 0: not since start).
    pub last_ack_unix_ns: i64,
    /// The sequence number the server then held records through.
    pub acked_through: u64,
}

/// This process's resident memory.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    pages.saturating_mul(page)
}

/// The running sensor's state: the pipeline's own account (asked for, and
/// given between two events), the spool's, the uplink's.
pub(crate) async fn gather(ctx: &Context) -> Status {
    let (snapshot, fresh) = ctx.hooks.ask(PIPELINE_WAIT).await;
    let snapshot = snapshot.unwrap_or_default();
    let mut losses = snapshot.losses;
    let spool = match &ctx.spool {
        Some((spool, capacity)) => {
            let sp = std::sync::Arc::clone(spool);
            match tokio::task::spawn_blocking(move || sp.stats()).await {
                Ok(Ok(st)) => {
                    crate::pipeline::spool_losses(&st, &mut losses);
                    Some(SpoolStatus {
                        records: st.records,
                        bytes: st.bytes,
                        capacity_bytes: *capacity,
                        evicted: st.dropped,
                    })
                }
                _ => None,
            }
        }
        None => None,
    };
    let connection = ctx.uplink.as_ref().map(|u| {
        let u = u.borrow().clone();
        let (device_id, tenant_id) = ctx.device.clone().unwrap_or_default();
        Connection {
            state: if u.connected {
                "connected"
            } else {
                "connecting"
            }
            .into(),
            endpoint: ctx.endpoint.clone().unwrap_or_default(),
            device_id,
            tenant_id,
            sessions_opened: u.sessions_opened,
            last_error: u.last_error,
            last_ack_unix_ns: u.last_ack_unix_ns,
            acked_through: u.acked_through,
        }
    });
    Status {
        running: true,
        sensor_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_seconds: ctx.hooks.uptime().as_secs(),
        rss_bytes: rss_bytes(),
        data_dir: ctx.data_dir.display().to_string(),
        mode: if ctx.spool.is_some() {
            "connected"
        } else {
            "standalone"
        }
        .into(),
        sources: snapshot.sources,
        fallbacks: snapshot.degraded,
        rules: RulesStatus {
            version: snapshot.rules_version,
            count: snapshot.rules_loaded,
            published_version: ctx.published.get(),
        },
        spool,
        losses,
        redacted: snapshot.redacted,
        connection,
        pipeline_stale: !fresh,
    }
}

/// `3 h 2 min`, `4 min 10 s`, `12 s`.
pub(crate) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// Bytes in binary units: `512 B`, `3.4 KiB`, `512.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Status {
    /// The status as people read it, one fact a line.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: &str| {
            out.push_str(&format!("{label:<12}{text}\n"));
        };
        if self.running {
            line(
                "Sensor",
                &format!(
                    "vigil-sensor {}, running ({}) for {} (pid {}); resident memory {}",
                    self.sensor_version,
                    self.mode,
                    duration(self.uptime_seconds),
                    self.pid,
                    bytes(self.rss_bytes)
                ),
            );
        } else {
            line("Sensor", "not running");
        }
        line("Data", &self.data_dir);
        if let Some(c) = &self.connection {
            if !c.device_id.is_empty() {
                line(
                    "Device",
                    &format!("{} (tenant {})", c.device_id, c.tenant_id),
                );
            }
            if self.running {
                let mut s = format!("{}: {}", c.endpoint, c.state);
                s.push_str(&format!(
                    " ({} sessions opened since start)",
                    c.sessions_opened
                ));
                line("Server", &s);
                if c.last_ack_unix_ns != 0 {
                    line(
                        "",
                        &format!(
                            "last acknowledgement {} (records through {})",
                            crate::viewer::rfc3339(c.last_ack_unix_ns),
                            c.acked_through
                        ),
                    );
                } else {
                    line("", "no acknowledgement since start");
                }
                if let Some(e) = &c.last_error {
                    line("", &format!("last error: {e}"));
                }
            } else if !c.endpoint.is_empty() {
                line("Server", &c.endpoint);
            }
        } else if !self.running {
            line("Device", "not enrolled (no identity in the data directory)");
        }
        if self.running {
            for (i, s) in self.sources.iter().enumerate() {
                line(if i == 0 { "Sources" } else { "" }, s);
            }
            if self.sources.is_empty() {
                line("Sources", "none");
            }
            for (i, s) in self.fallbacks.iter().enumerate() {
                line(if i == 0 { "Fallbacks" } else { "" }, s);
            }
            if self.fallbacks.is_empty() {
                line("Fallbacks", "none");
            }
            let published = if self.rules.published_version == 0 {
                "local rules".to_owned()
            } else {
                format!(
                    "published version {} from the server",
                    self.rules.published_version
                )
            };
            line(
                "Rules",
                &format!(
                    "{} rules and correlations, version {} ({published})",
                    self.rules.count, self.rules.version
                ),
            );
        }
        match &self.spool {
            Some(s) if s.capacity_bytes > 0 => line(
                "Spool",
                &format!(
                    "{} records, {} of {}",
                    s.records,
                    bytes(s.bytes),
                    bytes(s.capacity_bytes)
                ),
            ),
            Some(s) => line(
                "Spool",
                &format!("{} records, {}", s.records, bytes(s.bytes)),
            ),
            None if self.running => line("Spool", "none (standalone: records go to JSON lines)"),
            None => {}
        }
        if self.running {
            line("Losses", &counts(&self.losses));
            line("Redactions", &counts(&self.redacted));
            if self.pipeline_stale {
                line(
                    "",
                    "(the pipeline did not answer in time: sources, rules, losses and redactions are as it last said)",
                );
            }
        }
        out
    }
}
