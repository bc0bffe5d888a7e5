//! Vigil's server.
//!
//! What it is: the gRPC backend sensors stream to and analysts query. Data
//! path, one module each: `ingest` (enrollment, record stream) → store (the
//! `vigil-store` crate: one encrypted database per tenant) → `alert`
//! (detections become alerts) → `query` (the Alerts service).
//!
//! Invariants: the tenant of sensor data is taken from the device certificate
//! verified by TLS, never from a payload; the tenant of an analyst call from
//! their API token. Every analyst access is logged to the `audit` target.
//!
//! What it is not: a rule engine (sensors evaluate rules; the server raises
//! what they detect) or a certificate store for anything but its own CA.

mod alert;
pub mod config;
mod ingest;
mod metrics;
mod ops;
pub mod pki;
mod query;
mod tls;

pub use config::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use vigil_proto::v1::{alerts_server::AlertsServer, ingest_server::IngestServer};
use vigil_store::ControlStore;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store: {0}")]
    Store(#[from] vigil_store::StoreError),
    #[error("certificates: {0}")]
    Pki(#[from] vigil_pki::PkiError),
    #[error("I/O: {0}")]
    Io(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// What the services share.
pub(crate) struct Shared {
    pub(crate) control: Arc<ControlStore>,
    pub(crate) ca: vigil_pki::CertificateAuthority,
    pub(crate) config: ServerConfig,
    pub(crate) alerts: alert::AlertBus,
}

/// A server bound to its address and ready to serve.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: rustls::ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, loads (or creates) the PKI, and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let control = Arc::new(ControlStore::open(&config.data_dir.join("store"))?);
        let pki = pki::load_or_create(&pki::PkiPaths::new(&config.data_dir), &config.server_names)?;
        // Sensors authenticate with device certificates from our CA; enrollment
        // (which has none yet) is the one call allowed without.
        let tls = tls::server_config(&pki.server_cert_pem, &pki.server_key_pem, pki.ca.cert_pem())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Io(format!("listen on {}: {e}", config.listen)))?;
        let shared = Arc::new(Shared {
            control,
            ca: pki.ca,
            config,
            alerts: alert::AlertBus::default(),
        });
        Ok(Server {
            listener,
            shared,
            tls,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|e| ServerError::Io(e.to_string()))
    }

    /// The control store, for administration (tenants, tokens).
    pub fn control(&self) -> Arc<ControlStore> {
        Arc::clone(&self.shared.control)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let max = self.shared.config.max_message_bytes;
        let ingest = IngestServer::new(ingest::IngestService {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let alerts = AlertsServer::new(query::AlertsService {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IngestServer<ingest::IngestService>>()
            .await;
        health_reporter
            .set_serving::<AlertsServer<query::AlertsService>>()
            .await;
        let addr = self.local_addr()?;
        self.shared
            .config
            .metrics_listen
            .map(metrics::install)
            .transpose()?;
        tracing::info!(%addr, "Serving gRPC over TLS 1.3");
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health)
            .add_service(ops::reflection()?)
            .add_service(ingest)
            .add_service(alerts)
            .serve_with_incoming_shutdown(tls::incoming(self.listener, self.tls), shutdown)
            .await
            .map_err(|e| ServerError::Transport(e.to_string()))
    }
}
