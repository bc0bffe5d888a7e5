//! Privacy on the device (issue 15), through the real kernel sensor and a
//! real server over mutual TLS:
//! - a secret in a real process's command line is replaced before it is
//!   evaluated, spooled or sent: the server holds the command line with
//!   `--password=[REDACTED]`, and no file the sensor or the server wrote, nor
//!   any line either logged, holds the secret;
//! - under a tenant policy of pseudonyms, host names and home directories
//!   reach the server as pseudonyms: the same on two devices of one tenant,
//!   different in another tenant; a tenant admin re-identifies them (audited);
//! - optional data (the sensor's diagnostics) is sent when the tenant's policy
//!   turns it on, and not otherwise; the server counts what it holds per level.
//!
//! Needs root (kernel sources); says so and passes without.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::{TestServer, sensor_config, sensor_config_with_rules, with_token};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use vigil_proto::v1::record::Payload;
use vigil_proto::v1::{
    DataLevel, FieldCondition, GetPrivacyRequest, MatchOp, Record, ReidentifyRequest,
    SearchEventsRequest, SetPrivacyPolicyRequest, StoredRecord, hunt_client::HuntClient,
    privacy_client::PrivacyClient,
};

/// Every line logged in this test process (the sensor and the server run in
/// it), at debug and above, from the first call on.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || W(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

