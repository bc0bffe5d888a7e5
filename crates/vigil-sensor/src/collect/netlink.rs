//! Just enough netlink framing for audit and the proc connector: build a
//! request, split a datagram into messages. Lengths from the kernel are
//! checked before use.

use super::CollectError;
use netlink_sys::Socket;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;
const HEADER: usize = 16;

pub(crate) fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = HEADER + payload.len();
    let mut m = Vec::with_capacity(align(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align(len), 0);
    m
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// How long a read waits before the reader checks whether it should stop.
const RECV_TIMEOUT_MS: i64 = 250;

pub(crate) fn set_recv_timeout(sock: &Socket) -> Result<(), CollectError> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
    use nix::sys::time::{TimeVal, TimeValLike};
    setsockopt(
        sock,
        ReceiveTimeout,
        &TimeVal::milliseconds(RECV_TIMEOUT_MS),
    )
    .map_err(|e| CollectError::os("SO_RCVTIMEO", std::io::Error::from(e)))
}

/// What one read of a netlink socket produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram is in the buffer.
    Data,
    /// Nothing arrived before the timeout (or the read was interrupted).
    Idle,
    /// The socket buffer overflowed: the kernel dropped messages.
    Overflow,
}

/// Reads one datagram into `buf` (cleared first).
pub(crate) fn recv(sock: &Socket, buf: &mut Vec<u8>) -> std::io::Result<Received> {
    use std::io::ErrorKind;
    buf.clear();
    match sock.recv(buf, 0) {
        Ok(_) => Ok(Received::Data),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Ok(Received::Idle)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overflow),
        Err(e) => Err(e),
    }
}

/// One message from a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub(crate) kind: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// Splits a datagram into messages; a malformed length ends the walk.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + HEADER)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(hdr[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
        // Audit records sometimes report a length that excludes the header
        // padding; clamp to what the datagram holds.
        let end = (off + len.max(HEADER)).min(buf.len());
        let payload = buf.get(off + HEADER..end)?;
        off = if len < HEADER {
            buf.len()
        } else {
            off + align(len)
        };
        Some(Msg { kind, seq, payload })
    })
}

/// An audit event datagram: always one record, whose header length some
/// kernels report without the header itself (so it cannot be trusted for
/// framing). The payload is the rest of the datagram, minus NUL padding.
pub(crate) fn audit_record(buf: &[u8]) -> Option<Msg<'_>> {
    let hdr = buf.get(..HEADER)?;
    let kind = u16::from_ne_bytes(hdr[4..6].try_into().ok()?);
    let seq = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
    let mut payload = &buf[HEADER..];
    while let [rest @ .., 0] = payload {
        payload = rest;
    }
    Some(Msg { kind, seq, payload })
}

/// The errno in an `NLMSG_ERROR` payload (0 is an ACK).
pub(crate) fn error_code(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut d = message(1000, NLM_F_REQUEST, 7, b"abc");
        d.extend(message(2, 0, 8, &(-17i32).to_ne_bytes()));
        let msgs: Vec<_> = messages(&d).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].kind, msgs[0].seq, msgs[0].payload),
            (1000, 7, &b"abc"[..])
        );
        assert_eq!(error_code(msgs[1].payload), Some(-17));
        // A header claiming more than the datagram holds is clamped, not trusted.
        let mut short = message(1300, 0, 1, b"hello");
        short[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&short).next().unwrap().payload, b"hello\0\0\0");
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        let mut zero = message(1, 0, 0, b"");
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(messages(&zero).count(), 1);
    }

    #[test]
    fn audit_records_ignore_the_header_length() {
        let mut d = message(1300, 0, 0, b"audit(1.0:1): pid=1\0\0");
        d[0..4].copy_from_slice(&5u32.to_ne_bytes());
        let m = audit_record(&d).unwrap();
        assert_eq!((m.kind, m.payload), (1300, &b"audit(1.0:1): pid=1"[..]));
        assert!(audit_record(&[0; 3]).is_none());
    }
}
