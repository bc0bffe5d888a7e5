//! Offline transfer bundles: a sensor's spooled records carried to the
//! server as a file, for a site with no connection.
//!
//! What it is: the bundle format, both ends of it. A bundle is made by the
//! device ([`Builder`]: records as the spool holds them, encrypted to the
//! server's transfer key and signed with the device key) and opened by the
//! server in three steps, each one only possible after the one before
//! ([`parse`] → [`Sealed::verify`] with the device's public key →
//! [`Verified::open`] with the transfer key). Layout and threat model: the
//! crate's README.
//!
//! What it is not: it does no I/O, knows nothing of protobuf (a record is
//! bytes, kept exactly as the spool held them), and decides nothing about
//! exactly-once storage: the server stores a bundle's records through the
//! same per-device high-water mark as the live stream.
//!
//! Every input is untrusted: each length is checked before it is used,
//! every bound has a name ([`MAX_BUNDLE_BYTES`], [`MAX_RECORDS`],
//! [`MAX_RECORD_BYTES`]), and nothing here panics on a bundle's bytes.

/// The fuzz target's entry point (`fuzz/`), shared with the replay of its corpus in `cargo test`.
#[doc(hidden)]
pub mod fuzzing;
mod keys;
#[cfg(test)]
mod tests;

pub use keys::{DeviceKey, PUBLIC_KEY_LEN, TransferKey, TransferPublicKey, hex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::{PublicKey, ecdh::EphemeralSecret};
use sha2::Sha256;
use std::ops::Range;
use zeroize::Zeroizing;

/// The first bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"VIGILBDL";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Largest bundle, in bytes: what one import call carries (the server's
/// Transfer service accepts messages of this size, whatever its
/// `max_message_bytes`). A spool holding more is exported in several bundles.
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;
/// Most records in one bundle.
pub const MAX_RECORDS: u32 = 250_000;
/// Largest single record, in bytes.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Largest header: two identifiers of at most 64 bytes and fixed fields.
const MAX_HEADER_BYTES: usize = 1 + 64 + 1 + 64 + 8 + 8 + 8 + 4 + 32 + PUBLIC_KEY_LEN;
const MAX_ID_LEN: usize = 64;
const SIGNATURE_LEN: usize = 64;
const TAG_LEN: usize = 16;
const KEY_ID_LEN: usize = 32;
/// Magic, version, header length.
const PREFIX_LEN: usize = MAGIC.len() + 2 + 2;
/// A record's frame in the plaintext: sequence (u64) and length (u32).
const FRAME_LEN: usize = 8 + 4;
/// Bytes of a bundle besides its header and plaintext.
const OVERHEAD: usize = PREFIX_LEN + 4 + TAG_LEN + SIGNATURE_LEN;
/// HKDF info: binds the derived key and nonce to this format and cipher.
const KDF_INFO: &[u8] = b"vigil bundle v1: AES-256-GCM key and nonce";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a Vigil bundle (bad magic)")]
    BadMagic,
    #[error("bundle format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u16),
    #[error("bundle is truncated: {0}")]
    Truncated(&'static str),
    #[error("bundle is {size} bytes, more than the {max} a bundle may be")]
    TooLarge { size: usize, max: usize },
    #[error("bundle has {0} unexpected bytes after its signature")]
    TrailingBytes(usize),
    #[error("malformed bundle header: {0}")]
    MalformedHeader(String),
    #[error(
        "signature does not verify for device {device}: the bundle was changed after it was made, or another device made it"
    )]
    BadSignature { device: String },
    #[error("the bundle is encrypted to transfer key {found}, not to this server's ({expected})")]
    WrongRecipient { found: String, expected: String },
    #[error(
        "decryption failed: the bundle's ciphertext does not open with this server's transfer key"
    )]
    DecryptionFailed,
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: u64, reason: String },
    #[error("the records do not match the header: {0}")]
    HeaderMismatch(String),
    #[error("the record of sequence {seq} is {len} bytes, more than a bundle may hold")]
    RecordTooLarge { seq: u64, len: usize },
    #[error("sequence {seq} after {last}: sequences must be positive and strictly increasing")]
    OutOfOrder { seq: u64, last: u64 },
    #[error("a bundle holds at least one record")]
    Empty,
    #[error("{0}")]
    Key(String),
    #[error("encryption failed")]
    Encrypt,
}

