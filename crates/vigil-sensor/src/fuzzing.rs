//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the replay
//! of their corpora and regressions in `cargo test` (`tests/fuzz_regressions.rs`).
//! Public only so that they can reach the kernel-record parsers in `collect`,
//! which stay crate-private; not an API.

use crate::collect::{audit_parse, netlink, proc_connector};
use crate::control::Frame;

/// Audit text as the kernel sends it: each line of the input is one netlink
/// message, its first byte the message type (`1300 + b % 32`: SYSCALL,
/// EXECVE, CWD, EOE and their neighbours), the rest its text. Fed through the
/// assembler, then every open event closed; each line also through the field
/// and hex parsers on their own.
pub fn audit(data: &[u8]) {
    let mut asm = audit_parse::Assembler::default();
    let mut serials = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&kind, text)) = line.split_first() else {
            continue;
        };
        let kind = 1300 + u16::from(kind % 32);
        if let Some(rec) = asm.push(kind, text) {
            assert!(rec.argv.len() <= 1 << 16);
        }
        if let Some((stamp, body)) = audit_parse::split_header(text) {
            serials.push(stamp.serial);
            for (_, v) in audit_parse::fields(body) {
                if let Some(b) = v.untrusted() {
                    assert!(b.len() <= body.len());
                }
            }
        }
        let _ = audit_parse::decode_hex(text);
    }
    for serial in serials {
        let eoe = format!("audit(1.5:{serial}): ");
        let _ = asm.push(audit_parse::AUDIT_EOE, eoe.as_bytes());
    }
}

/// A netlink datagram: framing, error codes, proc connector events, and the
/// audit record reading of the whole datagram.
pub fn netlink(data: &[u8]) {
    for m in netlink::messages(data) {
        let _ = netlink::error_code(m.payload);
        let _ = proc_connector::decode(m.payload);
    }
    if let Some(m) = netlink::audit_record(data) {
        audit(m.payload);
    }
}

/// A control-socket frame body (what follows the length): decoded, and a
/// frame that decodes encodes to bytes that decode to the same frame.
pub fn control_frame(data: &[u8]) {
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    if let Some(bytes) = frame.encode() {
        let again = Frame::decode(bytes.get(4..).unwrap_or_default()).ok();
        assert_eq!(again.as_ref(), Some(&frame));
    }
}
