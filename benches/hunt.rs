//! Investigation at scale: the real `vigil-server` binary (child process, data
//! on the root disk, as shipped but for alert aggregation turned off so every
//! detection stays its own alert) is loaded over mutual TLS with DEVICES
//! enrolled devices × PER_DEVICE records each (default 100 × 100,000 = 10
//! million), one in DETECT_EVERY (10) a detection (1 million alerts). Records
//! are the realistic mix of `support/records.rs`, each device with its own
//! binaries' hashes, spread evenly over SPAN_DAYS (7) of event time.
//!
//! Then, over one TLS channel with an admin token, CALLS (200) sequential
//! calls of each, every one with a value drawn at random from what was
//! stored (not one hot value): ListAlerts (a page of 100) with no filter and
//! with each filter; SearchEvents for one device and one hour; GetProcessTree
//! of a process; FilePrevalence of a hash and of a path. p50/p90/p99/max.
//! And publish → active: a device holds WatchRules open as the sensor does;
//! the time from PublishRules returning to the set arriving on that stream
//! plus compiling it as the sensor does (RULE_RUNS, 20).
//!
//! `cargo bench --bench hunt`. Loading takes minutes and about 12 GB of disk
//! (checked first); KEEP=1 keeps the data directory and prints where.

use anyhow::{Context, Result, ensure};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Identity};
use vigil_proto::v1::{
    AlertStatus, EnrollRequest, FilePrevalenceRequest, GetProcessTreeRequest, ListAlertsRequest,
    PublishRulesRequest, RecordBatch, RuleFile, RulesRunning, SearchEventsRequest, Severity,
    UpdateAlertRequest, alerts_client::AlertsClient, hunt_client::HuntClient,
    ingest_client::IngestClient, record::Payload, rules_client::RulesClient,
};

mod support;
use support::records::Records;
use support::server::{ServerProcess, server_bin};
use support::{env_or, with_token};

/// SplitMix64: the bench's own draws, apart from the record generator's.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

/// Makes a ListAlerts request from a draw.
type MakeRequest = Box<dyn Fn(&mut Draw) -> ListAlertsRequest>;

const HOUR: i64 = 3_600 * 1_000_000_000;
const T0: i64 = 1_765_000_000_000_000_000;

struct Device {
    id: String,
    identity: Identity,
}

