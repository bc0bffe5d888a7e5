//! Admission control for sensor record streams: what ingest holds in memory
//! and does at once is bounded, and an overloaded server slows sensors down
//! or sends them away for a while rather than falling over.
//!
//! Two limits, both from the configuration:
//!
//! - **Streams** (`max_sensor_streams`): a new record stream past the limit is
//!   refused at once with `RESOURCE_EXHAUSTED` and a retry hint, before
//!   anything reads the control store or a tenant's store, so a storm of
//!   reconnects costs the server a TLS handshake and a few bytes each.
//! - **Bytes in flight** (`max_ingest_bytes_in_flight`): every batch read from
//!   a stream holds its encoded size from then until it is stored (or
//!   refused) and its acknowledgement made. A stream whose next batch does not fit waits, and reads nothing
//!   more meanwhile: HTTP/2 flow control then holds its sensor back. Admitted
//!   streams are slowed, never refused, for load.
//!
//! Beyond the budget, memory is bounded by stream: at most one batch read but
//! waiting for room (≤ `max_message_bytes`) and one HTTP/2 window (1 MiB,
//! hyper's default) of unread bytes.
//!
//! The retry hint is the metadata entry `retry-after-ms` (ASCII digits,
//! milliseconds; [`RETRY_AFTER_KEY`]), sent with the refusal and with the
//! `UNAVAILABLE` that ends open streams at shutdown. Sensors wait at least that
//! long, plus jitter, before they reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The metadata key of the retry hint: milliseconds as ASCII digits.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";

/// The limits and what is held against them now.
#[derive(Debug)]
pub struct Admission {
    streams: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_streams: usize,
    max_bytes: usize,
    retry_after: Duration,
    streams_open: AtomicU64,
    streams_peak: AtomicU64,
    bytes_held: AtomicU64,
    bytes_peak: AtomicU64,
    refused: AtomicU64,
}

/// What ingest holds now, and the most it ever held (for operators and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestLoad {
    pub streams_open: u64,
    pub streams_peak: u64,
    pub max_streams: u64,
    /// Encoded bytes of batches read and not yet stored.
    pub bytes_in_flight: u64,
    pub bytes_peak: u64,
    pub max_bytes: u64,
    /// Streams refused for load since the server started.
    pub refused: u64,
}

