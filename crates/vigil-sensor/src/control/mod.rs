//! The sensor's local control socket: what `vigil-sensor inspect` and
//! `vigil-sensor status` ask the running sensor.
//!
//! What it is: a Unix socket in the data directory (`control.sock`, mode
//! 0600, removed when the sensor stops) that answers only root and the
//! sensor's own user (checked on every connection with `SO_PEERCRED`). It
//! lists the records held in the spool, follows the records the pipeline
//! appends to it (the exact bytes spooled, hence sent), and reports the
//! sensor's state.
//!
//! What it is not: a way to change anything. Nothing a client sends alters
//! the sensor, its spool or what it sends; and a client never slows the
//! pipeline: records reach followers through a bounded broadcast, and a
//! follower that falls behind it is told how many records it missed and cut
//! off.
//!
//! # Protocol
//!
//! The client sends one request, a JSON object on one line of at most
//! [`MAX_REQUEST`] bytes: `{"op":"inspect","follow":false}` or
//! `{"op":"status"}`. The sensor answers with frames, then closes:
//!
//! ```text
//! frame   = length:u32 (big-endian; counts type and body) type:u8 body
//! type 1  = a record: sequence:u64 (big-endian), then the record's bytes as spooled
//! type 2  = a notice: one JSON object (`Notice`: listed, lagged, skipped, end, error, status)
//! ```
//!
//! A frame is at most [`MAX_FRAME`] bytes; a record too large for one is
//! announced by a `skipped` notice instead. `inspect` sends every record the
//! spool holds, oldest first, then `listed`; with `follow`, then every record
//! as it is appended, until the sensor stops (`end`) or the client falls more
//! than [`FOLLOW_BUFFER`] records behind (`lagged`, with the count missed).
//!
//! Bounds: [`MAX_CLIENTS`] connections at once (one more is answered with an
//! `error` notice and closed), [`REQUEST_WAIT`] for the request line,
//! [`WRITE_STALL`] for a client to take one frame.

mod client;
mod frame;
mod serve;
mod status;

pub use client::{Client, ClientError};
pub use frame::{Frame, FrameError, Notice, Request};
pub use status::{Connection, RulesStatus, SpoolStatus, Status};

use crate::pipeline::Pipeline;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";
/// Connections served at once.
pub const MAX_CLIENTS: usize = 8;
/// Longest request line, newline included.
pub const MAX_REQUEST: usize = 4096;
/// Longest frame (type and body), either way.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Records a follower may fall behind the pipeline before it is cut off.
pub const FOLLOW_BUFFER: usize = 4096;
/// How long a client has to send its request.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How long a client may take to read one frame before it is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long `status` waits for the pipeline to describe itself (it looks
/// between two events, at least once a second).
pub(crate) const PIPELINE_WAIT: Duration = Duration::from_secs(3);

/// The socket of the sensor whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// A record as spooled: its sequence number and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spooled {
    pub(crate) sequence: u64,
    pub(crate) bytes: Arc<[u8]>,
}

/// What the pipeline says of itself when asked (between two events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) sources: Vec<String>,
    pub(crate) degraded: Vec<String>,
    pub(crate) rules_version: String,
    pub(crate) rules_loaded: u32,
    /// Records and events lost, by reason, as health reports them (without
    /// `spool_full`, which the spool counts).
    pub(crate) losses: BTreeMap<String, u64>,
    pub(crate) redacted: BTreeMap<String, u64>,
}

/// The pipeline's side of the control socket: the records it spooled go to
/// followers, and it describes itself when asked. Cheap when nobody listens:
/// no copy of a record is made without a follower.
#[derive(Clone)]
pub(crate) struct Hooks {
    inner: Arc<HooksInner>,
}

struct HooksInner {
    tee: broadcast::Sender<Spooled>,
    wanted: AtomicBool,
    snapshot: Mutex<Option<Snapshot>>,
    answered: Notify,
    started: Instant,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks::with_buffer(FOLLOW_BUFFER)
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("followers", &self.inner.tee.receiver_count())
            .finish_non_exhaustive()
    }
}

/// Records of one spool append, kept only while somebody follows.
pub(crate) struct TeeBatch(Option<Vec<Spooled>>);