/// What the load kept to ask about later.
#[derive(Default)]
struct Samples {
    guids: Vec<String>,
    hashes: Vec<String>,
    rules: Vec<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Streams one device's records (generated as they go) and waits for the last ack.
async fn load_device(
    ch: Channel,
    n: u64,
    records: u64,
    detect_every: u64,
    span_ns: i64,
) -> Result<Samples> {
    let mut source = Records::new(n);
    let step = span_ns / records.max(1) as i64;
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordBatch>(8);
    let mut acks = IngestClient::new(ch)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let producer = tokio::spawn(async move {
        let mut samples = Samples::default();
        let mut batch = Vec::with_capacity(1000);
        let mut id = 0;
        for i in 0..records {
            let mut r = if (i + n).is_multiple_of(detect_every) {
                source.next_detection()
            } else {
                source.next_record()
            };
            r.time_unix_ns = T0 + i as i64 * step + (r.time_unix_ns % step.max(1));
            // A detection's alert takes its time from the matched event.
            if let Some(Payload::Detection(d)) = &mut r.payload {
                for m in &mut d.matched {
                    m.time_unix_ns = r.time_unix_ns;
                }
            }
            match &r.payload {
                Some(Payload::ProcessStart(s)) if i % 997 == 0 => {
                    samples.guids.push(s.guid.clone());
                    if let Some(h) = &s.executable_hashes {
                        samples.hashes.push(hex(&h.sha256));
                    }
                }
                Some(Payload::Detection(d)) if samples.rules.len() < 64 => {
                    samples.rules.push(d.rule_id.clone())
                }
                _ => {}
            }
            batch.push(r);
            if batch.len() == 1000 || i + 1 == records {
                id += 1;
                let b = RecordBatch {
                    batch_id: id,
                    records: std::mem::take(&mut batch),
                };
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        }
        samples
    });
    let mut stored = 0;
    while stored < records {
        let ack = acks
            .message()
            .await?
            .context("stream ended before the last ack")?;
        stored = ack.stored_through;
    }
    Ok(producer.await?)
}

struct Stat {
    name: String,
    lat: Vec<Duration>,
    results: u64,
}

impl Stat {
    fn line(&mut self) -> String {
        self.lat.sort();
        let p = |q: f64| {
            let i = ((self.lat.len() - 1) as f64 * q).round() as usize;
            self.lat[i].as_secs_f64() * 1e3
        };
        format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            self.name,
            p(0.5),
            p(0.9),
            p(0.99),
            p(1.0),
            self.results as f64 / self.lat.len() as f64
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let devices: u64 = env_or("DEVICES", 100);
    let per_device: u64 = env_or("PER_DEVICE", 100_000);
    let detect_every: u64 = env_or("DETECT_EVERY", 10).max(1);
    let span_days: i64 = env_or("SPAN_DAYS", 7);
    let calls: usize = env_or("CALLS", 200).max(5);
    let rule_runs: usize = env_or("RULE_RUNS", 20).max(1);
    let streams: usize = env_or("STREAMS", 4).max(1);
    let Some(bin) = server_bin("hunt")? else {
        return Ok(());
    };
    let mut server = ServerProcess::configure("vigil-hunt", &bin)?;
    let free = nix::sys::statvfs::statvfs(server.dir.path())?;
    let need = devices * per_device * 1_300;
    let have = free.blocks_available() * free.fragment_size();
    ensure!(
        have > need,
        "needs about {} GB free where the bench writes, has {}",
        need >> 30,
        have >> 30
    );
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&server.config)
        .and_then(|mut f| {
            std::io::Write::write_all(
                &mut f,
                format!("alert_aggregation_seconds = 0\nmetrics_listen = \"{metrics}\"\n")
                    .as_bytes(),
            )
        })?;
    let admin = server.create_tenant("bench")?;
    let enroll = server.enrollment_token("bench")?;
    server.start("warn")?;
    let ch = server.channel(None).await?;
    let mut devs = Vec::new();
    for i in 0..devices {
        let (key, csr) = vigil_pki::device_key_and_csr(&format!("bench-{i}"))?;
        let r = IngestClient::new(ch.clone())
            .enroll(EnrollRequest {
                enrollment_token: enroll.clone(),
                csr_pem: csr,
                host: None,
            })
            .await?
            .into_inner();
        devs.push(Device {
            id: r.device_id,
            identity: Identity::from_pem(r.certificate_pem, key),
        });
    }

    // Load, STREAMS devices at a time.
    let span = span_days * 24 * HOUR;
    let started = Instant::now();
    let mut samples = Samples::default();
    let mut loaded = 0;
    for (g, group) in devs.chunks(streams).enumerate() {
        let mut tasks = Vec::new();
        for (j, d) in group.iter().enumerate() {
            let dch = server.channel(Some(d.identity.clone())).await?;
            let n = (g * streams + j) as u64;
            tasks.push(tokio::spawn(load_device(
                dch,
                n,
                per_device,
                detect_every,
                span,
            )));
        }
        for t in tasks {
            let s = t.await??;
            samples.guids.extend(s.guids);
            samples.hashes.extend(s.hashes);
            samples.rules.extend(s.rules);
        }
        loaded += group.len();
        eprintln!(
            "loaded {loaded} of {devices} devices, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let total = devices * per_device;
    let load = started.elapsed();
    // The indexer runs after ingest: wait until it has caught up (queries
    // would open the chunks it has not reached).
    let mut backlog_at_end = None;
    let catch_up = loop {
        let b = index_backlog(metrics).unwrap_or(u64::MAX);
        backlog_at_end.get_or_insert(b);
        if b == 0 {
            break started.elapsed() - load;
        }
        ensure!(
            started.elapsed() - load < Duration::from_secs(3600),
            "the indexer did not catch up within an hour ({b} chunks left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    samples.rules.sort();
    samples.rules.dedup();
    ensure!(
        !samples.guids.is_empty() && !samples.hashes.is_empty(),
        "no samples"
    );

    let alerts = AlertsClient::new(ch.clone());
    let hunt = HuntClient::new(ch.clone());
    let mut draw = Draw(42);
    // 100 alerts assigned, for the assignee filter.
    let page = alerts
        .clone()
        .list_alerts(with_token(
            ListAlertsRequest {
                page_size: 1000,
                ..Default::default()
            },
            &admin,
        ))
        .await?
        .into_inner();
    for a in page.alerts.iter().step_by(10) {
        alerts
            .clone()
            .update_alert(with_token(
                UpdateAlertRequest {
                    id: a.id.clone(),
                    assignee: Some("alice".into()),
                    status: AlertStatus::InProgress as i32,
                    ..Default::default()
                },
                &admin,
            ))
            .await?;
    }

    let mut stats: Vec<Stat> = Vec::new();
    // ListAlerts, each filter with values drawn from what was stored.
    let filters: Vec<(&str, MakeRequest)> = vec![
        (
            "ListAlerts, no filter",
            Box::new(|_| ListAlertsRequest::default()),
        ),
        (
            "ListAlerts, min severity high",
            Box::new(|_| ListAlertsRequest {
                min_severity: Severity::High as i32,
                ..Default::default()
            }),
        ),
        (
            "ListAlerts, status in progress (100 of 1M)",
            Box::new(|_| ListAlertsRequest {
                status: AlertStatus::InProgress as i32,
                ..Default::default()
            }),
        ),
        ("ListAlerts, a rule", {
            let rules = samples.rules.clone();
            Box::new(move |d: &mut Draw| ListAlertsRequest {
                rule_id: d.pick(&rules).clone(),
                ..Default::default()
            })
        }),
        ("ListAlerts, a device", {
            let ids: Vec<String> = devs.iter().map(|d| d.id.clone()).collect();
            Box::new(move |d: &mut Draw| ListAlertsRequest {
                device_id: d.pick(&ids).clone(),
                ..Default::default()
            })
        }),
        (
            "ListAlerts, assignee (100 of 1M)",
            Box::new(|_| ListAlertsRequest {
                assignee: "alice".into(),
                ..Default::default()
            }),
        ),
        (
            "ListAlerts, since a random hour",
            Box::new(move |d: &mut Draw| ListAlertsRequest {
                since_unix_ns: T0 + (d.next() % (span_days as u64 * 24)) as i64 * HOUR,
                ..Default::default()
            }),
        ),
        (
            "ListAlerts, a random hour (since + until)",
            Box::new(move |d: &mut Draw| {
                let h = T0 + (d.next() % (span_days as u64 * 24)) as i64 * HOUR;
                ListAlertsRequest {
                    since_unix_ns: h,
                    until_unix_ns: h + HOUR,
                    ..Default::default()
                }
            }),
        ),
    ];
    for (name, make) in &filters {
        let mut s = Stat {
            name: (*name).into(),
            lat: Vec::new(),
            results: 0,
        };
        for i in 0..calls + 10 {
            let mut r = make(&mut draw);
            r.page_size = 100;
            let t = Instant::now();
            let got = alerts
                .clone()
                .list_alerts(with_token(r, &admin))
                .await?
                .into_inner();
            if i >= 10 {
                s.lat.push(t.elapsed());
                s.results += got.alerts.len() as u64;
            }
        }
        stats.push(s);
    }
    // SearchEvents: one device, one hour.
    let mut s = Stat {
        name: "SearchEvents, one device, one hour".into(),
        lat: Vec::new(),
        results: 0,
    };
    for i in 0..calls + 10 {
        let d = draw.pick(&devs).id.clone();
        let h = T0 + (draw.next() % (span_days as u64 * 24)) as i64 * HOUR;
        let t = Instant::now();
        let mut st = hunt
            .clone()
            .search_events(with_token(
                SearchEventsRequest {
                    device_id: d,
                    since_unix_ns: h,
                    until_unix_ns: h + HOUR - 1,
                    ..Default::default()
                },
                &admin,
            ))
            .await?
            .into_inner();
        let mut n = 0;
        while let Some(p) = st.next().await {
            n += p?.records.len() as u64;
        }
        if i >= 10 {
            s.lat.push(t.elapsed());
            s.results += n;
        }
    }
    stats.push(s);
    let mut s = Stat {
        name: "GetProcessTree".into(),
        lat: Vec::new(),
        results: 0,
    };
    for i in 0..calls + 10 {
        let g = draw.pick(&samples.guids).clone();
        let t = Instant::now();
        let tree = hunt
            .clone()
            .get_process_tree(with_token(
                GetProcessTreeRequest {
                    guid: g,
                    max_events: 0,
                },
                &admin,
            ))
            .await?
            .into_inner();
        if i >= 10 {
            s.lat.push(t.elapsed());
            s.results += 1 + tree.ancestors.len() as u64 + tree.children.len() as u64;
        }
    }
    stats.push(s);
    for (name, by_path) in [
        ("FilePrevalence, a hash", false),
        ("FilePrevalence, a path (/usr/bin/bash)", true),
    ] {
        let mut s = Stat {
            name: name.into(),
            lat: Vec::new(),
            results: 0,
        };
        for i in 0..calls + 10 {
            let q = if by_path {
                "/usr/bin/bash".to_owned()
            } else {
                draw.pick(&samples.hashes).clone()
            };
            let t = Instant::now();
            let p = hunt
                .clone()
                .file_prevalence(with_token(
                    FilePrevalenceRequest { hash_or_path: q },
                    &admin,
                ))
                .await?
                .into_inner();
            if i >= 10 {
                s.lat.push(t.elapsed());
                s.results += p.devices.len() as u64;
            }
        }
        stats.push(s);
    }

    // Publish → active on a connected sensor.
    let rules_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let files: Vec<RuleFile> = support::walk(&rules_dir)
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".yml") && !name.ends_with(vigil_rules::testing::TEST_SUFFIX)
        })
        .map(|p| {
            Ok(RuleFile {
                path: p.display().to_string(),
                text: std::fs::read_to_string(&p)?,
            })
        })
        .collect::<Result<_>>()?;
    let sensor = server.channel(Some(devs[0].identity.clone())).await?;
    let (stx, srx) = tokio::sync::mpsc::channel::<RulesRunning>(4);
    stx.send(RulesRunning::default()).await?;
    let mut updates = RulesClient::new(sensor)
        .watch_rules(tokio_stream::wrappers::ReceiverStream::new(srx))
        .await?
        .into_inner();
    let mut s = Stat {
        name: format!("publish → active on a sensor ({} rule files)", files.len()),
        lat: Vec::new(),
        results: 0,
    };
    for _ in 0..rule_runs {
        RulesClient::new(ch.clone())
            .publish_rules(with_token(
                PublishRulesRequest {
                    files: files.clone(),
                },
                &admin,
            ))
            .await?;
        let t = Instant::now();
        let u = updates.message().await?.context("rule stream ended")?;
        let text = std::str::from_utf8(&u.bundle)?;
        let (set, report) =
            vigil_rules::RuleSet::from_bundle(std::path::Path::new("published"), text);
        ensure!(report.rejected.is_empty(), "{:?}", report.rejected);
        s.lat.push(t.elapsed());
        s.results += set.len() as u64;
        stx.send(RulesRunning {
            version: format!("v{}", u.version),
            published_version: u.version,
        })
        .await?;
    }
    stats.push(s);

    let store = dir_bytes(&server.dir.path().join("server/store"));
    println!(
        "hunt bench: {devices} devices × {per_device} records = {total} records, 1 in {detect_every} a detection \
         ({} alerts), {span_days} days of event time; loaded in {:.0} s ({:.0} records/s); the indexer \
         {} chunks behind when the load ended, caught up {:.1} s later; store {:.1} GB; load average {}",
        total / detect_every,
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        backlog_at_end.unwrap_or(0),
        catch_up.as_secs_f64(),
        store as f64 / 1e9,
        support::load_average()
    );
    println!(
        "\n| call ({calls} calls, random values) | p50 ms | p90 ms | p99 ms | max ms | results per call |"
    );
    println!("|---|---|---|---|---|---|");
    for s in &mut stats {
        println!("{}", s.line());
    }
    if std::env::var_os("KEEP").is_some() {
        let dir = std::mem::replace(&mut server.dir, tempfile::tempdir()?);
        println!("kept: {}", dir.keep().display());
    }
    server.stop()?;
    Ok(())
}

/// The server's `vigil_index_backlog_chunks` for the bench tenant.
fn index_backlog(addr: std::net::SocketAddr) -> Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let line = body
        .lines()
        .find(|l| l.starts_with("vigil_index_backlog_chunks{") && l.contains("\"bench\""))
        .context("no backlog metric yet")?;
    let v: f64 = line.rsplit(' ').next().context("metric value")?.parse()?;
    Ok(v as u64)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    support::walk(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
