//! Enrollment and the record stream to the server.
//!
//! Enrollment runs once, over server-authenticated TLS, and leaves the device
//! key and certificate in the data directory, with the server CA it trusted
//! (`pin`): later connections trust that CA, not the configuration's. The
//! stream then runs over mutual TLS: batches are read from the spool, sent,
//! and removed from the spool only when the server acknowledges them. A
//! dropped connection is retried with jittered exponential backoff (`backoff`;
//! the server's retry hint a floor) and resumes from the first unacknowledged
//! record: a refused or cut stream loses nothing, the spool keeps it all.
//!
//! Memory is bounded on this side too: at most `MAX_IN_FLIGHT` batches (each
//! at most half of `uplink.max_message_bytes`) are read from the spool and not
//! yet acknowledged; the rest waits on disk. A server that reads slowly
//! (HTTP/2 flow control) slows the reading of the spool, nothing more.

pub mod backoff;
pub mod pin;

pub use backoff::Backoff;

use crate::SensorError;
use crate::config::{SensorConfig, ServerConfig};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vigil_proto::v1::{
    EnrollRequest, HostInfo, RawRecordBatch, Record, ingest_client::IngestClient,
    raw::ingest_client::IngestClient as RawIngestClient,
};
use vigil_spool::Spool;

/// Batches sent but not yet acknowledged, at most.
const MAX_IN_FLIGHT: usize = 8;
/// A session that stayed open this long worked, acknowledged or not (an idle
/// sensor): the next reconnect starts from the shortest wait again.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Why a session ended, and what that means for the next attempt.
#[derive(Debug)]
struct Ended {
    error: SensorError,
    /// The server's `retry-after-ms`, when it said when to come back.
    retry_after: Option<Duration>,
}

impl Ended {
    fn status(what: &str, s: &tonic::Status) -> Ended {
        Ended {
            error: SensorError::Transport(format!("{what}{}: {}", s.code(), s.message())),
            retry_after: backoff::retry_hint(s),
        }
    }
}

impl From<SensorError> for Ended {
    fn from(error: SensorError) -> Ended {
        Ended {
            error,
            retry_after: None,
        }
    }
}

/// What the uplink is doing, for the operator (and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStatus {
    /// Streams the server accepted since the sensor started: each one after
    /// the server's certificate verified against the trusted CA and the server
    /// accepted the device's.
    pub sessions_opened: u64,
    /// Whether a stream is open now.
    pub connected: bool,
    /// Why the last session failed to open or ended, if one did.
    pub last_error: Option<String>,
    /// When the server last acknowledged a batch (Unix ns; 0: not yet), and
    /// the sequence number it then held records through.
    pub last_ack_unix_ns: i64,
    pub acked_through: u64,
}

/// What enrollment left on disk.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub tenant_id: String,
    cert_pem: String,
    key_pem: String,
}

fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(data.as_bytes())?;
    f.sync_all()
}

impl DeviceIdentity {
    pub fn load(dir: &Path) -> Option<DeviceIdentity> {
        let ids = std::fs::read_to_string(dir.join("identity")).ok()?;
        let (device_id, tenant_id) = ids.trim().split_once(' ')?;
        Some(DeviceIdentity {
            device_id: device_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            cert_pem: std::fs::read_to_string(dir.join("device.pem")).ok()?,
            key_pem: std::fs::read_to_string(dir.join("device.key")).ok()?,
        })
    }

    /// The device and tenant ids enrollment left in `dir`, without reading
    /// the key (for `vigil-sensor status` of a stopped sensor).
    pub fn ids(dir: &Path) -> Option<(String, String)> {
        let ids = std::fs::read_to_string(dir.join("identity")).ok()?;
        let (device_id, tenant_id) = ids.trim().split_once(' ')?;
        Some((device_id.to_owned(), tenant_id.to_owned()))
    }

    /// The device's private key (PKCS#8 PEM): it signs offline bundles.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        write_private(&dir.join("device.key"), &self.key_pem)?;
        write_private(&dir.join("device.pem"), &self.cert_pem)?;
        // Written last: its presence means enrollment completed.
        write_private(
            &dir.join("identity"),
            &format!("{} {}\n", self.device_id, self.tenant_id),
        )
    }
}

fn server(cfg: &SensorConfig) -> Result<&ServerConfig, SensorError> {
    cfg.server().map_err(SensorError::Config)
}