/// What a bundle says in the clear (authenticated: it is the ciphertext's
/// associated data, and signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub device_id: String,
    pub tenant_id: String,
    pub created_unix_ns: i64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub record_count: u32,
    /// SHA-256 of the recipient's transfer public key ([`TransferPublicKey::key_id`]).
    pub recipient_key_id: [u8; KEY_ID_LEN],
    /// The sender's ephemeral ECDH public key, an uncompressed SEC1 point.
    ephemeral: [u8; PUBLIC_KEY_LEN],
}

/// Who makes a bundle, and when.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub device_id: &'a str,
    pub tenant_id: &'a str,
    pub created_unix_ns: i64,
}

fn check_id(what: &str, id: &str) -> Result<(), BundleError> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(BundleError::MalformedHeader(format!(
            "{what} must be 1 to {MAX_ID_LEN} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MAX_HEADER_BYTES);
        for id in [&self.device_id, &self.tenant_id] {
            // Checked to be at most 64 bytes when the header was made.
            b.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
            b.extend_from_slice(id.as_bytes());
        }
        b.extend_from_slice(&self.created_unix_ns.to_be_bytes());
        b.extend_from_slice(&self.first_sequence.to_be_bytes());
        b.extend_from_slice(&self.last_sequence.to_be_bytes());
        b.extend_from_slice(&self.record_count.to_be_bytes());
        b.extend_from_slice(&self.recipient_key_id);
        b.extend_from_slice(&self.ephemeral);
        b
    }

    fn decode(bytes: &[u8]) -> Result<Header, BundleError> {
        let bad = |m: &str| BundleError::MalformedHeader(m.to_owned());
        let mut r = Reader(bytes);
        let mut id = |what: &str| -> Result<String, BundleError> {
            let len = r.u8().ok_or_else(|| bad("cut short"))?;
            let raw = r.take(usize::from(len)).ok_or_else(|| bad("cut short"))?;
            let s = std::str::from_utf8(raw).map_err(|_| bad(&format!("{what} is not text")))?;
            check_id(what, s)?;
            Ok(s.to_owned())
        };
        let device_id = id("the device id")?;
        let tenant_id = id("the tenant id")?;
        let created_unix_ns = r.u64().ok_or_else(|| bad("cut short"))? as i64;
        let first_sequence = r.u64().ok_or_else(|| bad("cut short"))?;
        let last_sequence = r.u64().ok_or_else(|| bad("cut short"))?;
        let record_count = r.u32().ok_or_else(|| bad("cut short"))?;
        let recipient_key_id = r.array::<KEY_ID_LEN>().ok_or_else(|| bad("cut short"))?;
        let ephemeral = r
            .array::<PUBLIC_KEY_LEN>()
            .ok_or_else(|| bad("cut short"))?;
        if !r.0.is_empty() {
            return Err(bad("unexpected bytes at its end"));
        }
        if record_count == 0 || record_count > MAX_RECORDS {
            return Err(BundleError::MalformedHeader(format!(
                "record count {record_count} is not between 1 and {MAX_RECORDS}"
            )));
        }
        if first_sequence == 0
            || last_sequence < first_sequence
            || last_sequence - first_sequence < u64::from(record_count) - 1
        {
            return Err(BundleError::MalformedHeader(format!(
                "sequences {first_sequence}..={last_sequence} cannot hold {record_count} records"
            )));
        }
        PublicKey::from_sec1_bytes(&ephemeral)
            .map_err(|_| bad("the ephemeral key is not a P-256 point"))?;
        Ok(Header {
            device_id,
            tenant_id,
            created_unix_ns,
            first_sequence,
            last_sequence,
            record_count,
            recipient_key_id,
            ephemeral,
        })
    }
}

/// A bounds-checked reader: every read is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
}

