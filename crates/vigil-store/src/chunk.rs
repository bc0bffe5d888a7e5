//! Record chunks: consecutive records of one device, stored and sealed as one
//! value. Ingest then pays one seal and two inserts per chunk (about 32 KiB),
//! not per record, and the file holds no per-record keys.
//!
//! A chunk's plaintext is a format byte (1), then for each record, in
//! ascending sequence order: the sequence (u64, little-endian), the length
//! (u32, little-endian) and the record's bytes. It is built after
//! [`SEAL_PREFIX`] reserved bytes so that it is sealed in place.

use crate::StoreError;
use crate::crypto::SEAL_PREFIX;

const FORMAT: u8 = 1;
const ENTRY_HEADER: usize = 8 + 4;

/// Plaintext a chunk grows to, at most, unless one record alone is larger:
/// sealed (+ 32 bytes) and keyed, it fits one 32 KiB page of redb.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024 - 512;

/// A chunk being filled.
pub(crate) struct ChunkBuilder {
    buf: Vec<u8>,
    first: u64,
    last: u64,
    count: u32,
}

impl ChunkBuilder {
    pub(crate) fn new(first: u64) -> ChunkBuilder {
        let mut buf = Vec::with_capacity(SEAL_PREFIX + CHUNK_BYTES + 16);
        buf.resize(SEAL_PREFIX, 0);
        buf.push(FORMAT);
        ChunkBuilder {
            buf,
            first,
            last: first,
            count: 0,
        }
    }

    /// Whether a record of `len` bytes still belongs in this chunk (an empty
    /// chunk takes any record).
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.count == 0 || self.buf.len() - SEAL_PREFIX + ENTRY_HEADER + len <= CHUNK_BYTES
    }

    /// Appends a record; sequences must ascend.
    pub(crate) fn push(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| StoreError::Invalid("a record longer than 4 GiB".into()))?;
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(bytes);
        self.last = seq;
        self.count += 1;
        Ok(())
    }

    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The plaintext after [`SEAL_PREFIX`] reserved bytes, ready to be sealed in place.
    pub(crate) fn into_prefixed(self) -> Vec<u8> {
        self.buf
    }
}

/// The records of an opened chunk, in order.
pub(crate) fn records(plain: &[u8]) -> Result<Vec<(u64, &[u8])>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table: "record_chunks".into(),
        reason: reason.into(),
    };
    let Some((&FORMAT, mut rest)) = plain.split_first() else {
        return Err(corrupt("unknown chunk format"));
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (header, tail) = rest
            .split_at_checked(ENTRY_HEADER)
            .ok_or_else(|| corrupt("truncated record header"))?;
        let (seq, len) = header.split_at(8);
        let seq = u64::from_le_bytes(seq.try_into().map_err(|_| corrupt("sequence"))?);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt("length"))?) as usize;
        let (bytes, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| corrupt("truncated record"))?;
        out.push((seq, bytes));
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_back_what_was_pushed_and_refuses_truncation() {
        let mut c = ChunkBuilder::new(7);
        assert!(c.fits(1 << 20), "an empty chunk takes any record");
        c.push(7, b"seven").unwrap();
        c.push(9, b"").unwrap();
        c.push(10, &[0xff; 300]).unwrap();
        assert_eq!((c.first(), c.count()), (7, 3));
        assert!(!c.fits(CHUNK_BYTES));
        let buf = c.into_prefixed();
        let plain = &buf[SEAL_PREFIX..];
        let got = records(plain).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (7, &b"seven"[..]));
        assert_eq!(got[1], (9, &b""[..]));
        assert_eq!(got[2].0, 10);
        assert_eq!(got[2].1.len(), 300);
        for cut in 1..plain.len() {
            let r = records(&plain[..cut]);
            // Cut on an entry boundary, it is a shorter chunk; anywhere else, refused.
            if let Ok(v) = r {
                assert!(v.len() < 3);
            }
        }
        assert!(records(&plain[..plain.len() - 1]).is_err());
        assert!(records(&[]).is_err());
        assert!(records(&[2]).is_err());
        assert!(records(&[FORMAT]).unwrap().is_empty());
    }

    #[test]
    fn chunks_stop_growing_at_the_bound() {
        let mut c = ChunkBuilder::new(1);
        let rec = [1u8; 400];
        let mut n = 0;
        while c.fits(rec.len()) {
            n += 1;
            c.push(n, &rec).unwrap();
        }
        let plain = c.into_prefixed().len() - SEAL_PREFIX;
        assert!(plain <= CHUNK_BYTES && plain + ENTRY_HEADER + rec.len() > CHUNK_BYTES);
    }
}
