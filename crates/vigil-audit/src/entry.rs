//! Entries: the fields, their bounds, their canonical bytes and their MAC.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::borrow::Cow;

type HmacSha256 = Hmac<Sha256>;

/// The longest `summary` kept, in bytes (longer ones are cut, ending in "…").
pub const MAX_SUMMARY_BYTES: usize = 1024;
/// The longest value kept for every other text field, in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// The `prev` of the first entry: 64 zeros.
pub const ZERO_MAC: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The first bytes of every entry's canonical bytes (domain separation from
/// the head checkpoint's, and a version).
pub(crate) const ENTRY_TAG: &[u8] = b"vigil-audit v1 entry\n";
/// The first bytes of a head checkpoint's MACed bytes.
pub(crate) const HEAD_TAG: &[u8] = b"vigil-audit v1 head\n";

/// What the caller records: one API call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEntry {
    pub time_unix_ns: i64,
    pub actor: String,
    pub actor_id: String,
    pub role: String,
    pub tenant_id: String,
    pub method: String,
    pub summary: String,
    pub result: String,
    pub peer: String,
}

impl NewEntry {
    /// The same entry, borrowed.
    pub fn as_ref(&self) -> NewEntryRef<'_> {
        NewEntryRef {
            time_unix_ns: self.time_unix_ns,
            actor: &self.actor,
            actor_id: &self.actor_id,
            role: &self.role,
            tenant_id: &self.tenant_id,
            method: &self.method,
            summary: &self.summary,
            result: &self.result,
            peer: &self.peer,
        }
    }
}

/// What the caller records, borrowed: [`crate::AuditLog::append_ref`] takes
/// it and allocates nothing per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewEntryRef<'a> {
    pub time_unix_ns: i64,
    pub actor: &'a str,
    pub actor_id: &'a str,
    pub role: &'a str,
    pub tenant_id: &'a str,
    pub method: &'a str,
    pub summary: &'a str,
    pub result: &'a str,
    pub peer: &'a str,
}

impl<'a> NewEntryRef<'a> {
    /// The text fields in canonical order, each cut to its bound (`prev` not included).
    pub(crate) fn bounded(&self) -> [Cow<'a, str>; 8] {
        let f = |s: &'a str| bounded_ref(s, MAX_FIELD_BYTES);
        [
            f(self.actor),
            f(self.actor_id),
            f(self.role),
            f(self.tenant_id),
            f(self.method),
            bounded_ref(self.summary, MAX_SUMMARY_BYTES),
            f(self.result),
            f(self.peer),
        ]
    }
}

/// A line of the log, borrowed: serializes exactly as [`Entry`] does (the
/// same fields in the same order), so a line written from it reads back as
/// the `Entry` it describes.
#[derive(Serialize)]
pub(crate) struct LineRef<'a> {
    pub(crate) seq: u64,
    pub(crate) time_unix_ns: i64,
    pub(crate) actor: &'a str,
    pub(crate) actor_id: &'a str,
    pub(crate) role: &'a str,
    pub(crate) tenant_id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) summary: &'a str,
    pub(crate) result: &'a str,
    pub(crate) peer: &'a str,
    pub(crate) prev: &'a str,
    pub(crate) mac: &'a str,
}

impl<'a> LineRef<'a> {
    pub(crate) fn new(
        seq: u64,
        time_unix_ns: i64,
        fields: &'a [Cow<'a, str>; 8],
        prev: &'a str,
        mac: &'a str,
    ) -> LineRef<'a> {
        LineRef {
            seq,
            time_unix_ns,
            actor: &fields[0],
            actor_id: &fields[1],
            role: &fields[2],
            tenant_id: &fields[3],
            method: &fields[4],
            summary: &fields[5],
            result: &fields[6],
            peer: &fields[7],
            prev,
            mac,
        }
    }
}

/// The MAC of an entry from its parts, fed to HMAC in the canonical order
/// ([`Entry::canonical_bytes`]) without building them: `fields` are the eight
/// text fields from `actor` to `peer`, then `prev`.
pub(crate) fn mac_parts(
    key: &[u8; 32],
    seq: u64,
    time_unix_ns: i64,
    fields: &[Cow<'_, str>; 8],
    prev: &str,
) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(ENTRY_TAG);
    m.update(&seq.to_be_bytes());
    m.update(&time_unix_ns.to_be_bytes());
    for f in fields.iter().map(|f| f.as_bytes()).chain([prev.as_bytes()]) {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        m.update(&len.to_be_bytes());
        m.update(f);
    }
    m.finalize().into_bytes().into()
}

