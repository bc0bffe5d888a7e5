//! The server's tamper-evident audit trail.
//!
//! What it is: an append-only file of JSON lines, one per API call (who, role,
//! tenant, method, a summary of the arguments, result, time, peer), each
//! chained to the one before by an HMAC-SHA-256 under a 32-byte key the caller
//! holds, and a MACed head checkpoint beside it (`<log>.head`) that says where
//! the log ended at the last flush. Someone who can edit the files but has no
//! key cannot change, remove, reorder or add an entry, nor cut entries off the
//! end, without [`verify_file`] (or [`AuditLog::verify`]) saying so and where.
//!
//! What it is not: it does not keep the key (the server keeps it wrapped under
//! its master key), choose file names, rotate or expire logs, or know what the
//! API calls mean. It cannot tell a log (or its head checkpoint) from an older
//! copy of itself: someone who rolls both back together is not detected, and
//! neither is a log swapped for another one written under the same key — give
//! each log its own key, or anchor checkpoints somewhere else, where that matters.
//! It does not hide entries from someone who can read the files.
//!
//! # Format
//!
//! One entry per line, the JSON of [`Entry`] with its fields in this order:
//! `seq` (1, 2, 3…, no gaps), `time_unix_ns`, `actor`, `actor_id`, `role`,
//! `tenant_id`, `method`, `summary`, `result`, `peer`, `prev` (the previous
//! entry's `mac`; 64 zeros for the first) and `mac`, both lowercase hex.
//! `mac = HMAC-SHA-256(key, canonical bytes)`, where the canonical bytes are
//! every field but `mac`, in a fixed order, never the JSON text:
//!
//! ```text
//! "vigil-audit v1 entry\n"   the 21 ASCII bytes of this tag
//! seq                        u64, big-endian
//! time_unix_ns               i64, big-endian (two's complement)
//! actor, actor_id, role, tenant_id, method, summary, result, peer, prev
//!                            each a u32 big-endian byte length, then its UTF-8 bytes
//! ```
//!
//! Because the MAC covers values rather than text, verification also requires
//! each line to be exactly what serializing its entry gives back, so a changed
//! escape (`\u001f` to `\u001F`) or spacing is caught like any other changed byte.
//!
//! The head checkpoint is one JSON line `{"seq":…,"mac":…,"head_mac":…}`: the
//! last flushed entry's seq and MAC (0 and 64 zeros for an empty log), and
//! `head_mac = HMAC-SHA-256(key, "vigil-audit v1 head\n" || seq as u64
//! big-endian || u32 big-endian length || mac's hex text)`. It is rewritten
//! atomically: a temporary file written and synced, renamed over it, the
//! directory synced. A new log gets its checkpoint before its first entry, so a
//! non-empty log without one has had it removed.
//!
//! # Durability and latency
//!
//! An fsync per API call would cost far more than the call, and auditing should
//! add no more than a few percent to it. So [`AuditLog::append`] writes the whole
//! line with one `write` to an `O_APPEND` file ([`AuditLog::append_ref`] does the
//! same from borrowed fields, allocating nothing: what the server calls on its
//! request path): when it returns, the entry is in
//! the kernel's page cache and survives a crash of the process, not of the
//! machine. Durability is by group commit: [`AuditLog::flush`] (`fdatasync`,
//! then the head checkpoint) runs from a background thread every ~200 ms when
//! anything was appended ([`spawn_flusher`]) and at shutdown. A power loss can
//! therefore lose the last ~200 ms of entries — never silently corrupt older
//! ones, and never leave the checkpoint ahead of what is on disk (it is written
//! after the sync, naming only what the sync covered). Appends are serialized by
//! a mutex, so seq order is file order.
//!
//! # Recovery
//!
//! [`AuditLog::open`] reads only the end of the file. A torn last line (no
//! newline, not an intact entry: an append cut short) is removed with a
//! warning. Anything else wrong is left for verify to report, and the chain goes
//! on so that the report survives the next checkpoint: after entries removed
//! from the end it continues from the checkpoint's seq (leaving a seq gap),
//! after a missing or changed checkpoint it restarts with a zero `prev`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! use vigil_audit::{AuditLog, NewEntry};
//! let key = [7u8; 32];
//! let log = AuditLog::open(&dir.path().join("deployment.audit"), &key)?;
//! log.append(NewEntry { method: "Admin/CreateTenant".into(), result: "ok".into(), ..Default::default() })?;
//! log.flush()?;
//! assert!(log.verify()?.ok);
//! # Ok(())
//! # }
//! ```

mod entry;
mod error;
mod flusher;
mod head;
mod lines;
mod log;
mod verify;

pub use entry::{Entry, MAX_FIELD_BYTES, MAX_SUMMARY_BYTES, NewEntry, NewEntryRef, ZERO_MAC};
pub use error::AuditError;
pub use flusher::{FlusherHandle, spawn_flusher};
pub use lines::MAX_LINE_BYTES;
pub use log::AuditLog;
pub use verify::{VerifyReport, verify_file};

#[cfg(test)]
mod tests;
