//! The head checkpoint: `<log>.head`, the last flushed seq and MAC, itself MACed.

use crate::entry::{HEAD_TAG, ZERO_MAC, is_lower_hex_mac, mac_hex_matches, mac_of, push_field};
use crate::error::{AuditError, io_err};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The largest head file read; a real one is about 200 bytes.
const MAX_HEAD_BYTES: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadFile {
    seq: u64,
    mac: String,
    head_mac: String,
}

/// What the head file says, as far as it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    Missing,
    /// Present but not one we wrote under this key (the reason says why).
    Invalid(String),
    Valid {
        seq: u64,
        mac: String,
    },
}

pub(crate) fn head_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

/// The bytes the head's MAC covers: the tag, `seq` as a big-endian u64, then
/// the entry MAC's hex text with a big-endian u32 length before it.
fn head_bytes(seq: u64, mac: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_TAG.len() + 8 + 4 + mac.len());
    out.extend_from_slice(HEAD_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    push_field(&mut out, mac.as_bytes());
    out
}

fn encode(key: &[u8; 32], seq: u64, mac: &str) -> Result<Vec<u8>, serde_json::Error> {
    let head = HeadFile {
        seq,
        mac: mac.to_owned(),
        head_mac: hex::encode(mac_of(key, &head_bytes(seq, mac))),
    };
    let mut out = serde_json::to_vec(&head)?;
    out.push(b'\n');
    Ok(out)
}

/// Reads and checks the head file. Only I/O errors other than "not found" are errors.
pub(crate) fn read(path: &Path, key: &[u8; 32]) -> Result<Head, AuditError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Head::Missing),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_HEAD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, e))?;
    Ok(check(&bytes, key))
}

fn check(bytes: &[u8], key: &[u8; 32]) -> Head {
    if bytes.len() as u64 > MAX_HEAD_BYTES {
        return Head::Invalid("it is too large".into());
    }
    let head: HeadFile = match serde_json::from_slice(bytes) {
        Ok(h) => h,
        Err(e) => return Head::Invalid(format!("it does not parse ({e})")),
    };
    if !is_lower_hex_mac(&head.mac) || (head.seq == 0 && head.mac != ZERO_MAC) {
        return Head::Invalid("its entry MAC is malformed".into());
    }
    if !mac_hex_matches(key, &head_bytes(head.seq, &head.mac), &head.head_mac) {
        return Head::Invalid("its MAC does not match".into());
    }
    // Any byte changed outside the values (spacing, escapes) also counts as a change.
    match encode(key, head.seq, &head.mac) {
        Ok(canonical) if canonical == bytes => Head::Valid {
            seq: head.seq,
            mac: head.mac,
        },
        _ => Head::Invalid("it is not in canonical form".into()),
    }
}

/// Replaces the head file atomically: a temporary file written and synced,
/// renamed over the head, then the directory synced.
pub(crate) fn write(path: &Path, key: &[u8; 32], seq: u64, mac: &str) -> Result<(), AuditError> {
    let bytes = encode(key, seq, mac).map_err(|e| AuditError::Encode(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(&bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so a created or renamed name survives a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}
