//! Reading the log a line at a time without ever holding more than one bounded line.

use std::io::{self, BufRead};

/// The longest line read, newline excluded. Our own lines stay far below it (every
/// field is bounded, and even all-control-character fields escape to under 20 KiB).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// End of the input: no more bytes.
    Eof,
    /// A line is in the buffer (newline removed); `terminated` is false for
    /// bytes at the end of the input without a newline.
    Text { terminated: bool },
    /// A line longer than [`MAX_LINE_BYTES`]: skipped to its end, not kept.
    TooLong { terminated: bool },
}

/// Reads the next line into `buf` (cleared first), keeping at most `max` bytes.
pub(crate) fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, false) => Line::Text { terminated: false },
                (true, true) => Line::TooLong { terminated: false },
            });
        }
        any = true;
        let (part, found, used) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], true, i + 1),
            None => (chunk, false, chunk.len()),
        };
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        r.consume(used);
        if found {
            return Ok(if too_long {
                Line::TooLong { terminated: true }
            } else {
                Line::Text { terminated: true }
            });
        }
    }
}
