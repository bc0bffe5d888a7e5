//! Offline transfer (issue 15, item 5) through a real server over TLS: a
//! device enrolls as the sensor does (its key, certificate and the server's
//! transfer key saved in its data directory), records wait in its real spool,
//! `vigil-sensor export` writes a bundle, and a tenant admin imports it over
//! the Transfer service. Each record is stored once, as the spool held it,
//! however often it is imported or re-sent over the live (mutual TLS) stream;
//! a changed bundle, or one of another tenant's device, is refused, naming
//! why, and stores nothing. Needs neither root nor the kernel.

#![allow(clippy::unwrap_used)]

mod support;

use prost::Message;
use std::path::Path;
use support::tenants::{Fixture, Tenant, req};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Identity;
use vigil_proto::v1::{
    self as pb, CreateEnrollmentTokenRequest, Detection, FieldCondition, FileEvent,
    ImportBundleRequest, ImportBundleResponse, MatchOp, NetworkConnection, ProcessRef,
    ProcessStart, Record, RecordBatch, RevokeDeviceRequest, SearchEventsRequest, record::Payload,
    transfer_client::TransferClient,
};
use vigil_sensor::export::{ExportOptions, Exported, export};

/// A device's data directory after enrollment, as the sensor leaves it.
struct Device {
    dir: tempfile::TempDir,
    id: String,
}

impl Device {
    fn spool(&self) -> std::path::PathBuf {
        self.dir.path().join("spool.redb")
    }

    /// Its certificate and key, for the live stream (mutual TLS).
    fn identity(&self) -> Identity {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap();
        Identity::from_pem(read("device.pem"), read("device.key"))
    }

    /// What the spool holds, as bytes.
    fn spooled(&self) -> Vec<(u64, Vec<u8>)> {
        let spool = vigil_spool::SpoolView::open(&self.spool()).unwrap();
        spool.read_after(0, 100_000, usize::MAX).unwrap()
    }

    fn export(
        &self,
        out: &Path,
        opts: &ExportOptions,
    ) -> Result<Exported, vigil_sensor::SensorError> {
        export(self.dir.path(), out, opts)
    }
}

/// Enrolls a device into `t` the way the sensor does at its first start.
async fn enroll(f: &Fixture, t: &Tenant, host: &str) -> Device {
    let token = f
        .admin()
        .create_enrollment_token(req(
            CreateEnrollmentTokenRequest { valid_hours: 1 },
            &t.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "data_dir = {:?}\n[server]\nendpoint = {:?}\nca_file = {:?}\nserver_name = \"localhost\"\n\
         [enrollment]\ntoken = {:?}\n",
        dir.path(),
        f.server.endpoint(),
        f.server.ca_file(),
        token
    );
    let cfg = vigil_sensor::SensorConfig::parse(Path::new("test.toml"), &cfg).unwrap();
    let host = pb::HostInfo {
        hostname: host.into(),
        ..Default::default()
    };
    let id = vigil_sensor::uplink::ensure_enrolled(&cfg, &host)
        .await
        .unwrap();
    assert_eq!(id.tenant_id, t.id);
    assert!(
        dir.path()
            .join(vigil_sensor::export::TRANSFER_KEY_FILE)
            .exists()
    );
    Device {
        dir,
        id: id.device_id,
    }
}

/// Records as the sensor makes them: process starts (each with `marker` in
/// its command line), file writes, connections, and one detection.
fn records(marker: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let process = ProcessRef {
                guid: format!("guid-{marker}-{i}"),
                pid: 1000 + i as u32,
                command_line: format!("/usr/bin/curl {marker}-{i} https://example.invalid"),
                ..Default::default()
            };
            let payload = match i % 4 {
                0 => Payload::ProcessStart(ProcessStart {
                    guid: process.guid.clone(),
                    pid: process.pid,
                    command_line: process.command_line.clone(),
                    executable: Some(pb::Path {
                        text: "/usr/bin/curl".into(),
                        ..Default::default()
                    }),
                    user_name: "alice".into(),
                    ..Default::default()
                }),
                1 => Payload::File(FileEvent {
                    path: Some(pb::Path {
                        text: format!("/tmp/{marker}-{i}"),
                        ..Default::default()
                    }),
                    size: 4096,
                    process: Some(process),
                    ..Default::default()
                }),
                2 => Payload::Network(NetworkConnection {
                    remote_address: "192.0.2.7".into(),
                    remote_port: 443,
                    local_address: "10.0.0.5".into(),
                    local_port: 40_000 + i as u32,
                    process: Some(process),
                    ..Default::default()
                }),
                _ if i == 3 => Payload::Detection(Detection {
                    rule_id: "offline-rule".into(),
                    rule_title: "Seen while offline".into(),
                    level: "high".into(),
                    process: Some(process),
                    ..Default::default()
                }),
                _ => Payload::ProcessStart(ProcessStart {
                    guid: process.guid.clone(),
                    pid: process.pid,
                    command_line: process.command_line.clone(),
                    ..Default::default()
                }),
            };
            Record {
                sequence: 0,
                time_unix_ns: 1_700_000_000_000_000_000 + i as i64,
                payload: Some(payload),
                ..Default::default()
            }
        })
        .collect()
}

