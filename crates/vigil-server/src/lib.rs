//! Vigil's server.
//!
//! What it is: the gRPC backend sensors stream to and people administer and
//! query. Data path, one module each: `ingest` (enrollment, record stream) →
//! store (the `vigil-store` crate: one encrypted database per tenant, in its
//! region) → `alert` (detections become alerts) → `query` (the Alerts
//! service). Governance beside it: `auth` (tokens, roles, grants), `operator`
//! (tenants), `admin` (a tenant's people, sensors, settings), `audit` (the
//! hash-chained trail and its service), `live` (open streams and the switches
//! that end them), `maintenance` (retention, audit group commit, key
//! rotation), `metrics`, `ops` (reflection). Offline transfer: `transfer`
//! (bundles a sensor exported, imported by a tenant admin through ingest's
//! own commit path). Backpressure: `admission` (sensor streams and batch
//! bytes in flight, bounded; refusals carry a retry hint).
//!
//! Invariants: the tenant of sensor data is taken from the device certificate
//! verified by TLS, never from a payload; the tenant of an API call from its
//! token (an operator's only under an approved grant). Every API call and
//! every refusal is written to the audit trail before the call answers.
//!
//! Rules: sensors evaluate rules and the server raises what they detect;
//! only correlations of tenant scope (`vigil: {scope: tenant}`) run here,
//! over the records of every device of a tenant (`correlate`).
//!
//! What it is not: a certificate store for anything but its own CA.

mod admin;
pub mod admission;
mod alert;
mod audit;
mod auth;
mod commit;
pub mod config;
mod correlate;
/// The fuzz targets' entry points (`fuzz/`): `wire` and `hunt::index` are
/// crate-private; this exposes what the fuzzer needs and nothing else.
#[doc(hidden)]
pub mod fuzzing;
mod hunt;
mod indexer;
mod ingest;
mod live;
pub mod maintenance;
mod metrics;
mod operator;
mod ops;
pub mod pki;
mod privacy;
mod query;
mod rules;
mod tls;
mod transfer;
mod wire;

pub use admission::{Admission, IngestLoad};
pub use auth::TENANT_HEADER;
pub use config::{RegionConfig, ServerConfig};
pub use maintenance::Maintenance;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::Status;
use vigil_proto::v1::{
    admin_server::AdminServer, alerts_server::AlertsServer, audit_server::AuditServer,
    hunt_server::HuntServer, operator_server::OperatorServer, privacy_server::PrivacyServer,
    raw::ingest_server::IngestServer, rules_server::RulesServer, transfer_server::TransferServer,
};
use vigil_store::{Clock, ControlStore, KeyProvider, StoreError, StoreOptions};

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

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "Internal error");
    Status::internal("internal error")
}

/// A store error as the status a caller should see.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::UnknownTenant(t) => Status::not_found(format!("no tenant {t}")),
        StoreError::RegionNotServed { .. } => {
            metrics::refused("region_not_served");
            Status::failed_precondition(e.to_string())
        }
        StoreError::Invalid(m) => Status::invalid_argument(m),
        StoreError::BadIdentifier(_) => Status::invalid_argument(e.to_string()),
        StoreError::NotFound(m) => Status::not_found(format!("no such {m}")),
        StoreError::TenantExists(_) => Status::already_exists(e.to_string()),
        StoreError::DiskFull(_) => {
            tracing::error!(error = %e, "Store refused a write: disk full");
            metrics::refused("disk_full");
            Status::resource_exhausted(
                "the server's disk is full: nothing of this was stored; send it again later",
            )
        }
        StoreError::Io { ref source, .. } if matches!(source.raw_os_error(), Some(28 | 122)) => {
            store_status(StoreError::DiskFull(e.to_string()))
        }
        other => internal(other),
    }
}

/// What the services share.
pub(crate) struct Shared {
    pub(crate) control: Arc<ControlStore>,
    pub(crate) ca: vigil_pki::CertificateAuthority,
    pub(crate) config: ServerConfig,
    pub(crate) alerts: alert::AlertBus,
    pub(crate) audit: audit::AuditLogs,
    pub(crate) live: live::Live,
    pub(crate) committers: commit::Committers,
    pub(crate) rules: rules::Distribution,
    pub(crate) events: hunt::EventBus,
    pub(crate) correlators: correlate::Correlators,
    pub(crate) policies: privacy::PolicyBus,
    /// What offline bundles are encrypted to (`transfer`).
    pub(crate) transfer: vigil_bundle::TransferKey,
    /// Sensor streams and batch bytes held, against their limits.
    pub(crate) admission: Arc<admission::Admission>,
}

/// What a server is built with besides its configuration (tests inject a clock).
#[derive(Debug, Default, Clone)]
pub struct BindOptions {
    /// Default: the machine's clock.
    pub clock: Option<Arc<dyn Clock>>,
    /// Default: master keys in files under `data_dir/store/keys`.
    pub keys: Option<Arc<dyn KeyProvider>>,
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

/// Opens the store a configuration describes.
pub fn open_store(config: &ServerConfig, opts: &BindOptions) -> Result<ControlStore, ServerError> {
    let dir = config.store_dir();
    let keys = match &opts.keys {
        Some(k) => Arc::clone(k),
        None => Arc::new(vigil_store::FileKeyProvider::open(&dir.join("keys"))?),
    };
    Ok(ControlStore::open(StoreOptions {
        dir,
        regions: config.served_regions(),
        keys,
        clock: opts
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(vigil_store::SystemClock)),
    })?)
}

