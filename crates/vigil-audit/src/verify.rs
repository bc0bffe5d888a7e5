//! Verification: the whole log re-read and re-checked, then its end against the head checkpoint.

use crate::entry::{Entry, ZERO_MAC};
use crate::error::{AuditError, io_err};
use crate::head::{self, Head};
use crate::lines::{Line, MAX_LINE_BYTES, read_line};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every entry is intact, in order, gap-free, and the log ends where its head checkpoint says.
    pub ok: bool,
    /// Entries verified before the first problem (all of them when `ok`).
    pub entries: u64,
    /// The 1-based line of the first problem, 0 when `ok`. A problem with the
    /// end of the log (the head checkpoint) is reported at the line after the last.
    pub first_bad_line: u64,
    /// What is wrong, naming the line ("line 3: MAC mismatch: entry changed"); empty when `ok`.
    pub reason: String,
}

impl VerifyReport {
    fn good(entries: u64) -> Self {
        VerifyReport {
            ok: true,
            entries,
            first_bad_line: 0,
            reason: String::new(),
        }
    }

    fn bad(entries: u64, line: u64, reason: String) -> Self {
        VerifyReport {
            ok: false,
            entries,
            first_bad_line: line,
            reason,
        }
    }
}

/// Verifies the log at `path` and its head checkpoint (`<path>.head`) with `key`,
/// without opening it for writing: what `vigil-server audit verify` runs.
///
/// Errors are only I/O errors (the log cannot be read); everything wrong with
/// the content is in the report.
pub fn verify_file(path: &Path, key: &[u8; 32]) -> Result<VerifyReport, AuditError> {
    // The head first: a log that is being written only grows after it.
    let head = head::read(&head::head_path(path), key)?;
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    verify_stream(BufReader::new(file), &head, key).map_err(|e| io_err(path, e))
}

/// Checks one complete line: it is an entry, written exactly as we write it, under `key`.
pub(crate) fn check_line(bytes: &[u8], key: &[u8; 32]) -> Result<Entry, String> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| format!("not an entry ({e})"))?;
    if !entry.mac_is_valid(key) {
        return Err("MAC mismatch: entry changed or not written with the key".into());
    }
    // The MAC covers the values; this covers their spelling (escapes, spacing, order of keys).
    match serde_json::to_vec(&entry) {
        Ok(canonical) if canonical == bytes => Ok(entry),
        _ => Err("not written the way entries are written: entry changed".into()),
    }
}

/// The state of the chain after the last good line.
struct Chain {
    seq: u64,
    mac: String,
}

pub(crate) fn verify_stream(
    mut r: impl BufRead,
    head: &Head,
    key: &[u8; 32],
) -> io::Result<VerifyReport> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut chain = Chain {
        seq: 0,
        mac: ZERO_MAC.to_owned(),
    };
    // The line and MAC of the entry whose seq the head checkpoint names.
    let mut at_head: Option<(u64, String)> = None;
    let head_seq = match head {
        Head::Valid { seq, .. } => Some(*seq),
        _ => None,
    };
    loop {
        let read = read_line(&mut r, &mut buf, MAX_LINE_BYTES)?;
        if read == Line::Eof {
            break;
        }
        line_no += 1;
        let good = line_no - 1;
        let bad = |why: String| {
            Ok(VerifyReport::bad(
                good,
                line_no,
                format!("line {line_no}: {why}"),
            ))
        };
        match read {
            Line::TooLong { .. } => {
                return bad(format!("longer than {MAX_LINE_BYTES} bytes: not an entry"));
            }
            Line::Text { terminated: false } => {
                return bad("the last line has no newline: an append cut short (it is removed when the log is next opened)".into());
            }
            _ => {}
        }
        let entry = match check_line(&buf, key) {
            Ok(e) => e,
            Err(why) => return bad(why),
        };
        let expected = chain.seq.saturating_add(1);
        if entry.seq > expected {
            let reordered = seq_comes_later(&mut r, &mut buf, expected, entry.seq)?;
            let follows = if chain.seq == 0 {
                "but the log starts at seq 1".to_owned()
            } else {
                format!("follows {}", chain.seq)
            };
            let what = if reordered {
                "entries reordered"
            } else {
                "entries removed"
            };
            return bad(format!("seq {} {follows}: {what}", entry.seq));
        }
        if entry.seq < expected {
            return bad(format!(
                "seq {} follows {}: entries reordered or repeated",
                entry.seq, chain.seq
            ));
        }
        if entry.prev != chain.mac {
            return bad(if entry.prev == ZERO_MAC {
                "the chain restarts here (prev is zero): the log was reopened without a valid \
                 head checkpoint, so entries may have been removed from its end"
                    .into()
            } else {
                format!(
                    "prev does not match the MAC of seq {}: entries removed or replaced",
                    chain.seq
                )
            });
        }
        if Some(entry.seq) == head_seq {
            at_head = Some((line_no, entry.mac.clone()));
        }
        chain = Chain {
            seq: entry.seq,
            mac: entry.mac,
        };
    }
    let n = line_no;
    let after = n + 1;
    Ok(match head {
        Head::Missing if n == 0 => VerifyReport::good(0),
        Head::Missing => VerifyReport::bad(
            n,
            after,
            format!(
                "the head checkpoint is missing for a log of {n} entries: entries may have been removed from the end"
            ),
        ),
        Head::Invalid(why) => {
            VerifyReport::bad(n, after, format!("the head checkpoint was changed: {why}"))
        }
        Head::Valid { seq, .. } if *seq > chain.seq => VerifyReport::bad(
            n,
            after,
            format!(
                "log ends at seq {} but its head checkpoint says {seq}: entries removed from the end",
                chain.seq
            ),
        ),
        Head::Valid { seq: 0, .. } => VerifyReport::good(n),
        Head::Valid { seq, mac } => match at_head {
            Some((_, ref m)) if m == mac => VerifyReport::good(n),
            Some((line, _)) => VerifyReport::bad(
                line - 1,
                line,
                format!(
                    "line {line}: the head checkpoint names seq {seq} with another MAC: the head checkpoint was changed"
                ),
            ),
            // Unreachable with a gap-free chain that reaches `seq`; kept total.
            None => VerifyReport::bad(
                n,
                after,
                format!("the head checkpoint names seq {seq}, which the log does not hold"),
            ),
        },
    })
}

/// After a gap (`expected` missing, `found` seen), reads on to tell a reorder
/// (some missing seq appears later) from a removal.
fn seq_comes_later(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    expected: u64,
    found: u64,
) -> io::Result<bool> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    loop {
        match read_line(r, buf, MAX_LINE_BYTES)? {
            Line::Eof => return Ok(false),
            Line::Text { .. } => {
                if let Ok(s) = serde_json::from_slice::<SeqOnly>(buf)
                    && (expected..found).contains(&s.seq)
                {
                    return Ok(true);
                }
            }
            Line::TooLong { .. } => {}
        }
    }
}
