//! The real `vigil-server` binary in a child process, so that a bench can
//! tell the server's CPU (`/proc/PID/stat`) from its own: configured in a
//! scratch directory on the root disk, bootstrapped offline (`tenant-create`,
//! `enrollment-token`, `api-token`: the store allows one process), started,
//! and stopped with SIGINT (what its ctrl-c handler waits for).

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The server binary: VIGIL_SERVER_BIN, else built (or found) beside this bench.
pub fn server_bin(bench: &str) -> Result<Option<PathBuf>> {
    super::release_bin(bench, "vigil-server", "VIGIL_SERVER_BIN")
}

/// A configured server, running or not.
pub struct ServerProcess {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl ServerProcess {
    /// Writes a configuration (default settings; loopback on a free port)
    /// in a scratch directory on the root disk.
    pub fn configure(bench: &str, bin: &Path) -> Result<ServerProcess> {
        let dir = super::disk_tempdir(bench)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\ndata_dir = {:?}\n",
                dir.path().join("server")
            ),
        )?;
        Ok(ServerProcess {
            bin: bin.to_owned(),
            dir,
            config,
            addr,
            child: None,
        })
    }

    /// Runs an offline subcommand (the server must be stopped); its stdout.
    pub fn offline(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "vigil-server {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Creates tenant `id`; returns its admin token.
    pub fn create_tenant(&self, id: &str) -> Result<String> {
        let out = self.offline(&["tenant-create", id, "--id", id])?;
        out.lines()
            .find_map(|l| l.strip_prefix("admin_token "))
            .map(str::to_owned)
            .context("tenant-create printed no admin token")
    }

    pub fn enrollment_token(&self, tenant: &str) -> Result<String> {
        Ok(self
            .offline(&["enrollment-token", tenant, "--hours", "2"])?
            .trim()
            .to_owned())
    }

    pub fn api_token(&self, tenant: &str, role: &str) -> Result<String> {
        Ok(self
            .offline(&["api-token", tenant, "--name", "bench", "--role", role])?
            .trim()
            .to_owned())
    }

    /// Starts `serve`; its log (level `log`) goes to `server.log` in the
    /// scratch directory. Returns once it accepts connections.
    pub fn start(&mut self, log: &str) -> Result<()> {
        let log_file = std::fs::File::create(self.dir.path().join("server.log"))?;
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                std::fs::File::open(self.dir.path().join("server.log"))?
                    .read_to_string(&mut err)?;
                bail!("server exited ({status}): {err}");
            }
            if Instant::now() > deadline {
                bail!("server did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGINT, then waits for the exit (SIGKILL after 20 s).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
            nix::sys::signal::Signal::SIGINT,
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("server exit: {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("server did not stop within 20 s of SIGINT; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ca_pem(&self) -> Result<String> {
        let path = vigil_server::pki::PkiPaths::new(&self.dir.path().join("server")).ca_cert();
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// A TLS channel to the server, with a device identity for mutual TLS.
    pub async fn channel(&self, identity: Option<Identity>) -> Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()?))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        Ok(Channel::from_shared(format!("https://{}", self.addr))?
            .tls_config(tls)?
            .connect()
            .await?)
    }

    /// The server's store, opened in this process (the server must be stopped).
    pub fn open_store(&self) -> Result<vigil_store::ControlStore> {
        let cfg = vigil_server::ServerConfig::load(&self.config)?;
        Ok(vigil_server::open_store(
            &cfg,
            &vigil_server::BindOptions::default(),
        )?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The scratch directory goes with this value: keep the log if asked.
        if let Some(to) = std::env::var_os("SERVER_LOG_COPY") {
            let _ = std::fs::copy(self.dir.path().join("server.log"), to);
        }
    }
}