/// The AES-256-GCM key and nonce for one bundle: HKDF-SHA-256 over the ECDH
/// secret, salted with both public keys. The ephemeral key is new for each
/// bundle, so a key (and its nonce) is never used twice.
fn derive(
    shared: &p256::ecdh::SharedSecret,
    ephemeral: &[u8],
    recipient: &[u8],
) -> Result<(Aes256Gcm, [u8; 12]), BundleError> {
    let salt = [ephemeral, recipient].concat();
    let mut okm = Zeroizing::new([0u8; 44]);
    shared
        .extract::<Sha256>(Some(&salt))
        .expand(KDF_INFO, okm.as_mut_slice())
        .map_err(|_| BundleError::Encrypt)?;
    let cipher = Aes256Gcm::new_from_slice(&okm[..32]).map_err(|_| BundleError::Encrypt)?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    Ok((cipher, nonce))
}

/// Records gathered for one bundle, in sequence order, within its size limit.
#[derive(Debug)]
pub struct Builder {
    plain: Vec<u8>,
    first: u64,
    last: u64,
    count: u32,
    limit: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A bundle of at most [`MAX_BUNDLE_BYTES`].
    pub fn new() -> Builder {
        Builder::with_limit(MAX_BUNDLE_BYTES)
    }

    /// A bundle of at most `max_bytes` (never more than [`MAX_BUNDLE_BYTES`]).
    pub fn with_limit(max_bytes: usize) -> Builder {
        Builder {
            plain: Vec::new(),
            first: 0,
            last: 0,
            count: 0,
            limit: max_bytes.min(MAX_BUNDLE_BYTES),
        }
    }