/// Puts records in the device's spool as the pipeline does: each encoded
/// with the sequence the spool gives it.
fn spool(d: &Device, records: Vec<Record>) {
    let spool = vigil_spool::Spool::open(&d.spool(), vigil_spool::DEFAULT_CAPACITY_BYTES).unwrap();
    spool
        .append(records, |seq, mut r| {
            r.sequence = seq;
            (r.encode_to_vec(), vigil_spool::Priority::Bulk)
        })
        .unwrap();
}

fn transfer(f: &Fixture) -> TransferClient<tonic::transport::Channel> {
    TransferClient::new(f.ch.clone()).max_encoding_message_size(64 * 1024 * 1024)
}

async fn import(
    f: &Fixture,
    token: &str,
    bundle: &Path,
    allow_gap: bool,
) -> Result<ImportBundleResponse, tonic::Status> {
    transfer(f)
        .import_bundle(req(
            ImportBundleRequest {
                bundle: std::fs::read(bundle).unwrap(),
                allow_gap,
            },
            token,
            None,
        ))
        .await
        .map(|r| r.into_inner())
}

/// What the server stores of a device: (sequence, bytes as received).
fn stored(f: &Fixture, t: &Tenant, device: &str) -> Vec<(u64, Vec<u8>)> {
    f.server
        .control
        .tenant_store(&t.id)
        .unwrap()
        .records(device, 0, 100_000)
        .unwrap()
}