/// One line of the log, as written and as read back.
///
/// The field order here is the order of the JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time_unix_ns: i64,
    pub actor: String,
    pub actor_id: String,
    pub role: String,
    pub tenant_id: String,
    pub method: String,
    pub summary: String,
    pub result: String,
    pub peer: String,
    /// The `mac` of the previous entry, in lowercase hex ([`ZERO_MAC`] for the first).
    pub prev: String,
    /// HMAC-SHA-256 of [`Entry::canonical_bytes`], in lowercase hex.
    pub mac: String,
}

impl Entry {
    /// Builds the entry that follows `(prev_seq, prev)`, bounding its fields
    /// and computing its MAC (what [`crate::AuditLog::append`] writes; tests forge with it).
    #[cfg(test)]
    pub(crate) fn seal(key: &[u8; 32], seq: u64, prev: &str, e: NewEntry) -> Entry {
        let e = e.as_ref();
        let fields = e.bounded();
        let mac = hex::encode(mac_parts(key, seq, e.time_unix_ns, &fields, prev));
        Entry::from_parts(seq, e.time_unix_ns, fields, prev, mac)
    }

    /// An entry from its bounded fields, `prev` and `mac`.
    pub(crate) fn from_parts(
        seq: u64,
        time_unix_ns: i64,
        fields: [Cow<'_, str>; 8],
        prev: &str,
        mac: String,
    ) -> Entry {
        let [
            actor,
            actor_id,
            role,
            tenant_id,
            method,
            summary,
            result,
            peer,
        ] = fields.map(Cow::into_owned);
        Entry {
            seq,
            time_unix_ns,
            actor,
            actor_id,
            role,
            tenant_id,
            method,
            summary,
            result,
            peer,
            prev: prev.to_owned(),
            mac,
        }
    }

    /// The bytes the MAC covers: every field but `mac`, in a fixed order.
    ///
    /// ```text
    /// "vigil-audit v1 entry\n"            21 bytes
    /// seq                                 u64, big-endian
    /// time_unix_ns                        i64, big-endian (two's complement)
    /// actor, actor_id, role, tenant_id,
    /// method, summary, result, peer, prev each: u32 big-endian byte length, then its UTF-8 bytes
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let fields = [
            &self.actor,
            &self.actor_id,
            &self.role,
            &self.tenant_id,
            &self.method,
            &self.summary,
            &self.result,
            &self.peer,
            &self.prev,
        ];
        let len = ENTRY_TAG.len() + 16 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(ENTRY_TAG);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_unix_ns.to_be_bytes());
        for f in fields {
            push_field(&mut out, f.as_bytes());
        }
        out
    }

    /// Whether `mac` is the lowercase hex HMAC of this entry's canonical bytes under `key`.
    pub(crate) fn mac_is_valid(&self, key: &[u8; 32]) -> bool {
        mac_hex_matches(key, &self.canonical_bytes(), &self.mac)
    }

    /// The JSON line, newline included.
    #[cfg(test)]
    pub(crate) fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Appends a length-prefixed field. Our fields are bounded far below `u32::MAX`;
/// anything longer read from disk saturates, and then cannot match a MAC we made.
pub(crate) fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn keyed(key: &[u8; 32]) -> HmacSha256 {
    // HMAC takes a key of any length; a 32-byte one cannot be refused.
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

pub(crate) fn mac_of(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(bytes);
    m.finalize().into_bytes().into()
}

/// Constant-time check that `claimed` is exactly the lowercase hex MAC of `bytes`.
/// Uppercase hex is refused: a changed byte must never verify.
pub(crate) fn mac_hex_matches(key: &[u8; 32], bytes: &[u8], claimed: &str) -> bool {
    if !is_lower_hex_mac(claimed) {
        return false;
    }
    let Ok(raw) = hex::decode(claimed) else {
        return false;
    };
    let mut m = keyed(key);
    m.update(bytes);
    m.verify_slice(&raw).is_ok()
}

pub(crate) fn is_lower_hex_mac(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Cuts `s` to at most `max` bytes on a char boundary, ending in "…" when
/// cut; borrowed when it fits.
pub(crate) fn bounded_ref(s: &str, max: usize) -> Cow<'_, str> {
    const ELLIPSIS: &str = "…";
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut cut = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + ELLIPSIS.len());
    out.push_str(&s[..cut]);
    out.push_str(ELLIPSIS);
    Cow::Owned(out)
}