impl Admission {
    pub(crate) fn new(config: &crate::ServerConfig) -> Arc<Admission> {
        Arc::new(Admission {
            streams: Arc::new(Semaphore::new(config.max_sensor_streams)),
            bytes: Arc::new(Semaphore::new(config.max_ingest_bytes_in_flight)),
            max_streams: config.max_sensor_streams,
            max_bytes: config.max_ingest_bytes_in_flight,
            retry_after: Duration::from_millis(config.retry_after_ms),
            streams_open: AtomicU64::new(0),
            streams_peak: AtomicU64::new(0),
            bytes_held: AtomicU64::new(0),
            bytes_peak: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// What is held now.
    pub fn load(&self) -> IngestLoad {
        IngestLoad {
            streams_open: self.streams_open.load(Ordering::Acquire),
            streams_peak: self.streams_peak.load(Ordering::Acquire),
            max_streams: self.max_streams as u64,
            bytes_in_flight: self.bytes_held.load(Ordering::Acquire),
            bytes_peak: self.bytes_peak.load(Ordering::Acquire),
            max_bytes: self.max_bytes as u64,
            refused: self.refused.load(Ordering::Acquire),
        }
    }

    /// A place for one more record stream, or `RESOURCE_EXHAUSTED` with the
    /// retry hint. Touches nothing but this struct.
    pub(crate) fn open_stream(self: &Arc<Self>) -> Result<StreamSlot, Status> {
        let Ok(permit) = Arc::clone(&self.streams).try_acquire_owned() else {
            self.refused.fetch_add(1, Ordering::AcqRel);
            crate::metrics::refused("overloaded");
            tracing::debug!(
                limit = self.max_streams,
                "Sensor stream refused: too many open"
            );
            return Err(self.hinted(Status::resource_exhausted(format!(
                "the server is at its limit of {} sensor streams: nothing was lost, \
                 retry after {} ms",
                self.max_streams,
                self.retry_after.as_millis()
            ))));
        };
        let open = self.streams_open.fetch_add(1, Ordering::AcqRel) + 1;
        self.streams_peak.fetch_max(open, Ordering::AcqRel);
        crate::metrics::streams_open(1);
        Ok(StreamSlot {
            admission: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Room for a batch of `bytes` (encoded); waits until there is. A batch
    /// larger than the whole budget (the configuration rules it out) holds
    /// all of it.
    pub(crate) fn hold(
        self: &Arc<Self>,
        bytes: usize,
    ) -> impl std::future::Future<Output = Held> + Send + 'static {
        let n = bytes.min(self.max_bytes).max(1);
        let admission = Arc::clone(self);
        async move {
            let permits = u32::try_from(n).unwrap_or(u32::MAX);
            // The semaphore is never closed: an error cannot happen, and
            // would only mean the batch goes unaccounted.
            let permit = Arc::clone(&admission.bytes)
                .acquire_many_owned(permits)
                .await
                .ok();
            let n = u64::from(permits);
            let held = admission.bytes_held.fetch_add(n, Ordering::AcqRel) + n;
            admission.bytes_peak.fetch_max(held, Ordering::AcqRel);
            crate::metrics::ingest_bytes_in_flight(n as i64);
            Held {
                admission,
                n,
                _permit: permit,
            }
        }
    }

    /// `status` with the retry hint in its metadata.
    pub(crate) fn hinted(&self, mut status: Status) -> Status {
        if let Ok(v) = self.retry_after.as_millis().to_string().parse() {
            status.metadata_mut().insert(RETRY_AFTER_KEY, v);
        }
        status
    }
}

/// An admitted stream's place; freed when dropped.
pub(crate) struct StreamSlot {
    admission: Arc<Admission>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.admission.streams_open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::streams_open(-1);
    }
}

/// A batch's share of the budget; given back when dropped (once stored).
pub(crate) struct Held {
    admission: Arc<Admission>,
    n: u64,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Counted down before the permit returns: the count never exceeds
        // the permits held, hence the limit.
        self.admission
            .bytes_held
            .fetch_sub(self.n, Ordering::AcqRel);
        crate::metrics::ingest_bytes_in_flight(-(self.n as i64));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn admission(streams: usize, bytes: usize) -> Arc<Admission> {
        let mut c = crate::ServerConfig::new("127.0.0.1:1".parse().unwrap(), "/d".into());
        c.max_sensor_streams = streams;
        c.max_ingest_bytes_in_flight = bytes;
        c.retry_after_ms = 1500;
        Admission::new(&c)
    }

    #[test]
    fn streams_past_the_limit_are_refused_with_a_hint_and_freed_on_drop() {
        let a = admission(2, 1 << 20);
        let one = a.open_stream().unwrap();
        let _two = a.open_stream().unwrap();
        let refused = a.open_stream().err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused
                .metadata()
                .get(RETRY_AFTER_KEY)
                .unwrap()
                .to_str()
                .unwrap(),
            "1500"
        );
        assert_eq!(a.load().refused, 1);
        drop(one);
        let _three = a.open_stream().unwrap();
        let load = a.load();
        assert_eq!((load.streams_open, load.streams_peak), (2, 2));
    }

    #[tokio::test]
    async fn batches_wait_for_room_and_the_count_never_passes_the_limit() {
        let a = admission(8, 1000);
        let first = a.hold(600).await;
        let second = a.hold(400).await;
        assert_eq!(a.load().bytes_in_flight, 1000);
        // No room: the third waits until one is given back.
        let third = tokio::spawn(a.hold(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        let load = a.load();
        assert_eq!((load.bytes_in_flight, load.bytes_peak), (900, 1000));
        drop((first, third));
        assert_eq!(a.load().bytes_in_flight, 0);
        // One larger than the budget takes it all rather than waiting forever.
        let big = a.hold(5000).await;
        assert_eq!(a.load().bytes_in_flight, 1000);
        drop(big);
    }
}