/// Process starts whose command line holds `marker`, found by the Hunt service.
async fn hunted(f: &Fixture, t: &Tenant, marker: &str) -> usize {
    let mut pages = f
        .hunt()
        .search_events(req(
            SearchEventsRequest {
                kind: "process_start".into(),
                conditions: vec![FieldCondition {
                    field: "CommandLine".into(),
                    op: MatchOp::Contains as i32,
                    value: marker.into(),
                }],
                ..Default::default()
            },
            &t.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(p) = pages.next().await {
        n += p.unwrap().records.len();
    }
    n
}

fn flipped(bundle: &Path, at: usize, out: &Path) -> std::path::PathBuf {
    let mut b = std::fs::read(bundle).unwrap();
    b[at] ^= 0x01;
    let p = out.join(format!("flipped-{at}.vbd"));
    std::fs::write(&p, b).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_bundle_is_stored_once_however_often_it_arrives() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let d = enroll(&f, &acme, "offline-host").await;
    let marker = format!("offline-{}", std::process::id());
    spool(&d, records(&marker, 40));
    let spooled = d.spooled();
    assert_eq!(spooled.len(), 40);
    let out = tempfile::tempdir().unwrap();

    // While the sensor holds its spool, export says to stop it.
    {
        let _running =
            vigil_spool::Spool::open(&d.spool(), vigil_spool::DEFAULT_CAPACITY_BYTES).unwrap();
        let e = d
            .export(&out.path().join("x.vbd"), &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("the sensor is running; stop it"), "{e}");
        assert!(!out.path().join("x.vbd").exists());
    }

    // Two bundles: the first full at a small size, the second from where it ended.
    let part1 = out.path().join("part1.vbd");
    let e1 = d
        .export(
            &part1,
            &ExportOptions {
                after: 0,
                max_bytes: 4 * 1024,
            },
        )
        .unwrap();
    assert!(e1.more, "{e1:?}");
    assert_eq!(e1.first_sequence, 1);
    assert!(e1.bytes <= 4 * 1024);
    let part2 = out.path().join("part2.vbd");
    let e2 = d
        .export(
            &part2,
            &ExportOptions {
                after: e1.last_sequence,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!e2.more);
    assert_eq!(
        (e2.first_sequence, e2.last_sequence),
        (e1.last_sequence + 1, 40)
    );
    assert_eq!(e1.records + e2.records, 40);
    // An export never overwrites, and the spool is unchanged by it.
    assert!(d.export(&part1, &ExportOptions::default()).is_err());
    assert_eq!(d.spooled(), spooled);

    // Imported: every record stored, with its spool sequence and its bytes unchanged.
    let r1 = import(&f, &acme.admin, &part1, false).await.unwrap();
    assert_eq!((r1.accepted, r1.duplicates), (e1.records, 0));
    assert_eq!(r1.device_id, d.id);
    let r2 = import(&f, &acme.admin, &part2, false).await.unwrap();
    assert_eq!(
        (r2.accepted, r2.duplicates, r2.stored_through),
        (e2.records, 0, 40)
    );
    assert_eq!(stored(&f, &acme, &d.id), spooled);
    assert_eq!(hunted(&f, &acme, &marker).await, 19);
    // The detection it carried raised its alert once.
    let alerts = f.alert_ids(&acme.admin, None).await.unwrap();
    assert_eq!(alerts.len(), 1);

    // Imported again, and as one bundle: all duplicates, nothing stored twice.
    let again = import(&f, &acme.admin, &part1, false).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, e1.records));
    let whole = out.path().join("whole.vbd");
    d.export(&whole, &ExportOptions::default()).unwrap();
    let again = import(&f, &acme.admin, &whole, false).await.unwrap();
    assert_eq!(
        (again.accepted, again.duplicates, again.records),
        (0, 40, 40)
    );
    assert_eq!(stored(&f, &acme, &d.id), spooled);
    assert_eq!(hunted(&f, &acme, &marker).await, 19);
    assert_eq!(f.alert_ids(&acme.admin, None).await.unwrap(), alerts);

    // The sensor reconnects and re-sends its spool live over mutual TLS: duplicates too.
    let live: Vec<Record> = spooled
        .iter()
        .map(|(_, b)| Record::decode(b.as_slice()).unwrap())
        .collect();
    let mut ingest = f.server.ingest(Some(d.identity())).await;
    let mut acks = ingest
        .stream(tokio_stream::iter(vec![RecordBatch {
            batch_id: 1,
            records: live,
        }]))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.next().await.unwrap().unwrap();
    assert_eq!(
        (ack.accepted, ack.duplicates, ack.stored_through),
        (0, 40, 40)
    );
    assert_eq!(stored(&f, &acme, &d.id), spooled);

    // Audited with its device and range, never a record's contents.
    let entries = f.audit_entries(&acme.admin).await;
    let imports: Vec<_> = entries
        .iter()
        .filter(|e| e.method == "Transfer/ImportBundle")
        .collect();
    assert_eq!(imports.len(), 4);
    assert!(imports.iter().all(|e| e.result == "ok"));
    assert!(imports[0].summary.contains(&format!("device_id={}", d.id)));
    assert!(imports[1].summary.contains("accepted="));
    assert!(entries.iter().all(|e| !e.summary.contains(&marker)));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_bundle_is_refused_naming_why_and_stores_nothing() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let d = enroll(&f, &acme, "host-b").await;
    spool(&d, records("tamper", 12));
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("b.vbd");
    d.export(&bundle, &ExportOptions::default()).unwrap();
    let len = std::fs::metadata(&bundle).unwrap().len() as usize;
    // Header offsets: magic (8), version (2), header length (2), then the
    // device id (length, bytes) and the tenant id; fixed fields after them.
    let header = 12;
    let created = header + 1 + d.id.len() + 1 + acme.id.len();
    // A digit of the device id flipped is another digit: another device's id.
    let digit = header + 1 + d.id.find(|c: char| c.is_ascii_digit()).unwrap();
    let cases: [(usize, Code, &str); 8] = [
        (0, Code::InvalidArgument, "bad magic"),
        (9, Code::InvalidArgument, "version 0 is not supported"),
        (11, Code::InvalidArgument, "bundle"),
        (
            digit,
            Code::PermissionDenied,
            "unknown or of another tenant",
        ),
        (created, Code::InvalidArgument, "signature does not verify"),
        (
            created + 30,
            Code::InvalidArgument,
            "signature does not verify",
        ),
        (len / 2, Code::InvalidArgument, "signature does not verify"),
        (len - 1, Code::InvalidArgument, "signature does not verify"),
    ];
    for (at, code, why) in cases {
        let e = import(&f, &acme.admin, &flipped(&bundle, at, out.path()), false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "byte {at}: {}", e.message());
        assert!(
            e.message().starts_with("bundle refused: ") && e.message().contains(why),
            "byte {at}: {}",
            e.message()
        );
    }
    let mut cut = std::fs::read(&bundle).unwrap();
    cut.truncate(len - 10);
    std::fs::write(out.path().join("cut.vbd"), cut).unwrap();
    let e = import(&f, &acme.admin, &out.path().join("cut.vbd"), false)
        .await
        .unwrap_err();
    assert!(e.message().contains("truncated"), "{}", e.message());
    assert!(stored(&f, &acme, &d.id).is_empty());

    // A bundle that starts above what the server lacks would strand the records below it.
    let later = out.path().join("later.vbd");
    d.export(
        &later,
        &ExportOptions {
            after: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let e = import(&f, &acme.admin, &later, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("--after 0"), "{}", e.message());
    assert!(stored(&f, &acme, &d.id).is_empty());

    // Only a tenant admin imports.
    let (analyst, _) = f.token(&acme, pb::Role::Analyst).await;
    let e = import(&f, &analyst, &bundle, false).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(stored(&f, &acme, &d.id).is_empty());

    // The bundle as exported is fine; the later one then adds nothing.
    let r = import(&f, &acme.admin, &bundle, false).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (12, 0));
    assert_eq!(stored(&f, &acme, &d.id), d.spooled());
    let r = import(&f, &acme.admin, &later, false).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 8));

    // Refusals are audited with why.
    let refusals = f
        .audit_entries(&acme.admin)
        .await
        .into_iter()
        .filter(|e| e.method == "Transfer/ImportBundle" && e.result != "ok")
        .count();
    assert!(refusals >= cases.len() + 3, "{refusals}");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_of_another_tenant_or_a_revoked_device_is_refused() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let beta = f.tenant("Beta").await;
    let a = enroll(&f, &acme, "acme-host").await;
    let b = enroll(&f, &beta, "beta-host").await;
    spool(&a, records("acme", 5));
    spool(&b, records("beta", 5));
    let out = tempfile::tempdir().unwrap();
    let (ba, bb) = (out.path().join("a.vbd"), out.path().join("b.vbd"));
    a.export(&ba, &ExportOptions::default()).unwrap();
    b.export(&bb, &ExportOptions::default()).unwrap();
    for (token, bundle, device) in [(&acme.admin, &bb, &b.id), (&beta.admin, &ba, &a.id)] {
        let e = import(&f, token, bundle, false).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(
            e.message(),
            format!("bundle refused: device {device} is unknown or of another tenant")
        );
    }
    assert!(stored(&f, &acme, &b.id).is_empty());
    assert!(stored(&f, &beta, &b.id).is_empty());
    assert!(stored(&f, &beta, &a.id).is_empty());

    // A revoked device's bundles are refused too.
    f.admin()
        .revoke_device(req(
            RevokeDeviceRequest {
                device_id: b.id.clone(),
            },
            &beta.admin,
            None,
        ))
        .await
        .unwrap();
    let e = import(&f, &beta.admin, &bb, false).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("is revoked"), "{}", e.message());
    assert!(stored(&f, &beta, &b.id).is_empty());

    // Acme's own bundle goes in.
    let r = import(&f, &acme.admin, &ba, false).await.unwrap();
    assert_eq!(r.accepted, 5);
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_for_another_server_is_refused() {
    let f = Fixture::start().await;
    let other = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let d = enroll(&f, &acme, "host").await;
    spool(&d, records("elsewhere", 3));
    // The device was told another server's transfer key.
    let key = std::fs::read(
        vigil_server::pki::PkiPaths::new(&other.server.dir.path().join("server")).transfer_public(),
    )
    .unwrap();
    std::fs::write(
        d.dir.path().join(vigil_sensor::export::TRANSFER_KEY_FILE),
        key,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("b.vbd");
    d.export(&bundle, &ExportOptions::default()).unwrap();
    let e = import(&f, &acme.admin, &bundle, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("encrypted to transfer key"),
        "{}",
        e.message()
    );
    assert!(stored(&f, &acme, &d.id).is_empty());

    // A device enrolled before the server handed out its key is told what to do.
    std::fs::remove_file(d.dir.path().join(vigil_sensor::export::TRANSFER_KEY_FILE)).unwrap();
    let e = d
        .export(&out.path().join("c.vbd"), &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("Enroll it again, or copy the server's"), "{e}");
    other.server.stop().await;
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolled_before_keys_were_kept_imports_after_its_next_stream() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let d = enroll(&f, &acme, "old-host").await;
    spool(&d, records("old", 3));
    // The device record as a server before offline transfer wrote it.
    let mut rec = f.server.control.device(&d.id).unwrap().unwrap();
    assert_eq!(rec.public_key.len(), 65);
    rec.public_key.clear();
    f.server.control.put_device(&rec).unwrap();
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("b.vbd");
    d.export(&bundle, &ExportOptions::default()).unwrap();
    let e = import(&f, &acme.admin, &bundle, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("enrolled before the server kept device keys"),
        "{}",
        e.message()
    );
    assert!(stored(&f, &acme, &d.id).is_empty());

    // Its next stream (mutual TLS) gives the server its key from the certificate.
    let mut ingest = f.server.ingest(Some(d.identity())).await;
    let mut acks = ingest
        .stream(tokio_stream::iter(Vec::<RecordBatch>::new()))
        .await
        .unwrap()
        .into_inner();
    while acks.next().await.is_some() {}
    let r = import(&f, &acme.admin, &bundle, false).await.unwrap();
    assert_eq!(r.accepted, 3);
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_larger_than_a_sensor_message_is_imported() {
    // Past the server's max_message_bytes (4 MiB by default), which bounds sensor batches.
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let d = enroll(&f, &acme, "big-host").await;
    let mut big = records("big", 700);
    for r in &mut big {
        r.payload = Some(Payload::ProcessStart(ProcessStart {
            command_line: "x".repeat(9_000),
            ..Default::default()
        }));
    }
    spool(&d, big);
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("big.vbd");
    let e = d.export(&bundle, &ExportOptions::default()).unwrap();
    assert!(e.bytes > 6 * 1024 * 1024, "{e:?}");
    let r = import(&f, &acme.admin, &bundle, false).await.unwrap();
    assert_eq!((r.accepted, r.stored_through), (700, 700));
    assert_eq!(stored(&f, &acme, &d.id).len(), 700);
    f.server.stop().await;
}
