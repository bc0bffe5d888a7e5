//! Shared helpers: a real server on loopback with real TLS, tenants and clients.

#![allow(dead_code)]

pub mod tenants;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vigil_proto::v1::{alerts_client::AlertsClient, ingest_client::IngestClient};

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub control: Arc<vigil_store::ControlStore>,
    /// Ingest's admission control: streams and batch bytes held, and their peaks.
    pub admission: Arc<vigil_server::Admission>,
    maintenance: vigil_server::Maintenance,
    pub ca_pem: String,
    /// The server's data directory (`dir/server` unless a test moved it).
    data: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with_options(|_| {}, vigil_server::BindOptions::default()).await
    }

    /// Starts a server whose configuration `configure` changed first, built
    /// with `opts` (an injected clock, say).
    pub async fn start_with_options(
        configure: impl FnOnce(&mut vigil_server::ServerConfig),
        opts: vigil_server::BindOptions,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_configured(dir, "127.0.0.1:0".parse().expect("addr"), configure, opts).await
    }

    /// The server's background work, to run a pass now.
    pub fn maintenance(&self) -> vigil_server::Maintenance {
        self.maintenance.clone()
    }

    /// Starts a server whose configuration `configure` changed first.
    pub async fn start_with(configure: impl FnOnce(&mut vigil_server::ServerConfig)) -> TestServer {
        Self::start_with_options(configure, vigil_server::BindOptions::default()).await
    }

    /// Stops the server, keeping its data and address for [`Paused::resume`].
    pub async fn pause(mut self) -> Paused {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let addr = self.addr;
        self.stop().await;
        Paused { dir, addr }
    }

    async fn start_configured(
        dir: tempfile::TempDir,
        listen: SocketAddr,
        configure: impl FnOnce(&mut vigil_server::ServerConfig),
        opts: vigil_server::BindOptions,
    ) -> TestServer {
        let mut cfg = vigil_server::ServerConfig::new(listen, dir.path().join("server"));
        configure(&mut cfg);
        // A restarted server may find its store still held by connections that
        // are closing, or its port in TIME_WAIT: retry (up to 30 s on a busy machine).
        let mut tries = 0;
        let server = loop {
            match vigil_server::Server::bind_with(cfg.clone(), opts.clone()).await {
                Ok(s) => break s,
                Err(e) if tries < 300 => {
                    tries += 1;
                    eprintln!("server bind retry: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("server binds: {e}"),
            }
        };
        let addr = server.local_addr().expect("addr");
        let control = server.control();
        let admission = server.admission();
        let maintenance = server.maintenance();
        let data = cfg.data_dir.clone();
        let ca_pem = std::fs::read_to_string(vigil_server::pki::PkiPaths::new(&data).ca_cert())
            .expect("ca written");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        TestServer {
            dir,
            addr,
            control,
            admission,
            maintenance,
            ca_pem,
            data,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Creates tenant `id` in the local region; an API token of `role` for
    /// it and an enrollment token (valid five minutes).
    pub fn tenant(&self, id: &str, role: vigil_store::Role) -> (String, String) {
        self.control
            .create_tenant(Some(id), id, "local", 90)
            .expect("tenant");
        let api = self
            .control
            .create_api_token(Some(id), role, "test", 0, "test")
            .expect("api token")
            .0;
        let enroll = self
            .control
            .create_enrollment_token(id, std::time::Duration::from_secs(300), "test")
            .expect("enrollment token")
            .0;
        (api, enroll)
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_file(&self) -> PathBuf {
        vigil_server::pki::PkiPaths::new(&self.data).ca_cert()
    }

    /// The server's CA, loaded from its data directory (to forge test certificates).
    pub fn ca(&self) -> vigil_pki::CertificateAuthority {
        let pki = self.data.join("pki");
        vigil_pki::CertificateAuthority::from_pem(
            &std::fs::read_to_string(pki.join("ca.pem")).expect("ca.pem"),
            &std::fs::read_to_string(pki.join("ca.key")).expect("ca.key"),
        )
        .expect("ca loads")
    }

    pub async fn channel(
        &self,
        identity: Option<Identity>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        Channel::from_shared(self.endpoint())
            .expect("uri")
            .tls_config(tls)?
            .connect()
            .await
    }

    pub async fn ingest(&self, identity: Option<Identity>) -> IngestClient<Channel> {
        IngestClient::new(self.channel(identity).await.expect("connects"))
    }

    pub async fn alerts(&self) -> AlertsClient<Channel> {
        AlertsClient::new(self.channel(None).await.expect("connects"))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        drop(self.control);
        drop(self.maintenance);
    }
}

/// A stopped server's data directory and address.
pub struct Paused {
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Paused {
    pub async fn resume(self) -> TestServer {
        self.resume_with(|_| {}, vigil_server::BindOptions::default())
            .await
    }

    /// Resumes with a changed configuration (fewer regions, say).
    pub async fn resume_with(
        self,
        configure: impl FnOnce(&mut vigil_server::ServerConfig),
        opts: vigil_server::BindOptions,
    ) -> TestServer {
        TestServer::start_configured(self.dir, self.addr, configure, opts).await
    }
}

/// A request carrying an analyst's bearer token.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

/// Why a root-only test cannot run here, if it cannot.
pub fn root_skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "needs root (CAP_BPF and CAP_PERFMON for eBPF; CAP_AUDIT_CONTROL and CAP_NET_ADMIN for the audit fallback)"
                .into(),
        );
    }
    None
}

/// A sensor configuration that enrolls into `server` with `enroll_token`,
/// keeps its data beside the server's, and loads the shipped rules/. The
/// sensor runs inside the test process, so it must not leave out the
/// processes that process starts (`collect.exclude_self = false`).
pub fn sensor_config(server: &TestServer, enroll_token: &str) -> vigil_sensor::SensorConfig {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    sensor_config_with_rules(server, enroll_token, &rules)
}

/// The same, loading rules from `rules`.
pub fn sensor_config_with_rules(
    server: &TestServer,
    enroll_token: &str,
    rules: &std::path::Path,
) -> vigil_sensor::SensorConfig {
    let cfg = format!(
        "data_dir = {:?}\n[server]\nendpoint = {:?}\nca_file = {:?}\nserver_name = \"localhost\"\n\
         [enrollment]\ntoken = {:?}\n[rules]\npaths = [{:?}]\n[collect]\ninventory = false\nexclude_self = false\n",
        server.dir.path().join("sensor"),
        server.endpoint(),
        server.ca_file(),
        enroll_token,
        rules
    );
    vigil_sensor::SensorConfig::parse(std::path::Path::new("test.toml"), &cfg).expect("config")
}

/// One kernel-reading sensor at a time: audit has one daemon per host, and
/// sensors would compete for the machine's cores.
pub async fn kernel_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Entry for tests that need the kernel: their turn, or `None` (the reason
/// printed) where this machine cannot run them.
pub async fn kernel_test(name: &str) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if let Some(why) = root_skip_reason() {
        eprintln!("SKIPPED {name}: {why}");
        return None;
    }
    Some(kernel_lock().await)
}

/// Starts a sensor that reads execs from the kernel — eBPF, or audit where
/// eBPF is unavailable or `cfg.collect.ebpf` is false — or `None` (the reason
/// printed) when it has neither.
pub async fn start_kernel_sensor(
    name: &str,
    cfg: vigil_sensor::SensorConfig,
) -> Option<vigil_sensor::Sensor> {
    let sensor = vigil_sensor::Sensor::start(cfg)
        .await
        .expect("sensor starts");
    if !sensor
        .sources
        .iter()
        .any(|s| s.contains("eBPF") || s.contains("audit"))
    {
        eprintln!(
            "SKIPPED {name}: neither eBPF nor audit netlink available: {:?}",
            sensor.degraded
        );
        sensor.shutdown().await;
        return None;
    }
    Some(sensor)
}

/// A device of `tenant` enrolled as a sensor would: its certificate and id.
pub async fn enroll(server: &TestServer, tenant: &str) -> (Identity, String) {
    let token = server
        .control
        .create_enrollment_token(tenant, std::time::Duration::from_secs(60), "test")
        .map(|t| t.0)
        .expect("token");
    let (key, csr) = vigil_pki::device_key_and_csr("test-host").expect("csr");
    let resp = server
        .ingest(None)
        .await
        .enroll(vigil_proto::v1::EnrollRequest {
            enrollment_token: token,
            csr_pem: csr,
            host: None,
        })
        .await
        .expect("enrolls")
        .into_inner();
    (
        Identity::from_pem(resp.certificate_pem, key),
        resp.device_id,
    )
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("a readable directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A small filesystem of its own (an ext4 image on a loop device), so a test
/// can fill it without touching the machine's disk; unmounted on drop.
pub struct SmallDisk {
    mount: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (the reason printed) where loop mounts are not possible.
    pub fn new(name: &str, mib: u64) -> Option<SmallDisk> {
        if let Some(why) = root_skip_reason() {
            eprintln!("SKIPPED {name}: {why}");
            return None;
        }
        let image = tempfile::tempdir().unwrap();
        let file = image.path().join("disk.img");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&file)
            .status();
        let mount = tempfile::tempdir().unwrap();
        let mounted = mkfs.is_ok_and(|s| s.success())
            && std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&file)
                .arg(mount.path())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED {name}: cannot make and loop-mount an ext4 image here");
            return None;
        }
        Some(SmallDisk {
            mount,
            _image: image,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        self.mount.path()
    }

    /// Fills the filesystem with one file, `name`, until `left` bytes are free
    /// (about: to a block).
    pub fn fill_leaving(&self, name: &str, left: u64) -> std::path::PathBuf {
        let path = self.path().join(name);
        let vfs = nix::sys::statvfs::statvfs(self.path()).unwrap();
        let free = vfs.blocks_available() * vfs.fragment_size();
        let f = std::fs::File::create(&path).unwrap();
        // Allocated, not a hole: it takes the space at once.
        nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::empty(),
            0,
            free.saturating_sub(left) as i64,
        )
        .unwrap();
        f.sync_all().unwrap();
        path
    }

    /// Fills the filesystem with one file, `filler`, until no byte is left.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let mut small = vec![0u8; 4096];
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}