    /// Adds a record (its spool sequence and its bytes, unchanged); `false`
    /// when the bundle is full (the record is not added: it goes in the next
    /// bundle).
    pub fn push(&mut self, seq: u64, record: &[u8]) -> Result<bool, BundleError> {
        if seq == 0 || seq <= self.last {
            return Err(BundleError::OutOfOrder {
                seq,
                last: self.last,
            });
        }
        let fits_alone = OVERHEAD + MAX_HEADER_BYTES + FRAME_LEN + record.len() <= self.limit;
        if record.len() > MAX_RECORD_BYTES || !fits_alone {
            return Err(BundleError::RecordTooLarge {
                seq,
                len: record.len(),
            });
        }
        if self.count >= MAX_RECORDS || self.size() + FRAME_LEN + record.len() > self.limit {
            return Ok(false);
        }
        self.plain.extend_from_slice(&seq.to_be_bytes());
        // At most MAX_RECORD_BYTES: fits in a u32.
        self.plain.extend_from_slice(
            &u32::try_from(record.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        self.plain.extend_from_slice(record);
        if self.count == 0 {
            self.first = seq;
        }
        self.last = seq;
        self.count += 1;
        Ok(true)
    }

    /// Records added so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first and last sequence added, if any.
    pub fn range(&self) -> Option<(u64, u64)> {
        (self.count > 0).then_some((self.first, self.last))
    }

    /// The bundle's size at most, as it stands.
    pub fn size(&self) -> usize {
        OVERHEAD + MAX_HEADER_BYTES + self.plain.len()
    }

    /// Encrypts the records to `to` and signs the bundle with `device`.
    pub fn seal(
        self,
        origin: &Origin<'_>,
        device: &DeviceKey,
        to: &TransferPublicKey,
    ) -> Result<Vec<u8>, BundleError> {
        if self.count == 0 {
            return Err(BundleError::Empty);
        }
        seal_plain(
            &self.plain,
            (self.first, self.last, self.count),
            origin,
            device,
            to,
        )
    }
}

/// Encrypts a plaintext of framed records and signs the bundle.
fn seal_plain(
    plain: &[u8],
    (first, last, count): (u64, u64, u32),
    origin: &Origin<'_>,
    device: &DeviceKey,
    to: &TransferPublicKey,
) -> Result<Vec<u8>, BundleError> {
    check_id("the device id", origin.device_id)?;
    check_id("the tenant id", origin.tenant_id)?;
    let secret = EphemeralSecret::generate();
    let ephemeral_pub = keys::sec1(&secret.public_key());
    let ephemeral: [u8; PUBLIC_KEY_LEN] = ephemeral_pub
        .as_slice()
        .try_into()
        .map_err(|_| BundleError::Encrypt)?;
    let (cipher, nonce) = derive(
        &secret.diffie_hellman(to.key()),
        &ephemeral,
        &to.to_sec1_bytes(),
    )?;
    let header = Header {
        device_id: origin.device_id.to_owned(),
        tenant_id: origin.tenant_id.to_owned(),
        created_unix_ns: origin.created_unix_ns,
        first_sequence: first,
        last_sequence: last,
        record_count: count,
        recipient_key_id: to.key_id(),
        ephemeral,
    }
    .encode();
    let mut out = Vec::with_capacity(OVERHEAD + header.len() + plain.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(
        &u16::try_from(header.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&header);
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plain,
                aad: &out,
            },
        )
        .map_err(|_| BundleError::Encrypt)?;
    let len = u32::try_from(ciphertext.len()).map_err(|_| BundleError::Encrypt)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&ciphertext);
    let signature: Signature = device.signing().sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

/// A bundle whose layout was read, not yet authenticated.
#[derive(Debug)]
pub struct Sealed<'a> {
    header: Header,
    /// Everything the signature covers.
    signed: &'a [u8],
    /// The associated data: magic, version, header.
    aad: &'a [u8],
    ciphertext: &'a [u8],
    signature: &'a [u8],
}

/// Reads a bundle's layout: magic, version, header, lengths. Nothing in it
/// is authenticated yet: [`Sealed::verify`] is next.
pub fn parse(bytes: &[u8]) -> Result<Sealed<'_>, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            max: MAX_BUNDLE_BYTES,
        });
    }
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(BundleError::BadMagic);
    }
    let mut r = Reader(bytes);
    r.take(MAGIC.len())
        .ok_or(BundleError::Truncated("shorter than its magic"))?;
    let version = r.u16().ok_or(BundleError::Truncated("no version"))?;
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion(version));
    }
    let header_len = usize::from(r.u16().ok_or(BundleError::Truncated("no header"))?);
    if header_len > MAX_HEADER_BYTES {
        return Err(BundleError::MalformedHeader(format!(
            "{header_len} bytes, more than {MAX_HEADER_BYTES}"
        )));
    }
    let header = r
        .take(header_len)
        .ok_or(BundleError::Truncated("the header is cut short"))?;
    let header = Header::decode(header)?;
    let aad = &bytes[..PREFIX_LEN + header_len];
    let ct_len = r.u32().ok_or(BundleError::Truncated("no ciphertext"))? as usize;
    let ciphertext = r
        .take(ct_len)
        .ok_or(BundleError::Truncated("the ciphertext is cut short"))?;
    if ct_len < TAG_LEN + FRAME_LEN {
        return Err(BundleError::MalformedHeader(
            "the ciphertext is too short to hold a record".into(),
        ));
    }
    let signed = &bytes[..bytes.len() - r.0.len()];
    let signature = r
        .take(SIGNATURE_LEN)
        .ok_or(BundleError::Truncated("the signature is cut short"))?;
    if !r.0.is_empty() {
        return Err(BundleError::TrailingBytes(r.0.len()));
    }
    Ok(Sealed {
        header,
        signed,
        aad,
        ciphertext,
        signature,
    })
}

impl<'a> Sealed<'a> {
    /// What the bundle claims, before anything is checked: which device's
    /// key to verify it with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Checks the device's signature over the whole bundle, with the device's
    /// public key (an uncompressed SEC1 point, as the server keeps it).
    pub fn verify(self, device_public_key: &[u8]) -> Result<Verified<'a>, BundleError> {
        let key = VerifyingKey::from_sec1_bytes(device_public_key).map_err(|_| {
            BundleError::Key(format!(
                "the public key on record for device {} is not a P-256 key",
                self.header.device_id
            ))
        })?;
        let bad = || BundleError::BadSignature {
            device: self.header.device_id.clone(),
        };
        let signature = Signature::from_slice(self.signature).map_err(|_| bad())?;
        key.verify(self.signed, &signature).map_err(|_| bad())?;
        Ok(Verified(self))
    }
}

