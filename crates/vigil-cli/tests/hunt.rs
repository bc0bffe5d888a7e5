//! `vigil hunt` and `vigil device` against a stand-in Hunt service over real
//! TLS: the request the command line sends, records printed as the pages
//! arrive, `--limit` held even when the server sends more, errors, and
//! device list from Hunt.ListDevices. No root, no `vigil up`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use tokio_stream::Stream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use vigil_proto::v1::hunt_server::{Hunt, HuntServer};
use vigil_proto::v1::record::Payload;
use vigil_proto::v1::*;

const T: i64 = 1_700_000_000_000_000_000;

/// The search requests the stand-in received.
type Seen = Arc<Mutex<Vec<SearchEventsRequest>>>;

struct Fake(Seen);

fn stored(sequence: u64, command_line: &str) -> StoredRecord {
    StoredRecord {
        device_id: "dev1".into(),
        hostname: "vm".into(),
        record: Some(Record {
            sequence,
            time_unix_ns: T,
            payload: Some(Payload::ProcessStart(ProcessStart {
                guid: format!("g-{sequence}"),
                command_line: command_line.into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
    }
}

type Pages = Pin<Box<dyn Stream<Item = Result<SearchEventsResponse, Status>> + Send>>;
type Records = Pin<Box<dyn Stream<Item = Result<StoredRecord, Status>> + Send>>;

#[tonic::async_trait]
impl Hunt for Fake {
    type SearchEventsStream = Pages;
    type WatchEventsStream = Records;

    /// Two pages of two records, whatever the limit (the client holds it);
    /// a condition on `Fail` ends the stream with an error after one page.
    async fn search_events(
        &self,
        r: Request<SearchEventsRequest>,
    ) -> Result<Response<Pages>, Status> {
        let r = r.into_inner();
        let fail = r.conditions.iter().any(|c| c.field == "Fail");
        self.0.lock().expect("lock").push(r);
        let mut pages = vec![
            Ok(SearchEventsResponse {
                records: vec![stored(1, "id"), stored(2, "cat /etc/shadow")],
                chunks_scanned: 3,
            }),
            Ok(SearchEventsResponse {
                records: vec![stored(3, "ls"), stored(4, "uname -a")],
                chunks_scanned: 5,
            }),
        ];
        if fail {
            pages[1] = Err(Status::invalid_argument("unknown field Fail"));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(pages))))
    }

    async fn get_process_tree(
        &self,
        _: Request<GetProcessTreeRequest>,
    ) -> Result<Response<ProcessTree>, Status> {
        Err(Status::not_found("no process g-9"))
    }

    async fn file_prevalence(
        &self,
        _: Request<FilePrevalenceRequest>,
    ) -> Result<Response<FilePrevalenceResponse>, Status> {
        Ok(Response::new(FilePrevalenceResponse {
            matched_as: "path".into(),
            devices: Vec::new(),
        }))
    }

    async fn list_devices(
        &self,
        _: Request<ListHuntDevicesRequest>,
    ) -> Result<Response<ListHuntDevicesResponse>, Status> {
        Ok(Response::new(ListHuntDevicesResponse {
            devices: vec![Device {
                info: Some(DeviceInfo {
                    device_id: "dev1".into(),
                    hostname: "vm".into(),
                    connected: true,
                    rules_version: "v1".into(),
                    ..Default::default()
                }),
                host: Some(HostInfo {
                    os_name: "Debian GNU/Linux".into(),
                    os_version: "13".into(),
                    sensor_version: "0.1.0".into(),
                    ..Default::default()
                }),
                lost: 2,
                ..Default::default()
            }],
        }))
    }

    async fn get_device(&self, _: Request<GetDeviceRequest>) -> Result<Response<Device>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn watch_events(
        &self,
        _: Request<SearchEventsRequest>,
    ) -> Result<Response<Records>, Status> {
        let records = vec![
            Ok(stored(7, "id")),
            Err(Status::resource_exhausted("watcher fell behind")),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(records))))
    }
}

/// Starts the stand-in and writes an analyst profile for it.
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
        .add_service(HuntServer::new(Fake(seen)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
    let profile = dir.join("analyst.toml");
    std::fs::write(
        &profile,
        format!(
            "endpoint = \"https://{addr}\"\nca_file = \"{}\"\nserver_name = \"localhost\"\ntoken = \"vgl_an\"\n",
            dir.join("ca.pem").display()
        ),
    )
    .expect("profile");
    profile
}

async fn vigil(profile: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.arg("--profile").arg(profile).args(args);
    c.env_remove("VIGIL_PROFILE").env_remove("VIGIL_TENANT");
    tokio::task::spawn_blocking(move || c.output().expect("run vigil"))
        .await
        .expect("join")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_commands_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Seen::default();
    let profile = start(dir.path(), seen.clone()).await;

    // The request as written, every page printed, the count on stderr.
    let o = vigil(
        &profile,
        &[
            "hunt",
            "search",
            "--kind",
            "process_start",
            "--device",
            "dev1",
            "--since",
            "2023-11-14T22:13:20Z",
            "CommandLine*=a=b",
            "Image^=/usr/",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("time ") && lines[0].ends_with("summary"),
        "{out}"
    );
    assert!(
        lines[2].contains("vm") && lines[2].ends_with("cat /etc/shadow"),
        "{out}"
    );
    assert!(lines[4].ends_with("uname -a"), "{out}");
    assert_eq!(
        text(&o.stderr).trim(),
        "4 records matched (5 chunks scanned)"
    );
    let r = seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a search");
    assert_eq!(
        (r.kind.as_str(), r.device_id.as_str()),
        ("process_start", "dev1")
    );
    assert_eq!((r.since_unix_ns, r.until_unix_ns, r.limit), (T, 0, 0));
    assert_eq!(r.conditions.len(), 2);
    assert_eq!(
        (
            r.conditions[0].field.as_str(),
            r.conditions[0].op,
            r.conditions[0].value.as_str()
        ),
        ("CommandLine", MatchOp::Contains as i32, "a=b")
    );
    assert_eq!(r.conditions[1].op, MatchOp::Prefix as i32);

    // JSON lines, and the limit held although the server sent more.
    let o = vigil(&profile, &["hunt", "search", "--limit", "3", "--json"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2]["sequence"], 3);
    assert_eq!(lines[1]["kind"], "process_start");
    assert_eq!(lines[1]["event"]["CommandLine"], "cat /etc/shadow");
    assert_eq!(
        seen.lock().expect("lock").last().expect("a search").limit,
        3
    );

    // A stream that fails after a page: what came is printed, then the error.
    let o = vigil(&profile, &["hunt", "search", "Fail=1"]).await;
    assert!(!o.status.success());
    assert_eq!(text(&o.stdout).lines().count(), 3);
    assert_eq!(
        text(&o.stderr).trim(),
        "error: invalid argument: unknown field Fail"
    );

    // Errors and empty answers.
    let o = vigil(&profile, &["hunt", "process-tree", "g-9"]).await;
    assert!(!o.status.success());
    assert_eq!(text(&o.stderr).trim(), "error: not found: no process g-9");
    let o = vigil(&profile, &["hunt", "prevalence", "/usr/bin/x"]).await;
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "");
    assert_eq!(text(&o.stderr).trim(), "seen on no device");

    // A watcher cut off for falling behind says so.
    let o = vigil(&profile, &["hunt", "watch"]).await;
    assert!(!o.status.success());
    assert_eq!(text(&o.stdout).lines().count(), 2);
    assert!(text(&o.stderr).contains("resource exhausted: watcher fell behind"));

    // device list reads Hunt.ListDevices.
    let o = vigil(&profile, &["device", "list"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.lines()
            .next()
            .expect("header")
            .starts_with("id    hostname  os"),
        "{out}"
    );
    assert!(
        out.contains("Debian GNU/Linux 13") && out.contains("0.1.0"),
        "{out}"
    );
    let o = vigil(&profile, &["device", "list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON");
    assert_eq!(
        (v["rules_version"].clone(), v["lost"].clone()),
        ("v1".into(), 2.into())
    );
}
