//! Envelope encryption: each tenant has its own data key (AES-256-GCM), kept
//! only wrapped by the store's master key. Erasing a tenant's key makes its
//! data unrecoverable even from backups.

use crate::StoreError;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What a sealed value holds before its ciphertext: the key version (4
/// bytes, big-endian) and the nonce. A caller that builds a value after this
/// many reserved bytes has it sealed in place ([`KeyRing::seal_prefixed`]).
pub(crate) const SEAL_PREFIX: usize = 4 + NONCE_LEN;

/// A 256-bit AES-GCM key. Every encryption draws a fresh random 96-bit nonce;
/// with one key per tenant this stays far below the 2^32-message bound NIST
/// sets for random nonces under one key.
pub(crate) struct SealKey {
    cipher: Aes256Gcm,
    /// HMAC-SHA-256 key for lookup digests (`KeyRing::digests`), derived from
    /// this key: HMAC(key, "vigil lookup key v1").
    lookup: zeroize::Zeroizing<[u8; 32]>,
}

impl SealKey {
    pub(crate) fn new(bytes: &[u8]) -> Result<SealKey, StoreError> {
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|_| StoreError::Crypto("bad key length"))?;
        let lookup = zeroize::Zeroizing::new(hmac_sha256(bytes, b"vigil lookup key v1"));
        Ok(SealKey { cipher, lookup })
    }

    /// Encrypts `buf[SEAL_PREFIX..]` in place, bound to `aad` (where the
    /// value lives): writes a fresh nonce after the 4 version bytes and
    /// appends the tag, so `buf` becomes version || nonce || ciphertext || tag.
    fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), StoreError> {
        // A CSPRNG in process (ChaCha, reseeded from the OS): ingest seals
        // values at a high rate, and a system call per nonce would cost more than the AES.
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let body = buf
            .get_mut(4..)
            .ok_or(StoreError::Crypto("no room for the nonce"))?;
        body[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut body[NONCE_LEN..]).into())
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Encrypts `plain`, bound to `aad`, as nonce || ciphertext || tag (what
    /// master keys wrap data keys with; values carry a key version too: [`KeyRing::seal`]).
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::with_capacity(SEAL_PREFIX + plain.len() + TAG_LEN);
        buf.resize(SEAL_PREFIX, 0);
        buf.extend_from_slice(plain);
        self.seal_in_place(aad, &mut buf)?;
        buf.drain(..4);
        Ok(buf)
    }

    /// Opens nonce || ciphertext || tag bound to `aad`.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Crypto("ciphertext too short"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| StoreError::Crypto("bad nonce"))?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| StoreError::Crypto("bad tag"))?;
        let mut plain = Zeroizing::new(ct.to_vec());
        self.cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                aad,
                plain.as_mut_slice().into(),
                &Tag::from(tag),
            )
            .map_err(|_| StoreError::Crypto("authentication failed: wrong key or tampered data"))?;
        Ok(plain)
    }
}

/// A tenant's data keys by version: new values are sealed with the current
/// one; a value names the version that sealed it (4 bytes, big-endian, before
/// the nonce), so a rotation can re-seal old values while both still open.
pub(crate) struct KeyRing {
    current: u32,
    keys: std::collections::BTreeMap<u32, SealKey>,
}

impl KeyRing {
    pub(crate) fn new(
        keys: std::collections::BTreeMap<u32, SealKey>,
    ) -> Result<KeyRing, StoreError> {
        let current = *keys
            .last_key_value()
            .ok_or(StoreError::Crypto("tenant has no data key"))?
            .0;
        Ok(KeyRing { current, keys })
    }

    /// No keys at all: what a deleted tenant's open store is left with.
    pub(crate) fn empty() -> KeyRing {
        KeyRing {
            current: 0,
            keys: std::collections::BTreeMap::new(),
        }
    }

    pub(crate) fn current(&self) -> u32 {
        self.current
    }

    pub(crate) fn add(&mut self, version: u32, key: SealKey) {
        self.keys.insert(version, key);
        self.current = self.current.max(version);
    }

    /// Forgets every version but the current one.
    pub(crate) fn retain_current(&mut self) {
        let c = self.current;
        self.keys.retain(|v, _| *v == c);
    }

    /// Keyed digests of `material` (HMAC-SHA-256, under a key derived from
    /// each data key), the current key's first: an index keyed by them holds
    /// no plaintext, and an entry made before a rotation is still found.
    pub(crate) fn digests(&self, material: &[u8]) -> Vec<[u8; 32]> {
        let mut out: Vec<[u8; 32]> = self
            .keys
            .get(&self.current)
            .map(|k| hmac_sha256(k.lookup.as_ref(), material))
            .into_iter()
            .collect();
        for (v, k) in self.keys.iter().rev() {
            if *v != self.current {
                out.push(hmac_sha256(k.lookup.as_ref(), material));
            }
        }
        out
    }

