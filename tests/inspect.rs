//! The viewer of what leaves the machine (issue 15, item 4), through a real
//! sensor, its spool and a real server over mutual TLS:
//!
//! - every record `vigil-sensor inspect --follow --json` printed while the
//!   sensor ran is, byte for byte, a record the server stored;
//! - `inspect` on a stopped sensor lists what its spool still holds and
//!   changes nothing; `status` says the sensor is not running (exit code 3)
//!   and what its data directory tells; and what was listed, even a record
//!   a prost round trip would change, is what the server then stores.
//!
//! With root, the first runs the kernel sensor and a real process whose
//! command line holds a secret; without, a sensor with no kernel source,
//! whose records come from its own pipeline (host details at a rule
//! reload), and says so.

#![allow(clippy::unwrap_used)]

mod support;

use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{TestServer, sensor_config};
use vigil_proto::v1::{Record, SensorHealth, record::Payload};
use vigil_sensor::viewer::{self, InspectOptions, StatusOptions};

/// An output the test reads while `inspect` writes it.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// `inspect --json` lines as (sequence, exact bytes, the line).
fn printed(json_lines: &str) -> Vec<(u64, Vec<u8>, serde_json::Value)> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let bytes = data_encoding::BASE64
                .decode(v["bytes_b64"].as_str().unwrap().as_bytes())
                .unwrap();
            (v["sequence"].as_u64().unwrap(), bytes, v)
        })
        .collect()
}

/// A sensor configuration without kernel sources: records come from the
/// sensor's own pipeline only.
fn no_kernel(mut cfg: vigil_sensor::SensorConfig) -> vigil_sensor::SensorConfig {
    cfg.collect.ebpf = false;
    cfg.collect.audit = false;
    cfg.collect.proc_connector = false;
    cfg
}

/// Polls `done` until it holds; fails naming `what` after `within`.
async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the server stored of `device`, by sequence.
fn stored(server: &TestServer, tenant: &str, device: &str) -> BTreeMap<u64, Vec<u8>> {
    let store = server.control.tenant_store(tenant).unwrap();
    store
        .records(device, 0, 1_000_000)
        .unwrap()
        .into_iter()
        .collect()
}

fn new_tenant(server: &TestServer) -> String {
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap()
}