/// A bundle the device's signature vouches for.
#[derive(Debug)]
pub struct Verified<'a>(Sealed<'a>);

impl Verified<'_> {
    pub fn header(&self) -> &Header {
        &self.0.header
    }

    /// Decrypts with the server's transfer key and reads the records.
    pub fn open(self, key: &TransferKey) -> Result<Opened, BundleError> {
        let s = self.0;
        let public = key.public();
        if s.header.recipient_key_id != public.key_id() {
            return Err(BundleError::WrongRecipient {
                found: hex(&s.header.recipient_key_id),
                expected: hex(&public.key_id()),
            });
        }
        let ephemeral = PublicKey::from_sec1_bytes(&s.header.ephemeral).map_err(|_| {
            BundleError::MalformedHeader("the ephemeral key is not a P-256 point".into())
        })?;
        let shared =
            p256::ecdh::diffie_hellman(key.secret().to_nonzero_scalar(), ephemeral.as_affine());
        let (cipher, nonce) = derive(&shared, &s.header.ephemeral, &public.to_sec1_bytes())?;
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: s.ciphertext,
                    aad: s.aad,
                },
            )
            .map_err(|_| BundleError::DecryptionFailed)?;
        let records = frames(&plain, &s.header)?;
        Ok(Opened {
            header: s.header,
            plain,
            records,
        })
    }
}

/// The records of a plaintext, checked against the header.
fn frames(plain: &[u8], header: &Header) -> Result<Frames, BundleError> {
    let mut out = Vec::with_capacity(header.record_count as usize);
    let mut r = Reader(plain);
    let mut last = 0u64;
    while !r.0.is_empty() {
        let index = out.len() as u64 + 1;
        let bad = |reason: String| BundleError::MalformedRecord { index, reason };
        if out.len() >= header.record_count as usize {
            return Err(BundleError::HeaderMismatch(format!(
                "more records than the {} it names",
                header.record_count
            )));
        }
        let seq = r
            .u64()
            .ok_or_else(|| bad("its frame is cut short".into()))?;
        let len = r
            .u32()
            .ok_or_else(|| bad("its frame is cut short".into()))? as usize;
        if len > MAX_RECORD_BYTES {
            return Err(bad(format!("{len} bytes, more than {MAX_RECORD_BYTES}")));
        }
        if seq == 0 || seq <= last {
            return Err(bad(format!(
                "sequence {seq} after {last}: sequences must be positive and strictly increasing"
            )));
        }
        let start = plain.len() - r.0.len();
        r.take(len)
            .ok_or_else(|| bad(format!("{len} bytes announced, fewer left")))?;
        out.push((seq, start..start + len));
        last = seq;
    }
    let (first, count) = (out.first().map_or(0, |r| r.0), out.len());
    if count != header.record_count as usize
        || first != header.first_sequence
        || last != header.last_sequence
    {
        return Err(BundleError::HeaderMismatch(format!(
            "{count} records {first}..={last}, the header names {} records {}..={}",
            header.record_count, header.first_sequence, header.last_sequence
        )));
    }
    Ok(out)
}

/// Where each record lies in a plaintext: its sequence and byte range.
pub type Frames = Vec<(u64, Range<usize>)>;

/// A bundle's records, decrypted and checked.
#[derive(Debug)]
pub struct Opened {
    header: Header,
    plain: Vec<u8>,
    records: Frames,
}

impl Opened {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Each record's sequence and bytes, in order.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.records
            .iter()
            .filter_map(|(seq, range)| Some((*seq, self.plain.get(range.clone())?)))
    }

    /// The plaintext and where each record lies in it (to slice it without a copy).
    pub fn into_parts(self) -> (Header, Vec<u8>, Frames) {
        (self.header, self.plain, self.records)
    }
}