fn tls(server: &ServerConfig, ca_pem: &str, identity: Option<&DeviceIdentity>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(server.server_name());
    if let Some(id) = identity {
        t = t.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    t
}

pub(crate) async fn channel(
    cfg: &SensorConfig,
    ca_pem: &str,
    identity: Option<&DeviceIdentity>,
) -> Result<Channel, SensorError> {
    let server = server(cfg)?;
    let ep = Channel::from_shared(server.endpoint.clone())
        .map_err(|e| SensorError::Config(format!("server.endpoint: {e}")))?
        .tls_config(tls(server, ca_pem, identity))
        .map_err(|e| SensorError::Transport(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30));
    ep.connect()
        .await
        .map_err(|e| SensorError::Transport(format!("connect {}: {}", server.endpoint, causes(&e))))
}

/// An error with its causes: tonic's own message for a failed connection is
/// only "transport error"; the reason (refused, a certificate that does not
/// verify) is further down.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

pub(crate) fn read_ca(cfg: &SensorConfig) -> Result<String, SensorError> {
    let ca_file = &server(cfg)?.ca_file;
    std::fs::read_to_string(ca_file)
        .map_err(|e| SensorError::Config(format!("server.ca_file {}: {e}", ca_file.display())))
}

/// Enrolls this device unless an identity is already on disk.
pub async fn ensure_enrolled(
    cfg: &SensorConfig,
    host: &HostInfo,
) -> Result<DeviceIdentity, SensorError> {
    if let Some(id) = DeviceIdentity::load(&cfg.data_dir) {
        return Ok(id);
    }
    let token = match (&cfg.enrollment.token, &cfg.enrollment.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| {
                SensorError::Config(format!("enrollment.token_file {}: {e}", f.display()))
            })?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(SensorError::Config(
                "not enrolled and no enrollment token configured".into(),
            ));
        }
    };
    let ca = read_ca(cfg)?;
    let (key_pem, csr_pem) = vigil_pki::device_key_and_csr(&host.hostname)
        .map_err(|e| SensorError::Enroll(e.to_string()))?;
    let mut client = IngestClient::new(channel(cfg, &ca, None).await?);
    let resp = client
        .enroll(EnrollRequest {
            enrollment_token: token,
            csr_pem,
            host: Some(host.clone()),
        })
        .await
        .map_err(|s| SensorError::Enroll(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    // The server must be the one the CA file names: otherwise this sensor
    // would pin a CA it was never told to trust.
    let ca_file = &server(cfg)?.ca_file;
    match pin::same_certificates(&ca, &resp.ca_pem) {
        Ok(true) => {}
        Ok(false) => {
            return Err(SensorError::Enroll(format!(
                "the server's CA (in its enrollment response) is not the CA in server.ca_file {}; \
                 enrollment is not completed: check that ca_file is the CA of {}",
                ca_file.display(),
                server(cfg)?.endpoint
            )));
        }
        Err(e) => {
            return Err(SensorError::Enroll(format!(
                "the server's CA in its enrollment response cannot be compared with server.ca_file {}: {e}",
                ca_file.display()
            )));
        }
    }
    // Pinned before the identity, whose file marks enrollment complete; so
    // are the tenant's pseudonym key and privacy policy.
    pin::save(&cfg.data_dir, &ca)
        .map_err(|e| SensorError::Io(format!("saving the server CA: {e}")))?;
    crate::export::save_transfer_key(&cfg.data_dir, &resp.transfer_public_key)?;
    crate::privacy::save(
        &cfg.data_dir,
        Some(&resp.pseudonym_key),
        &resp.policy.unwrap_or_default(),
    )
    .map_err(|e| SensorError::Io(format!("saving the privacy policy: {e}")))?;
    let id = DeviceIdentity {
        device_id: resp.device_id,
        tenant_id: resp.tenant_id,
        cert_pem: resp.certificate_pem,
        key_pem,
    };
    id.save(&cfg.data_dir)
        .map_err(|e| SensorError::Io(format!("saving identity: {e}")))?;
    tracing::info!(device = %id.device_id, tenant = %id.tenant_id, "Enrolled");
    Ok(id)
}

/// Streams the spool to the server until `stop` turns true. Public (hidden)
/// so that tests drive the sensor's own uplink over a spool they fill.
#[doc(hidden)]
pub async fn run(
    cfg: SensorConfig,
    identity: DeviceIdentity,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<UplinkStatus>,
) {
    let mut backoff = Backoff::new();
    let mut trust = pin::Trust::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut acknowledged = false;
        let outcome = session(
            &cfg,
            &identity,
            &spool,
            &wake,
            &mut stop,
            &mut trust,
            &status,
            &mut acknowledged,
        )
        .await;
        status.send_modify(|s| s.connected = false);
        let ended = match outcome {
            Ok(()) => return,
            Err(e) => e,
        };
        if acknowledged || started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let wait = backoff.next_delay(ended.retry_after);
        tracing::warn!(
            error = %ended.error,
            retry_in_ms = wait.as_millis() as u64,
            server_hint_ms = ended.retry_after.map(|h| h.as_millis() as u64),
            "Uplink interrupted"
        );
        status.send_modify(|s| s.last_error = Some(ended.error.to_string()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One stream, until it ends; `acknowledged` turns true at the first ack.
#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &SensorConfig,
    identity: &DeviceIdentity,
    spool: &Arc<Spool>,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
    trust: &mut pin::Trust,
    status: &watch::Sender<UplinkStatus>,
    acknowledged: &mut bool,
) -> Result<(), Ended> {
    let ca = trust.session_ca(cfg)?;
    let ch = channel(cfg, &ca.pem, Some(identity)).await?;
    // Records are sent as the bytes spooled (never decoded and encoded again,
    // which could reorder map entries): what `inspect` shows is what is sent.
    let mut client = RawIngestClient::new(ch)
        .max_decoding_message_size(cfg.uplink.max_message_bytes)
        .max_encoding_message_size(cfg.uplink.max_message_bytes);
    let (tx, rx) = tokio::sync::mpsc::channel::<RawRecordBatch>(MAX_IN_FLIGHT);
    let mut acks = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| Ended::status("open stream: ", &s))?
        .into_inner();
    tracing::info!(endpoint = %server(cfg)?.endpoint, "Uplink connected");
    status.send_modify(|s| {
        s.sessions_opened += 1;
        s.connected = true;
    });
    if !ca.pinned {
        // Enrolled before pinning: the server just proved it holds a
        // certificate from the configured CA and accepted this device.
        match pin::save(&cfg.data_dir, &ca.pem) {
            Ok(()) => tracing::info!(
                pinned = %cfg.data_dir.join(pin::PIN_FILE).display(),
                "Server CA pinned; server.ca_file is no longer read"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "Pinning the server CA failed; retried at the next connection")
            }
        }
    }
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
    let mut sent_through = 0u64;
    let mut batch_id = 0u64;
    let max_bytes = cfg.uplink.max_message_bytes / 2;
    loop {
        while in_flight.len() < MAX_IN_FLIGHT {
            let sp = Arc::clone(spool);
            let max = cfg.uplink.batch_max_records;
            let after = sent_through;
            let recs = tokio::task::spawn_blocking(move || sp.read_after(after, max, max_bytes))
                .await
                .map_err(|e| SensorError::Io(e.to_string()))?
                .map_err(|e| SensorError::Io(e.to_string()))?;
            let Some(last) = recs.last().map(|r| r.0) else {
                break;
            };
            let mut records = Vec::with_capacity(recs.len());
            for (seq, bytes) in recs {
                match <Record as prost::Message>::decode(bytes.as_slice()) {
                    Ok(_) => records.push(bytes.into()),
                    // Our own spool, but a disk can rot: skip what cannot be read rather than wedge.
                    Err(e) => tracing::error!(seq, error = %e, "Corrupt spool record skipped"),
                }
            }
            batch_id += 1;
            if tx.send(RawRecordBatch { batch_id, records }).await.is_err() {
                return Err(ended_by_server(&mut acks).await);
            }
            in_flight.push_back((batch_id, last));
            sent_through = last;
        }
        tokio::select! {
            ack = acks.next() => {
                let ack = match ack {
                    Some(Ok(a)) => a,
                    Some(Err(s)) => return Err(Ended::status("", &s)),
                    None => return Err(SensorError::Transport("server closed the stream".into()).into()),
                };
                *acknowledged = true;
                while in_flight.front().is_some_and(|(id, _)| *id <= ack.batch_id) {
                    in_flight.pop_front();
                }
                let sp = Arc::clone(spool);
                let through = ack.stored_through;
                status.send_modify(|s| {
                    s.last_ack_unix_ns = crate::pipeline::now_ns();
                    s.acked_through = through;
                });
                tokio::task::spawn_blocking(move || sp.ack_through(through))
                    .await
                    .map_err(|e| SensorError::Io(e.to_string()))?
                    .map_err(|e| SensorError::Io(e.to_string()))?;
            }
            _ = wake.notified(), if in_flight.len() < MAX_IN_FLIGHT => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {
                // Give in-flight batches a moment to be acknowledged; the rest waits in the spool.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while !in_flight.is_empty() {
                    match tokio::time::timeout_at(deadline, acks.next()).await {
                        Ok(Some(Ok(ack))) => {
                            in_flight.retain(|(id, _)| *id > ack.batch_id);
                            let _ = spool.ack_through(ack.stored_through);
                        }
                        _ => break,
                    }
                }
                return Ok(());
            }
        }
    }
}

/// The server stopped reading the stream: why (and its retry hint) comes
/// last on the acks. Acks before it are dropped: their records are sent
/// again and counted as duplicates, which is safe.
async fn ended_by_server(acks: &mut tonic::Streaming<vigil_proto::v1::BatchAck>) -> Ended {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, acks.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(s))) => return Ended::status("", &s),
            Ok(None) | Err(_) => {
                return SensorError::Transport("the server closed the stream".into()).into();
            }
        }
    }
}