/// A rule set other than the running one: a reload makes the sensor send its
/// host details again (with the new rule set's version).
fn other_rules(n: usize) -> vigil_rules::RuleSet {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<_> = std::fs::read_dir(&rules)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yml")
                && !p.to_string_lossy().ends_with(".tests.yml")
        })
        .collect();
    files.sort();
    files.truncate(n);
    vigil_rules::RuleSet::load_paths(&files).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_follow_shows_byte_for_byte_what_the_server_stored() {
    let name = "inspect_follow_shows_byte_for_byte_what_the_server_stored";
    let kernel = match support::root_skip_reason() {
        None => Some(support::kernel_lock().await),
        Some(why) => {
            eprintln!(
                "{name}: the kernel part is skipped ({why}); records come from the sensor's pipeline only"
            );
            None
        }
    };
    let server = TestServer::start().await;
    let enroll = new_tenant(&server);
    let cfg = sensor_config(&server, &enroll);
    let data_dir = cfg.data_dir.clone();
    let sensor = if kernel.is_some() {
        match support::start_kernel_sensor(name, cfg).await {
            Some(s) => s,
            None => return,
        }
    } else {
        vigil_sensor::Sensor::start(no_kernel(cfg)).await.unwrap()
    };
    let device = sensor.identity.as_ref().unwrap().device_id.clone();

    // `vigil-sensor inspect --follow --json`, as the binary runs it.
    let (out, note) = (Buf::default(), Buf::default());
    let follower = {
        let (mut out, mut note) = (out.clone(), note.clone());
        let opts = InspectOptions {
            data_dir: data_dir.clone(),
            follow: true,
            json: true,
        };
        tokio::spawn(async move { viewer::inspect(&opts, &mut out, &mut note).await })
    };
    until("inspect follows", Duration::from_secs(20), || {
        note.text().contains("Following records")
    })
    .await;

    // Activity while it follows: host details at each rule reload and, with
    // the kernel, a real process with a secret in its command line.
    let pid = std::process::id();
    let (marker, secret) = (
        format!("vigil-inspect-{pid}"),
        format!("S3cr3t-{pid}-inspect"),
    );
    sensor.replace_rules(other_rules(3));
    sensor.replace_rules(other_rules(5));
    let started = Instant::now();
    loop {
        if kernel.is_some() {
            std::process::Command::new("true")
                .args([marker.clone(), format!("--password={secret}")])
                .status()
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lines = printed(&out.text());
        let hosts = lines.iter().filter(|l| l.2["kind"] == "host").count();
        let process = lines.iter().any(|l| {
            l.2["kind"] == "process_start"
                && l.2["record"]["process_start"]["command_line"]
                    .as_str()
                    .is_some_and(|c| c.contains(&marker))
        });
        if hosts >= 2 && (process || kernel.is_none()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "inspect did not show the activity: {} lines, {hosts} host records",
            lines.len()
        );
    }
    // Ctrl-C.
    follower.abort();
    let _ = follower.await;
    let lines = printed(&out.text());

    // Each printed record's parts agree with its bytes.
    for (seq, bytes, v) in &lines {
        let r = Record::decode(bytes.as_slice()).unwrap();
        assert_eq!(r.sequence, *seq);
        assert_eq!(v["level"], "required");
        assert_eq!(v["record"]["sequence"], seq.to_string());
        assert!(v["record"].is_object());
    }
    if kernel.is_some() {
        let text = out.text();
        assert!(!text.contains(&secret), "inspect never shows the secret");
        let start = lines
            .iter()
            .find(|l| {
                l.2["record"]["process_start"]["command_line"]
                    .as_str()
                    .is_some_and(|c| c.contains(&marker))
            })
            .unwrap();
        assert_eq!(
            start.2["record"]["process_start"]["command_line"],
            format!("true {marker} --password=[REDACTED]")
        );
        // What was redacted, never the secret: the field, the rule, how many.
        let redactions = start.2["redactions"].as_array().unwrap();
        assert!(
            redactions.iter().any(|r| r["field"] == "argv"
                && !r["rule"].as_str().unwrap().is_empty()
                && r["count"].as_u64().unwrap() >= 1),
            "{redactions:?}"
        );
        assert_eq!(start.2["record"]["redactions"][0]["field"], "argv");
    }

    // The server stores each of them, byte for byte.
    let last = lines.iter().map(|l| l.0).max().unwrap();
    until(
        "the server holds every printed record",
        Duration::from_secs(30),
        || {
            server
                .control
                .tenant_store("acme")
                .unwrap()
                .high_water(&device)
                .unwrap()
                >= last
        },
    )
    .await;
    let stored = stored(&server, "acme", &device);
    for (seq, bytes, v) in &lines {
        assert_eq!(
            stored.get(seq),
            Some(bytes),
            "record {seq} ({}) as the server stored it",
            v["kind"]
        );
    }
    eprintln!(
        "{name}: {} records printed, each stored byte for byte",
        lines.len()
    );
    sensor.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_a_stopped_sensors_spool_and_changes_nothing() {
    let server = TestServer::start().await;
    let enroll = new_tenant(&server);
    let cfg = no_kernel(sensor_config(&server, &enroll));
    let data_dir = cfg.data_dir.clone();
    // Enrolled, then cut off from its server: what it makes stays spooled.
    let sensor = vigil_sensor::Sensor::start(cfg.clone()).await.unwrap();
    let device = sensor.identity.as_ref().unwrap().device_id.clone();
    let paused = server.pause().await;
    sensor.replace_rules(other_rules(2));
    sensor.replace_rules(other_rules(4));
    // Running: status over the socket — until both reloads are spooled (the
    // pipeline takes one a turn, and an idle turn is a second).
    let opts = StatusOptions {
        data_dir: data_dir.clone(),
        json: true,
        endpoint: None,
    };
    let started = std::time::Instant::now();
    let st = loop {
        let mut status = Buf::default();
        assert_eq!(viewer::status(&opts, &mut status).await.unwrap(), 0);
        let st: vigil_sensor::control::Status = serde_json::from_str(&status.text()).unwrap();
        if st.spool.as_ref().is_some_and(|s| s.records >= 2)
            || started.elapsed() > Duration::from_secs(30)
        {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(st.running);
    assert_eq!(st.mode, "connected");
    assert_eq!(st.connection.as_ref().unwrap().device_id, device);
    assert!(
        st.fallbacks
            .iter()
            .any(|f| f.contains("collect.ebpf = false")),
        "{:?}",
        st.fallbacks
    );
    sensor.shutdown().await;

    // Stopped: inspect reads the spool file itself, read only.
    let spool_file = data_dir.join("spool.redb");
    let before = std::fs::read(&spool_file).unwrap();
    let (out, note) = (Buf::default(), Buf::default());
    let opts = InspectOptions {
        data_dir: data_dir.clone(),
        follow: false,
        json: true,
    };
    assert_eq!(
        viewer::inspect(&opts, &mut out.clone(), &mut note.clone())
            .await
            .unwrap(),
        0
    );
    assert!(
        note.text().starts_with("The sensor is not running"),
        "{}",
        note.text()
    );
    assert!(note.text().contains("read only"), "{}", note.text());
    let listed = printed(&out.text());
    let held = vigil_spool::SpoolView::open(&spool_file)
        .unwrap()
        .read_after(0, 100_000, usize::MAX)
        .unwrap();
    assert!(
        held.len() >= 2,
        "the host details of both reloads wait unsent"
    );
    assert_eq!(
        listed
            .iter()
            .map(|l| (l.0, l.1.clone()))
            .collect::<Vec<_>>(),
        held,
        "every record the spool holds, oldest first, as it holds it"
    );
    assert!(listed.iter().filter(|l| l.2["kind"] == "host").count() >= 2);
    // People's form of the same records.
    let human = Buf::default();
    viewer::inspect(
        &InspectOptions {
            json: false,
            ..opts.clone()
        },
        &mut human.clone(),
        &mut Buf::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        human.text().lines().filter(|l| l.starts_with('#')).count(),
        held.len()
    );
    assert_eq!(
        std::fs::read(&spool_file).unwrap(),
        before,
        "inspect changed nothing"
    );

    // Status says it is not running, and what the data directory tells.
    let mut status = Buf::default();
    let code = viewer::status(
        &StatusOptions {
            data_dir: data_dir.clone(),
            json: false,
            endpoint: Some("https://server".into()),
        },
        &mut status,
    )
    .await
    .unwrap();
    assert_eq!(code, viewer::NOT_RUNNING);
    let text = status.text();
    assert!(text.starts_with("The sensor is not running"), "{text}");
    assert!(text.contains(&device), "{text}");
    assert!(
        text.contains(&format!("Spool       {} records", held.len())),
        "{text}"
    );

    // A record that a prost round trip would change (a map's entries in an
    // order of their own, a field this build does not know), spooled as a
    // newer sensor would: it reaches the server as listed.
    {
        let spool = vigil_spool::Spool::open(&spool_file, 1 << 30).unwrap();
        spool
            .append([()], |seq, ()| {
                let mut bytes = Record {
                    sequence: seq,
                    time_unix_ns: 1,
                    payload: Some(Payload::Health(SensorHealth {
                        dropped: (0..8).map(|i| (format!("reason_{i}"), i)).collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
                .encode_to_vec();
                // Field 99, varint 1: unknown to this build.
                bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
                (bytes, vigil_spool::Priority::Keep)
            })
            .unwrap();
    }
    let out = Buf::default();
    viewer::inspect(&opts, &mut out.clone(), &mut Buf::default())
        .await
        .unwrap();
    let listed = printed(&out.text());
    let crafted = listed.last().unwrap();
    assert_eq!(crafted.2["kind"], "health");
    assert!(crafted.1.ends_with(&[0x98, 0x06, 0x01]));
    let round_trip = Record::decode(crafted.1.as_slice())
        .unwrap()
        .encode_to_vec();
    assert_ne!(round_trip, crafted.1, "prost would not send these bytes");

    // The server back, the sensor again: it sends what it held, as listed.
    let server = paused.resume().await;
    let sensor = vigil_sensor::Sensor::start(cfg).await.unwrap();
    let last = crafted.0;
    until(
        "the server holds what was spooled",
        Duration::from_secs(30),
        || {
            server
                .control
                .tenant_store("acme")
                .unwrap()
                .high_water(&device)
                .unwrap()
                >= last
        },
    )
    .await;
    let stored = stored(&server, "acme", &device);
    for (seq, bytes, _) in &listed {
        assert_eq!(stored.get(seq), Some(bytes), "record {seq}");
    }
    sensor.shutdown().await;
    server.stop().await;
}
