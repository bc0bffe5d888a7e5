//! Group commit: a thread that flushes the log at an interval.

use crate::error::{AuditError, io_err};
use crate::log::AuditLog;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Stops the flusher when dropped, after one last flush.
#[derive(Debug)]
pub struct FlusherHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a thread that calls [`AuditLog::flush`] every `every` (a flush with
/// nothing new appended costs nothing), and once more when the handle is dropped.
///
/// A failed flush is logged (once per run of failures) and retried at the next tick.
pub fn spawn_flusher(log: Arc<AuditLog>, every: Duration) -> Result<FlusherHandle, AuditError> {
    let (stop, stopped) = mpsc::channel::<()>();
    let path = log.path().to_owned();
    let thread = thread::Builder::new()
        .name("vigil-audit-flush".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let last = match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => false,
                    // A message or a dropped sender: stop.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                };
                match log.flush() {
                    Ok(()) if failing => {
                        tracing::info!(path = %log.path().display(), "Audit log flushes again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing || last => {
                        tracing::warn!(error = %e, "Audit log flush failed");
                        failing = true;
                    }
                    Err(_) => {}
                }
                if last {
                    return;
                }
            }
        })
        .map_err(|e| io_err(&path, e))?;
    Ok(FlusherHandle {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // The thread does not panic; if it did, there is nothing left to stop.
            let _ = t.join();
        }
    }
}