/// The records of `kind` the server holds (of `device`, when given) whose
/// command line contains `contains` (when given).
async fn stored(
    hunt: &mut HuntClient<Channel>,
    token: &str,
    kind: &str,
    device: &str,
    contains: Option<&str>,
) -> Vec<StoredRecord> {
    let mut pages = hunt
        .search_events(with_token(
            SearchEventsRequest {
                device_id: device.into(),
                kind: kind.into(),
                conditions: contains
                    .map(|c| FieldCondition {
                        field: "CommandLine".into(),
                        op: MatchOp::Contains as i32,
                        value: c.into(),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        out.extend(p.unwrap().records);
    }
    out
}

fn record(s: &StoredRecord) -> &Record {
    s.record.as_ref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_command_line_never_reaches_the_spool_or_the_server() {
    let name = "a_secret_in_a_command_line_never_reaches_the_spool_or_the_server";
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let server = TestServer::start().await;
    let (analyst, enroll) = server.tenant("acme", vigil_store::Role::Analyst);
    let logs = logs();
    let pid = std::process::id();
    let marker = format!("vigil-privacy-{pid}");
    let secret = format!("S3cr3t-{pid}-Hunter2");
    // A rule on the marker: the sensor logs each detection with its command line.
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("marker.yml"),
        format!(
            "title: Privacy marker\nid: 2f1c0e57-7d0e-4c55-9a4e-privacy-marker\nlevel: low\n\
             logsource: {{category: process_creation, product: linux}}\n\
             detection: {{s: {{CommandLine|contains: {marker}}}, condition: s}}\n"
        ),
    )
    .unwrap();
    let cfg = sensor_config_with_rules(&server, &enroll, rules.path());
    let Some(sensor) = support::start_kernel_sensor(name, cfg).await else {
        return;
    };
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let started = Instant::now();
    let line = loop {
        std::process::Command::new("true")
            .args([marker.clone(), format!("--password={secret}")])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut pages = hunt
            .search_events(with_token(
                SearchEventsRequest {
                    kind: "process_start".into(),
                    conditions: vec![FieldCondition {
                        field: "CommandLine".into(),
                        op: MatchOp::Contains as i32,
                        value: marker.clone(),
                    }],
                    ..Default::default()
                },
                &analyst,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut found = None;
        while let Some(p) = pages.next().await {
            for r in p.unwrap().records {
                if let Some(vigil_proto::v1::record::Payload::ProcessStart(s)) =
                    r.record.and_then(|r| r.payload)
                {
                    found = Some(s.command_line);
                }
            }
        }
        if let Some(l) = found {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the process never reached the server"
        );
    };
    assert_eq!(line, format!("true {marker} --password=[REDACTED]"));
    // The sensor stopped (its spool on disk) and the server's store holding
    // what it acknowledged: no file of either has the secret.
    sensor.shutdown().await;
    let mut files = 0;
    for f in support::files_under(server.dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        files += 1;
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in {}",
            f.display()
        );
    }
    assert!(files > 3, "the sensor's and the server's files were read");
    server.stop().await;
    // Nor any log line: the detection was logged with its (redacted) command line.
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains(&format!("{marker} --password=[REDACTED]")),
        "the detection's command line was not logged: the check below would prove nothing"
    );
    assert!(!logged.contains(&secret), "a log line holds the secret");
}

/// What one device of a tenant sent: its id, the host name its records
/// carry, and the home-directory segment of a command line it ran.
struct Seen {
    device: String,
    host: String,
    home: String,
}

/// Runs a kernel sensor of the tenant `enroll` belongs to (its own data
/// directory `dir`) until the server holds its host record and a process that
/// names a home directory; then stops it.
async fn device_run(
    name: &str,
    server: &TestServer,
    enroll: &str,
    dir: &str,
    token: &str,
) -> Option<Seen> {
    let mut cfg = sensor_config(server, enroll);
    cfg.data_dir = server.dir.path().join(dir);
    let sensor = support::start_kernel_sensor(name, cfg).await?;
    let device = sensor.identity.as_ref().unwrap().device_id.clone();
    let marker = format!("vigil-pseudonym-{}-{dir}", std::process::id());
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let started = Instant::now();
    let line = loop {
        std::process::Command::new("true")
            .args([
                format!("/home/vigil-person-{dir}/notes.txt"),
                marker.clone(),
            ])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let found = stored(&mut hunt, token, "process_start", &device, Some(&marker)).await;
        if let Some(Payload::ProcessStart(s)) =
            found.first().and_then(|r| record(r).payload.clone())
        {
            assert!(
                record(&found[0])
                    .pseudonymized
                    .contains(&"command_line".to_owned())
            );
            break s.command_line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the process never reached the server"
        );
    };
    sensor.shutdown().await;
    let hosts = stored(&mut hunt, token, "host", &device, None).await;
    let host = hosts
        .iter()
        .find_map(|r| match &record(r).payload {
            Some(Payload::Host(h)) => Some(h.hostname.clone()),
            _ => None,
        })
        .expect("the device's host record");
    // "true /home/<segment>/notes.txt <marker>"
    let home = line
        .split("/home/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    Some(Seen { device, host, home })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonyms_are_stable_in_a_tenant_unlinkable_across_tenants_and_optional_data_follows_the_policy()
 {
    let name = "pseudonyms_are_stable_in_a_tenant_unlinkable_across_tenants_and_optional_data_follows_the_policy";
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let server = TestServer::start().await;
    let tokens = [
        server.tenant("acme", vigil_store::Role::Admin),
        server.tenant("globex", vigil_store::Role::Admin),
    ];
    let analyst = server
        .control
        .create_api_token(Some("acme"), vigil_store::Role::Analyst, "a", 0, "test")
        .unwrap()
        .0;
    let mut privacy = PrivacyClient::new(server.channel(None).await.unwrap());
    // Both tenants ask for pseudonyms; only acme for optional data.
    for ((admin, _), optional_data) in tokens.iter().zip([true, false]) {
        let info = privacy
            .set_privacy_policy(with_token(
                SetPrivacyPolicyRequest {
                    optional_data,
                    pseudonymize: true,
                    redact: Vec::new(),
                },
                admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.policy.unwrap().version, 1);
    }
    let (acme, globex) = (&tokens[0], &tokens[1]);
    let Some(a1) = device_run(name, &server, &acme.1, "acme-1", &acme.0).await else {
        return;
    };
    let a2 = device_run(name, &server, &acme.1, "acme-2", &acme.0)
        .await
        .unwrap();
    let g1 = device_run(name, &server, &globex.1, "globex-1", &globex.0)
        .await
        .unwrap();
    let real_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    // Pseudonyms, never the names; the same for both devices of acme (one
    // machine, two sensors: the same host; the same person's home directory
    // names differ by device here, so each is compared with its own kind).
    for s in [&a1, &a2, &g1] {
        assert!(s.host.starts_with("pnh-"), "{}", s.host);
        assert!(s.home.starts_with("pnu-"), "{}", s.home);
        assert_ne!(s.host, real_host);
    }
    assert_eq!(a1.host, a2.host, "stable within a tenant");
    assert_ne!(a1.host, g1.host, "unlinkable across tenants");
    let key = |t: &str| *server.control.tenant_pseudonym_key(t).unwrap();
    let person = |t: &str, dir: &str| {
        vigil_pseudonym::Pseudonymizer::new(key(t)).pseudonym(
            vigil_pseudonym::Kind::User,
            format!("vigil-person-{dir}").as_bytes(),
        )
    };
    assert_eq!(a1.home, person("acme", "acme-1"));
    assert_eq!(a2.home, person("acme", "acme-2"));
    assert_ne!(person("acme", "globex-1"), g1.home);
    // The device registry keeps the pseudonym too.
    for (t, s) in [("acme", &a1), ("globex", &g1)] {
        let devices = server.control.devices(t).unwrap();
        let d = devices.iter().find(|d| d.device_id == s.device).unwrap();
        assert_eq!(d.hostname, s.host);
    }

    // Optional data: acme's devices sent diagnostics, globex's none.
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let diag = stored(&mut hunt, &acme.0, "diagnostics", &a1.device, None).await;
    assert!(!diag.is_empty(), "acme turned optional data on");
    assert!(
        diag.iter()
            .all(|r| record(r).level == DataLevel::Optional as i32)
    );
    assert!(
        stored(&mut hunt, &globex.0, "diagnostics", "", None)
            .await
            .is_empty()
    );
    let held = |info: vigil_proto::v1::PrivacyInfo, level: DataLevel| {
        info.held
            .iter()
            .find(|h| h.level == level as i32)
            .unwrap()
            .records
    };
    let acme_info = privacy
        .get_privacy(with_token(GetPrivacyRequest {}, &acme.0))
        .await
        .unwrap()
        .into_inner();
    assert!(held(acme_info.clone(), DataLevel::Optional) >= 2);
    assert!(held(acme_info, DataLevel::Required) > 0);
    let globex_info = privacy
        .get_privacy(with_token(GetPrivacyRequest {}, &globex.0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held(globex_info.clone(), DataLevel::Optional), 0);
    assert!(held(globex_info, DataLevel::Required) > 0);

    // Re-identification: the tenant admin, with a reason; not an analyst;
    // another tenant's key does not recognise acme's pseudonym.
    let ask = |token: &str, reason: &str| {
        with_token(
            ReidentifyRequest {
                pseudonyms: vec![a1.host.clone(), a1.home.clone()],
                candidates: vec![
                    "someone".into(),
                    real_host.clone(),
                    "vigil-person-acme-1".into(),
                ],
                reason: reason.into(),
            },
            token,
        )
    };
    let r = privacy
        .reidentify(ask(&acme.0, "incident 42"))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, &str)> = r
        .results
        .iter()
        .map(|x| (x.identity.as_str(), x.kind.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (real_host.as_str(), "host"),
            ("vigil-person-acme-1", "user")
        ]
    );
    let e = privacy
        .reidentify(ask(&analyst, "curious"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = privacy.reidentify(ask(&acme.0, " ")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let other = privacy
        .reidentify(ask(&globex.0, "cross-tenant"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.results.iter().all(|x| x.identity.is_empty()));
    // The audit trail names the pseudonyms and the reason, never the identity.
    let mut audit =
        vigil_proto::v1::audit_client::AuditClient::new(server.channel(None).await.unwrap());
    let entries = audit
        .list_audit_entries(with_token(
            vigil_proto::v1::ListAuditEntriesRequest {
                method: "Privacy/Reidentify".into(),
                limit: 100,
                ..Default::default()
            },
            &acme.0,
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ok = entries
        .iter()
        .find(|e| e.summary.contains("incident 42"))
        .expect("the re-identification is audited");
    assert!(ok.summary.contains(&a1.host), "{}", ok.summary);
    for e in &entries {
        let words: Vec<&str> = e
            .summary
            .split(|c: char| !c.is_alphanumeric() && c != '-')
            .collect();
        assert!(!words.contains(&real_host.as_str()), "{}", e.summary);
        assert!(!words.contains(&"vigil-person-acme-1"), "{}", e.summary);
    }
    server.stop().await;
}

/// The policy stream a device keeps open: the current policy when it holds
/// an older one, each change at once, and its end when the device is revoked.
/// No kernel needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_watching_the_policy_gets_each_change_until_it_is_revoked() {
    let server = TestServer::start().await;
    let (admin, _) = server.tenant("acme", vigil_store::Role::Admin);
    let (identity, device) = support::enroll(&server, "acme").await;
    let mut privacy = PrivacyClient::new(server.channel(None).await.unwrap());
    let set = |optional_data, pseudonymize, redact: Vec<vigil_proto::v1::RedactionPattern>| {
        with_token(
            SetPrivacyPolicyRequest {
                optional_data,
                pseudonymize,
                redact,
            },
            &admin,
        )
    };
    privacy
        .set_privacy_policy(set(true, false, Vec::new()))
        .await
        .unwrap();
    let mut ingest = server.ingest(Some(identity)).await;
    let mut watch = ingest
        .watch_policy(vigil_proto::v1::WatchPolicyRequest { version: 0 })
        .await
        .unwrap()
        .into_inner();
    let next = async |w: &mut tonic::Streaming<vigil_proto::v1::SensorPolicy>| {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("within 5 s")
    };
    let p = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(
        (p.version, p.optional_data, p.pseudonymize),
        (1, true, false)
    );
    // A pattern that does not compile is refused naming it; nothing is sent.
    let bad = vigil_proto::v1::RedactionPattern {
        name: "ticket".into(),
        regex: "TKT-(?P<secret>[0-9]+".into(),
    };
    let e = privacy
        .set_privacy_policy(set(true, true, vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("ticket"), "{}", e.message());
    let good = vigil_proto::v1::RedactionPattern {
        name: "ticket".into(),
        regex: "TKT-(?P<secret>[0-9]+)".into(),
    };
    privacy
        .set_privacy_policy(set(false, true, vec![good.clone()]))
        .await
        .unwrap();
    let p = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(
        (p.version, p.optional_data, p.pseudonymize),
        (2, false, true)
    );
    assert_eq!(p.redact, [good]);
    // A sensor that holds the current version is sent nothing on connect.
    let mut current = ingest
        .watch_policy(vigil_proto::v1::WatchPolicyRequest { version: 2 })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), current.next())
            .await
            .is_err()
    );
    // Revoked: the stream ends with the reason.
    vigil_proto::v1::admin_client::AdminClient::new(server.channel(None).await.unwrap())
        .revoke_device(with_token(
            vigil_proto::v1::RevokeDeviceRequest { device_id: device },
            &admin,
        ))
        .await
        .unwrap();
    let end = next(&mut watch).await;
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
    server.stop().await;
}

/// A policy changed while a kernel sensor runs applies to the next records:
/// pseudonyms from then on, optional data at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_while_the_sensor_runs_applies_at_once() {
    let name = "a_policy_changed_while_the_sensor_runs_applies_at_once";
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let server = TestServer::start().await;
    let (admin, enroll) = server.tenant("acme", vigil_store::Role::Admin);
    let Some(sensor) = support::start_kernel_sensor(name, sensor_config(&server, &enroll)).await
    else {
        return;
    };
    let device = sensor.identity.as_ref().unwrap().device_id.clone();
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    // Runs a process naming a home directory until the server has it; its command line.
    let run = async |hunt: &mut HuntClient<Channel>, marker: &str| {
        let started = Instant::now();
        loop {
            std::process::Command::new("true")
                .args(["/home/vigil-live-person/x", marker])
                .status()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let found = stored(hunt, &admin, "process_start", &device, Some(marker)).await;
            if let Some(Payload::ProcessStart(s)) =
                found.first().and_then(|r| record(r).payload.clone())
            {
                return s.command_line;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let all = stored(hunt, &admin, "", &device, None).await;
                let last: Vec<String> = all
                    .iter()
                    .rev()
                    .take(8)
                    .map(|r| format!("{:?}", record(r)))
                    .collect();
                panic!("{marker} never reached the server; last records: {last:#?}");
            }
        }
    };
    let pid = std::process::id();
    let before = run(&mut hunt, &format!("vigil-live-{pid}-before")).await;
    assert!(before.contains("/home/vigil-live-person/"), "{before}");
    assert!(
        stored(&mut hunt, &admin, "diagnostics", &device, None)
            .await
            .is_empty()
    );
    PrivacyClient::new(server.channel(None).await.unwrap())
        .set_privacy_policy(with_token(
            SetPrivacyPolicyRequest {
                optional_data: true,
                pseudonymize: true,
                redact: Vec::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let after = run(&mut hunt, &format!("vigil-live-{pid}-after")).await;
    let started = Instant::now();
    let mut after = after;
    // The policy reaches the sensor within moments; a command run just before is still plain.
    while after.contains("vigil-live-person") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pseudonyms never applied: {after}"
        );
        after = run(
            &mut hunt,
            &format!("vigil-live-{pid}-after-{}", started.elapsed().as_millis()),
        )
        .await;
    }
    assert!(after.contains("/home/pnu-"), "{after}");
    assert!(
        !stored(&mut hunt, &admin, "diagnostics", &device, None)
            .await
            .is_empty()
    );
    sensor.shutdown().await;
    server.stop().await;
}