impl TeeBatch {
    pub(crate) fn keep(&mut self, sequence: u64, bytes: &[u8]) {
        if let Some(v) = &mut self.0 {
            v.push(Spooled {
                sequence,
                bytes: bytes.into(),
            });
        }
    }
}

impl Hooks {
    pub(crate) fn with_buffer(buffer: usize) -> Hooks {
        Hooks {
            inner: Arc::new(HooksInner {
                tee: broadcast::channel(buffer.max(1)).0,
                wanted: AtomicBool::new(false),
                snapshot: Mutex::new(None),
                answered: Notify::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Starts collecting the records of one spool append.
    pub(crate) fn tee_batch(&self) -> TeeBatch {
        TeeBatch((self.inner.tee.receiver_count() > 0).then(Vec::new))
    }

    /// The records of an append that committed, to every follower. Never
    /// waits: a follower that fell behind loses the oldest and is told so.
    pub(crate) fn teed(&self, batch: TeeBatch) {
        for r in batch.0.into_iter().flatten() {
            let _ = self.inner.tee.send(r);
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Spooled> {
        self.inner.tee.subscribe()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Called by the pipeline between events: describes it if asked to.
    pub(crate) fn offer(&self, p: &Pipeline) {
        if self.inner.wanted.swap(false, Ordering::AcqRel) {
            let s = snapshot(p);
            if let Ok(mut slot) = self.inner.snapshot.lock() {
                *slot = Some(s);
            }
            self.inner.answered.notify_waiters();
        }
    }

    /// Asks the pipeline to describe itself and waits for it (at most
    /// `within`); `None` when it did not answer and never has.
    pub(crate) async fn ask(&self, within: Duration) -> (Option<Snapshot>, bool) {
        let answered = self.inner.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        self.inner.wanted.store(true, Ordering::Release);
        let fresh = tokio::time::timeout(within, answered).await.is_ok();
        let last = self.inner.snapshot.lock().ok().and_then(|s| s.clone());
        (last, fresh)
    }
}

/// What the pipeline knows of itself; the losses are the ones its health
/// record reports (`Pipeline::health`), but for the spool's own count.
fn snapshot(p: &Pipeline) -> Snapshot {
    let losses = p.losses();
    Snapshot {
        sources: p.sources.clone(),
        degraded: p.degraded.clone(),
        rules_version: p.host.rules_version.clone(),
        rules_loaded: p.host.rules_loaded,
        losses,
        redacted: p.enricher.redacted.clone(),
    }
}

/// What the control socket serves from, beside the pipeline's hooks.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) hooks: Hooks,
    pub(crate) data_dir: PathBuf,
    /// The spool and its capacity in bytes (a standalone sensor has none).
    pub(crate) spool: Option<(Arc<vigil_spool::Spool>, u64)>,
    pub(crate) uplink: Option<watch::Receiver<crate::uplink::UplinkStatus>>,
    pub(crate) endpoint: Option<String>,
    /// Device and tenant ids of an enrolled sensor.
    pub(crate) device: Option<(String, String)>,
    pub(crate) published: Arc<crate::published::Running>,
}

/// The control socket, served until [`Server::shutdown`] (or drop).
pub(crate) struct Server {
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Server {
    /// Binds `control.sock` in the data directory (a stale one left by a
    /// sensor that died is replaced; one that answers is another sensor's
    /// and left alone) and serves it on the current tokio runtime.
    pub(crate) fn start(ctx: Context) -> std::io::Result<Server> {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path(&ctx.data_dir);
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} answers: another sensor serves it", path.display()),
            ));
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve::accept(listener, ctx, stop_rx));
        Ok(Server {
            path,
            stop,
            task: Some(task),
        })
    }

    /// [`Server::start`] where a tokio runtime runs; a socket that cannot be
    /// served is logged, and the sensor runs without it.
    pub(crate) fn start_or_warn(ctx: Context) -> Option<Server> {
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("No async runtime: the control socket (inspect, status) is off");
            return None;
        }
        let path = socket_path(&ctx.data_dir);
        match Server::start(ctx) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Control socket unavailable: inspect and status cannot reach this sensor");
                None
            }
        }
    }

    /// Tells followers the sensor stops (after what the pipeline flushed
    /// last), ends every connection and removes the socket.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests;
