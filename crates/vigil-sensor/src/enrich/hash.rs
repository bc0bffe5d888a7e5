//! File hashes (BLAKE3 and SHA-256 in one read), cached by file identity.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use vigil_proto::v1::Hashes;

/// Files larger than this are not hashed (the record says `too_large`).
pub const DEFAULT_MAX_HASH_BYTES: u64 = 256 * 1024 * 1024;
/// Cached file identities; the cache is cleared when it grows past this.
const CACHE_ENTRIES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
pub struct Hasher {
    max_bytes: u64,
    cache: HashMap<FileKey, Hashes>,
}

fn failed(reason: &str) -> Hashes {
    Hashes {
        error: reason.to_owned(),
        ..Hashes::default()
    }
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "vanished",
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        _ => "io_error",
    }
}

impl Hasher {
    pub fn new(max_bytes: u64) -> Hasher {
        Hasher {
            max_bytes,
            cache: HashMap::new(),
        }
    }

    /// Hashes `path`. Never fails: problems are recorded in `Hashes::error`
    /// (`vanished`, `permission_denied`, `too_large`, `changed_during_hash`, ...).
    pub fn hash(&mut self, path: &Path) -> Hashes {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return failed(io_reason(&e)),
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => return failed(io_reason(&e)),
        };
        if !before.is_file() {
            return failed("not_a_file");
        }
        let key = FileKey::of(&before);
        if let Some(h) = self.cache.get(&key) {
            return h.clone();
        }
        if before.size() > self.max_bytes {
            return failed("too_large");
        }
        let mut b3 = blake3::Hasher::new();
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > self.max_bytes {
                        return failed("too_large");
                    }
                    b3.update(&buf[..n]);
                    sha.update(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return failed(io_reason(&e)),
            }
        }
        // A file rewritten while we read it has no single hash.
        match file.metadata() {
            Ok(after) if FileKey::of(&after) == key => {}
            _ => return failed("changed_during_hash"),
        }
        let h = Hashes {
            blake3: b3.finalize().as_bytes().to_vec(),
            sha256: sha.finalize().to_vec(),
            error: String::new(),
        };
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(key, h.clone());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_match_reference_and_errors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"abc")
            .unwrap();
        let mut h = Hasher::new(1024);
        let got = h.hash(&p);
        assert_eq!(
            hex::encode(&got.sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(got.blake3, blake3::hash(b"abc").as_bytes().to_vec());
        assert_eq!(h.hash(&dir.path().join("missing")).error, "vanished");
        assert_eq!(h.hash(dir.path()).error, "not_a_file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 2048]).unwrap();
        assert_eq!(h.hash(&big).error, "too_large");
        // Non-UTF-8 names hash like any other.
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
        std::fs::write(&odd, b"abc").unwrap();
        assert_eq!(h.hash(&odd).sha256, got.sha256);
    }
}