    /// Keyed HMAC states for many lookup digests ([`short_digest`]), the
    /// current key's first: keyed once, each digest then costs two
    /// compressions instead of four.
    pub(crate) fn lookup_macs(&self) -> Vec<LookupMac> {
        use hmac::Mac;
        let mut order: Vec<&SealKey> = self.keys.get(&self.current).into_iter().collect();
        order.extend(
            self.keys
                .iter()
                .rev()
                .filter(|(v, _)| **v != self.current)
                .map(|(_, k)| k),
        );
        order
            .into_iter()
            .filter_map(|k| LookupMac::new_from_slice(k.lookup.as_ref()).ok())
            .collect()
    }

    /// Seals `plain` with the current key: version || nonce || ciphertext || tag.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::with_capacity(SEAL_PREFIX + plain.len() + TAG_LEN);
        buf.resize(SEAL_PREFIX, 0);
        buf.extend_from_slice(plain);
        self.seal_prefixed(aad, buf)
    }

    /// Seals what `buf` holds after [`SEAL_PREFIX`] reserved bytes, in place;
    /// the same result as [`KeyRing::seal`] of `&buf[SEAL_PREFIX..]`, without a copy.
    pub(crate) fn seal_prefixed(
        &self,
        aad: &[u8],
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or(StoreError::Crypto("current data key missing"))?;
        let version = buf
            .get_mut(..4)
            .ok_or(StoreError::Crypto("no room for the key version"))?;
        version.copy_from_slice(&self.current.to_be_bytes());
        key.seal_in_place(aad, &mut buf)?;
        Ok(buf)
    }

    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let v = version_of(sealed).ok_or(StoreError::Crypto("ciphertext too short"))?;
        self.keys
            .get(&v)
            .ok_or(StoreError::Crypto(
                "sealed under a data key that no longer exists",
            ))?
            .open(aad, &sealed[4..])
    }
}

pub(crate) type LookupMac = hmac::Hmac<sha2::Sha256>;

/// The first 16 bytes of HMAC-SHA-256 of `material` under `mac`'s key: what
/// the record index is keyed by (a collision only costs opening a chunk more,
/// whose records are then compared in full).
pub(crate) fn short_digest(mac: &LookupMac, material: &[u8]) -> [u8; 16] {
    use hmac::Mac;
    let mut m = mac.clone();
    m.update(material);
    let full: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The data key version a sealed value names.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn version_of(sealed: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(sealed.get(..4)?.try_into().ok()?))
}

pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, StoreError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(k.as_mut()).map_err(|_| StoreError::Crypto("no randomness"))?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let ring = |k: SealKey| {
            let mut m = std::collections::BTreeMap::new();
            m.insert(1, k);
            KeyRing::new(m).unwrap()
        };
        let k = ring(SealKey::new(random_key().unwrap().as_ref()).unwrap());
        let s = k.seal(b"where", b"secret").unwrap();
        assert_eq!(s.len(), SEAL_PREFIX + 6 + TAG_LEN);
        assert_eq!(version_of(&s), Some(1));
        assert_eq!(k.open(b"where", &s).unwrap().as_slice(), b"secret");
        assert!(
            k.open(b"elsewhere", &s).is_err(),
            "moved ciphertext must not open"
        );
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(k.open(b"where", &t).is_err());
        let mut t = s.clone();
        t[SEAL_PREFIX] ^= 1;
        assert!(k.open(b"where", &t).is_err());
        assert!(k.open(b"where", &s[..10]).is_err());
        assert!(k.open(b"where", &s[..SEAL_PREFIX + TAG_LEN - 1]).is_err());
        let other = ring(SealKey::new(random_key().unwrap().as_ref()).unwrap());
        assert!(other.open(b"where", &s).is_err());
        // Sealing in place gives what sealing a copy gives.
        let mut buf = vec![0u8; SEAL_PREFIX];
        buf.extend_from_slice(b"secret");
        let p = k.seal_prefixed(b"where", buf).unwrap();
        assert_eq!(k.open(b"where", &p).unwrap().as_slice(), b"secret");
        assert_eq!(p.len(), s.len());
        assert_ne!(p, s, "every seal draws a fresh nonce");
        assert!(k.seal_prefixed(b"where", vec![0u8; 3]).is_err());
        // A bare key (master keys): nonce || ciphertext || tag.
        let bare = SealKey::new(random_key().unwrap().as_ref()).unwrap();
        let w = bare.seal(b"wrap", b"data key").unwrap();
        assert_eq!(w.len(), NONCE_LEN + 8 + TAG_LEN);
        assert_eq!(bare.open(b"wrap", &w).unwrap().as_slice(), b"data key");
        assert!(bare.open(b"other", &w).is_err());
    }
}
