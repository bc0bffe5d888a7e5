//! Shared helpers: a real server on loopback with real TLS, tenants and clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vigil_proto::v1::{alerts_client::AlertsClient, ingest_client::IngestClient};

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub control: Arc<vigil_store::ControlStore>,
    pub ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = vigil_server::ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("server"),
        );
        let server = vigil_server::Server::bind(cfg).await.expect("server binds");
        let addr = server.local_addr().expect("addr");
        let control = server.control();
        let ca_pem = std::fs::read_to_string(
            vigil_server::pki::PkiPaths::new(&dir.path().join("server")).ca_cert(),
        )
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
            ca_pem,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_file(&self) -> PathBuf {
        vigil_server::pki::PkiPaths::new(&self.dir.path().join("server")).ca_cert()
    }

    /// The server's CA, loaded from its data directory (to forge test certificates).
    pub fn ca(&self) -> vigil_pki::CertificateAuthority {
        let pki = self.dir.path().join("server/pki");
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
        return Some("needs root (CAP_AUDIT_CONTROL for audit netlink, CAP_NET_ADMIN for the proc connector)".into());
    }
    None
}
