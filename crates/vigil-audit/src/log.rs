//! The writer: open (with tail recovery), append, flush, list, verify.

use crate::entry::{Entry, LineRef, NewEntry, NewEntryRef, ZERO_MAC, mac_parts};
use crate::error::{AuditError, io_err};
use crate::head::{self, Head};
use crate::lines::{Line, MAX_LINE_BYTES, read_line};
use crate::verify::{VerifyReport, check_line, verify_stream};
use std::borrow::Cow;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use zeroize::Zeroizing;

/// One audit log file, open for appending. Share it behind an `Arc`.
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    key: Zeroizing<[u8; 32]>,
    /// Opened with `O_APPEND` (every write lands at the end) and read only with
    /// positioned reads; `flock`ed for the life of the value.
    file: File,
    /// Held for each append: seq order is file order.
    state: Mutex<State>,
    /// Held for each flush, so checkpoints are written in order.
    flushed: Mutex<u64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (seq, _) = self.head();
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("seq", &seq)
            .finish_non_exhaustive()
    }
}

/// Where the chain stands: the next entry is `seq + 1` with `prev = mac`.
struct State {
    seq: u64,
    mac: String,
    /// The line being written, kept between appends so that its memory is reused.
    line: Vec<u8>,
    /// A failed write may have left part of a line: start the next one on a line of its own.
    needs_newline: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the state is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the end of the file says after recovery.
struct Tail {
    /// The last entry that is intact: `(seq, mac)`.
    last: Option<(u64, String)>,
    /// The file holds at least one line.
    nonempty: bool,
}

impl AuditLog {
    /// Opens the log at `path`, creating its directory (mode 0700) and the file
    /// (mode 0600) if missing, and continues its chain.
    ///
    /// A torn last line (bytes after the last newline that are not an intact
    /// entry: a crash mid-append) is cut off with a warning. Nothing else is
    /// repaired: open succeeds so that auditing goes on, and the chain continues
    /// so that [`AuditLog::verify`] keeps reporting what was wrong — after
    /// entries removed from the end, from the seq and MAC the head checkpoint
    /// holds (a seq gap); after a missing or changed head checkpoint, with a
    /// zero `prev` (a chain restart).
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<AuditLog, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(dir, e))?;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(path, e)),
        }
        if !existed {
            head::sync_dir(path)?;
        }
        let key = Zeroizing::new(*key);
        let head_path = head::head_path(path);
        let tail = recover_tail(&file, path, &key)?;
        let head = head::read(&head_path, &key)?;
        let (seq, mac) = continue_from(path, &tail, &head);
        if head == Head::Missing && !tail.nonempty {
            // A new log: its checkpoint exists before its first entry, so a
            // missing one never means "not written yet".
            head::write(&head_path, &key, 0, ZERO_MAC)?;
        }
        Ok(AuditLog {
            path: path.to_owned(),
            head_path,
            key,
            file,
            flushed: Mutex::new(seq),
            state: Mutex::new(State {
                seq,
                mac,
                line: Vec::with_capacity(1024),
                needs_newline: false,
            }),
        })
    }

    /// Appends one entry: one `write` of the whole line to the `O_APPEND` file,
    /// so it is in the page cache (it survives the process) when this returns.
    /// It is on disk after the next [`AuditLog::flush`].
    ///
    /// Text fields are cut to [`crate::MAX_SUMMARY_BYTES`] (summary) or
    /// [`crate::MAX_FIELD_BYTES`] (the rest), on a char boundary, ending in "…".
    pub fn append(&self, e: NewEntry) -> Result<Entry, AuditError> {
        let mut entry = None;
        self.append_with(&e.as_ref(), |seq, time, fields, prev, mac| {
            entry = Some(Entry::from_parts(seq, time, fields, prev, mac.to_owned()));
        })?;
        entry.ok_or_else(|| AuditError::Encode("no entry".into()))
    }

    /// [`AuditLog::append`] of a borrowed entry, returning only its seq: no
    /// allocation per entry (the line is built in a buffer the log keeps),
    /// for callers on a request path.
    pub fn append_ref(&self, e: &NewEntryRef<'_>) -> Result<u64, AuditError> {
        self.append_with(e, |_, _, _, _, _| {})
    }

    /// Seals and writes `e`; `done` sees the entry's parts before the lock is let go.
    fn append_with<'e>(
        &self,
        e: &NewEntryRef<'e>,
        done: impl FnOnce(u64, i64, [Cow<'e, str>; 8], &str, &str),
    ) -> Result<u64, AuditError> {
        let fields = e.bounded();
        let mut st = lock(&self.state);
        let seq = st
            .seq
            .checked_add(1)
            .ok_or_else(|| AuditError::SeqExhausted {
                path: self.path.clone(),
            })?;
        let mut mac = [0u8; 64];
        hex::encode_to_slice(
            mac_parts(&self.key, seq, e.time_unix_ns, &fields, &st.mac),
            &mut mac,
        )
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        let mac = std::str::from_utf8(&mac).map_err(|e| AuditError::Encode(e.to_string()))?;
        let mut line = std::mem::take(&mut st.line);
        line.clear();
        if st.needs_newline {
            line.push(b'\n');
        }
        let written = serde_json::to_writer(
            &mut line,
            &LineRef::new(seq, e.time_unix_ns, &fields, &st.mac, mac),
        )
        .map_err(|e| AuditError::Encode(e.to_string()))
        .and_then(|()| {
            line.push(b'\n');
            self.write_line(&line, &mut st)
        });
        st.line = line;
        written?;
        st.needs_newline = false;
        st.seq = seq;
        done(seq, e.time_unix_ns, fields, &st.mac, mac);
        st.mac.clear();
        st.mac.push_str(mac);
        Ok(seq)
    }

    /// Writes `line` at the end; on failure, takes back whatever part of it was written.
    fn write_line(&self, line: &[u8], st: &mut State) -> Result<(), AuditError> {
        let mut written = 0;
        while written < line.len() {
            match (&self.file).write(&line[written..]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote nothing");
                    return Err(self.undo_partial(written, e, st));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.undo_partial(written, e, st)),
            }
        }
        Ok(())
    }

    fn undo_partial(&self, written: usize, e: io::Error, st: &mut State) -> AuditError {
        if written > 0 {
            let undone = self.file.metadata().and_then(|m| {
                let len = m
                    .len()
                    .checked_sub(written as u64)
                    .ok_or(io::ErrorKind::InvalidData)?;
                self.file.set_len(len)
            });
            if let Err(undo) = undone {
                tracing::warn!(path = %self.path.display(), error = %undo, "Audit log keeps part of a failed append; the next entry starts a new line");
                st.needs_newline = true;
            }
        }
        io_err(&self.path, e)
    }

    /// Makes every entry appended so far durable (`fdatasync`), then rewrites
    /// the head checkpoint. Does nothing when nothing was appended since the last flush.
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut flushed = lock(&self.flushed);
        self.flush_locked(&mut flushed)
    }

    fn flush_locked(&self, flushed: &mut u64) -> Result<(), AuditError> {
        // Taken before the sync: the checkpoint never names an entry the sync did not cover.
        let (seq, mac) = self.head();
        if seq == *flushed {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        head::write(&self.head_path, &self.key, seq, &mac)?;
        *flushed = seq;
        Ok(())
    }

    /// The length of the file with no append in flight: every byte below it is a whole line.
    fn settled_len(&self) -> Result<u64, AuditError> {
        let _st = lock(&self.state);
        let len = self.file.metadata().map_err(|e| io_err(&self.path, e))?;
        Ok(len.len())
    }

    /// Entries with `seq > after_seq` that `keep` accepts, oldest first, at most `limit`.
    ///
    /// Reads the file a line at a time; it does not check MACs (that is
    /// [`AuditLog::verify`]'s work). A line that is not an entry, or is longer
    /// than [`crate::MAX_LINE_BYTES`], is an [`AuditError::Corrupt`].
    pub fn list(
        &self,
        after_seq: u64,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let len = self.settled_len()?;
        let file = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
        let mut r = BufReader::new(file.take(len));
        let mut buf = Vec::new();
        let mut line = 0u64;
        loop {
            let read =
                read_line(&mut r, &mut buf, MAX_LINE_BYTES).map_err(|e| io_err(&self.path, e))?;
            line += 1;
            let corrupt = |reason: String| AuditError::Corrupt {
                path: self.path.clone(),
                line,
                reason,
            };
            match read {
                Line::Eof => break,
                Line::TooLong { .. } => {
                    return Err(corrupt(format!("longer than {MAX_LINE_BYTES} bytes")));
                }
                Line::Text { terminated: false } => {
                    return Err(corrupt("no newline at the end".into()));
                }
                Line::Text { terminated: true } => {}
            }
            let entry: Entry =
                serde_json::from_slice(&buf).map_err(|e| corrupt(format!("not an entry ({e})")))?;
            if entry.seq > after_seq && keep(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Flushes, then verifies the log as it is on disk now (it may have been
    /// edited while open): every line, the chain, and the end against the head
    /// checkpoint. See [`crate::verify_file`].
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let (len, head) = {
            // Holding the flush lock keeps the checkpoint from moving past `len`.
            let mut flushed = lock(&self.flushed);
            self.flush_locked(&mut flushed)?;
            let len = self.settled_len()?;
            (len, head::read(&self.head_path, &self.key)?)
        };
        let file = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
        verify_stream(BufReader::new(file.take(len)), &head, &self.key)
            .map_err(|e| io_err(&self.path, e))
    }

    /// The seq and MAC the next entry follows (`(0, 64 zeros)` for an empty log).
    pub fn head(&self) -> (u64, String) {
        let st = lock(&self.state);
        (st.seq, st.mac.clone())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where the chain goes on, from the last intact entry and the head checkpoint.
fn continue_from(path: &Path, tail: &Tail, head: &Head) -> (u64, String) {
    let p = path.display();
    let last_seq = tail.last.as_ref().map_or(0, |(s, _)| *s);
    match (head, &tail.last) {
        (Head::Missing, _) if !tail.nonempty => (0, ZERO_MAC.to_owned()),
        (Head::Missing | Head::Invalid(_), _) => {
            let why = match head {
                Head::Invalid(why) => why.as_str(),
                _ => "it is missing",
            };
            tracing::warn!(path = %p, reason = why, "Audit log head checkpoint is not valid; the chain restarts after seq {last_seq} and verify will report it");
            (last_seq, ZERO_MAC.to_owned())
        }
        (Head::Valid { seq, mac }, _) if *seq > last_seq => {
            tracing::warn!(path = %p, log_seq = last_seq, head_seq = seq, "Audit log ends before its head checkpoint: entries were removed; the chain goes on from the checkpoint and verify will report it");
            (*seq, mac.clone())
        }
        (Head::Valid { seq, mac }, Some((last, last_mac))) if seq == last && mac != last_mac => {
            tracing::warn!(path = %p, seq, "Audit log head checkpoint disagrees with the last entry; the chain restarts and verify will report it");
            (*last, ZERO_MAC.to_owned())
        }
        (Head::Valid { .. }, Some((last, last_mac))) => (*last, last_mac.clone()),
        (Head::Valid { seq, mac }, None) => (*seq, mac.clone()),
    }
}

/// Reads the end of the file: cuts off a torn last line, finds the last intact entry.
fn recover_tail(file: &File, path: &Path, key: &[u8; 32]) -> Result<Tail, AuditError> {
    let err = |e| io_err(path, e);
    let len = file.metadata().map_err(err)?.len();
    if len == 0 {
        return Ok(Tail {
            last: None,
            nonempty: false,
        });
    }
    // Room for an unterminated line and the whole line before it.
    let window = len.min(2 * (MAX_LINE_BYTES as u64 + 1));
    let start = len - window;
    let mut buf = vec![0u8; window as usize];
    file.read_exact_at(&mut buf, start).map_err(err)?;
    let mut scan_all = false;
    if buf.last() != Some(&b'\n') {
        let cut = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        match cut.or((start == 0).then_some(0)) {
            Some(i) if buf.len() - i <= MAX_LINE_BYTES => {
                if check_line(&buf[i..], key).is_ok() {
                    // Only the newline is missing: keep the entry.
                    tracing::warn!(path = %path.display(), "Audit log's last entry had no newline; completed it");
                    (&*file).write_all(b"\n").map_err(err)?;
                    buf.push(b'\n');
                } else {
                    tracing::warn!(path = %path.display(), bytes = buf.len() - i, "Audit log ends in a torn line (an append cut short); removed it");
                    file.set_len(start + i as u64).map_err(err)?;
                    buf.truncate(i);
                }
                file.sync_data().map_err(err)?;
            }
            _ => {
                // Not a line we could have torn: keep it for verify to report, on a line of its own.
                tracing::warn!(path = %path.display(), "Audit log ends in an overlong unterminated line; kept, verify will report it");
                (&*file).write_all(b"\n").map_err(err)?;
                file.sync_data().map_err(err)?;
                scan_all = true;
            }
        }
    }
    let nonempty = start > 0 || !buf.is_empty();
    if !scan_all && !buf.is_empty() {
        let body = &buf[..buf.len() - 1];
        let from = body.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        if let Some(from) = from.or((start == 0).then_some(0))
            && let Ok(entry) = check_line(&body[from..], key)
        {
            return Ok(Tail {
                last: Some((entry.seq, entry.mac)),
                nonempty,
            });
        }
        if nonempty {
            tracing::warn!(path = %path.display(), "Audit log's last line is not an intact entry; kept, verify will report it");
        }
    }
    if !nonempty {
        return Ok(Tail {
            last: None,
            nonempty,
        });
    }
    // The rare path (the end was tampered with): the highest intact entry anywhere.
    Ok(Tail {
        last: highest_intact(path, key)?,
        nonempty,
    })
}

fn highest_intact(path: &Path, key: &[u8; 32]) -> Result<Option<(u64, String)>, AuditError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = BufReader::new(file);
    let mut buf = Vec::new();
    let mut best: Option<(u64, String)> = None;
    loop {
        match read_line(&mut r, &mut buf, MAX_LINE_BYTES).map_err(|e| io_err(path, e))? {
            Line::Eof => return Ok(best),
            Line::Text { .. } => {
                if let Ok(e) = check_line(&buf, key)
                    && best.as_ref().is_none_or(|(s, _)| e.seq > *s)
                {
                    best = Some((e.seq, e.mac));
                }
            }
            Line::TooLong { .. } => {}
        }
    }
}