impl Server {
    /// Opens the store, loads (or creates) the PKI, and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Server::bind_with(config, BindOptions::default()).await
    }

    pub async fn bind_with(config: ServerConfig, opts: BindOptions) -> Result<Server, ServerError> {
        let control = Arc::new(open_store(&config, &opts)?);
        let pki = pki::load_or_create(&pki::PkiPaths::new(&config.data_dir), &config.server_names)?;
        // Sensors authenticate with device certificates from our CA; enrollment
        // (which has none yet) and people's API calls are made without.
        let tls = tls::server_config(&pki.server_cert_pem, &pki.server_key_pem, pki.ca.cert_pem())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Io(format!("listen on {}: {e}", config.listen)))?;
        let audit = audit::AuditLogs::open(Arc::clone(&control))?;
        let admission = admission::Admission::new(&config);
        let shared = Arc::new(Shared {
            control,
            ca: pki.ca,
            config,
            alerts: alert::AlertBus::default(),
            audit,
            live: live::Live::default(),
            committers: commit::Committers::default(),
            rules: rules::Distribution::default(),
            events: hunt::EventBus::default(),
            correlators: correlate::Correlators::default(),
            policies: privacy::PolicyBus::default(),
            transfer: pki.transfer,
            admission,
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

    /// The control store, for bootstrap (the first operator token, `vigil up`).
    pub fn control(&self) -> Arc<ControlStore> {
        Arc::clone(&self.shared.control)
    }

    /// Ingest's admission control: what it holds against its limits.
    pub fn admission(&self) -> Arc<Admission> {
        Arc::clone(&self.shared.admission)
    }

    /// The server's background work, to run a pass now.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let max = self.shared.config.max_message_bytes;
        if let Some(addr) = self.shared.config.metrics_listen {
            metrics::install(addr)?;
        }
        let background = maintenance::start(&self.shared);
        macro_rules! svc {
            ($server:ident, $svc:expr) => {
                $server::new($svc)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            };
        }
        let shared = || Arc::clone(&self.shared);
        let ingest = svc!(IngestServer, ingest::IngestService { shared: shared() });
        let alerts = svc!(AlertsServer, query::AlertsService { shared: shared() });
        let operator = svc!(
            OperatorServer,
            operator::OperatorService { shared: shared() }
        );
        let admin = svc!(AdminServer, admin::AdminService { shared: shared() });
        let audit = svc!(AuditServer, audit::AuditService { shared: shared() });
        let rules = svc!(RulesServer, rules::RulesService { shared: shared() });
        let hunt = svc!(HuntServer, hunt::HuntService { shared: shared() });
        let privacy = svc!(PrivacyServer, privacy::PrivacyService { shared: shared() });
        // A bundle is one message, bounded by its format, not by `max_message_bytes`.
        let transfer = TransferServer::new(transfer::TransferService::new(shared()))
            .max_decoding_message_size(transfer::MAX_REQUEST_BYTES)
            .max_encoding_message_size(max);
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IngestServer<ingest::IngestService>>()
            .await;
        health_reporter
            .set_serving::<AlertsServer<query::AlertsService>>()
            .await;
        health_reporter
            .set_serving::<OperatorServer<operator::OperatorService>>()
            .await;
        health_reporter
            .set_serving::<AdminServer<admin::AdminService>>()
            .await;
        health_reporter
            .set_serving::<AuditServer<audit::AuditService>>()
            .await;
        health_reporter
            .set_serving::<RulesServer<rules::RulesService>>()
            .await;
        health_reporter
            .set_serving::<HuntServer<hunt::HuntService>>()
            .await;
        health_reporter
            .set_serving::<PrivacyServer<privacy::PrivacyService>>()
            .await;
        health_reporter
            .set_serving::<TransferServer<transfer::TransferService>>()
            .await;
        let addr = self.local_addr()?;
        tracing::info!(%addr, "Serving gRPC over TLS 1.3");
        let flush = Maintenance {
            shared: Arc::clone(&self.shared),
        };
        // Open streams end with UNAVAILABLE once shutdown starts: a graceful
        // shutdown waits for every call, and these would never end on their own.
        let live = Arc::clone(&self.shared);
        let shutdown = async move {
            shutdown.await;
            let n = live.live.shutdown();
            tracing::info!(streams = n, "Shutting down: open streams told to reconnect");
        };
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health)
            .add_service(ops::reflection()?)
            .add_service(ingest)
            .add_service(alerts)
            .add_service(operator)
            .add_service(admin)
            .add_service(audit)
            .add_service(rules)
            .add_service(hunt)
            .add_service(privacy)
            .add_service(transfer)
            .serve_with_incoming_shutdown(tls::incoming(self.listener, self.tls), shutdown)
            .await
            .map_err(|e| ServerError::Transport(e.to_string()));
        for t in background {
            t.abort();
        }
        flush.flush_audit().await;
        result
    }
}
