//! Envelope encryption: each tenant has its own data key (AES-256-GCM), kept
//! only wrapped by the store's master key. Erasing a tenant's key makes its
//! data unrecoverable even from backups.

use crate::StoreError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// A 256-bit AES-GCM key. Every encryption draws a fresh random 96-bit nonce;
/// with one key per tenant this stays far below the 2^32-message bound NIST
/// sets for random nonces under one key.
pub(crate) struct SealKey {
    cipher: Aes256Gcm,
}

impl SealKey {
    pub(crate) fn new(bytes: &[u8]) -> Result<SealKey, StoreError> {
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|_| StoreError::Crypto("bad key length"))?;
        Ok(SealKey { cipher })
    }

    /// Encrypts `plain`, bound to `aad` (where the value lives), as nonce || ciphertext || tag.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        // A CSPRNG in process (ChaCha, reseeded from the OS): ingest seals
        // every record, and a system call per nonce would cost more than the AES.
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(StoreError::Crypto("ciphertext too short"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| StoreError::Crypto("bad nonce"))?;
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Crypto("authentication failed: wrong key or tampered data"))
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

    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or(StoreError::Crypto("current data key missing"))?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&key.seal(aad, plain)?);
        Ok(out)
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

/// The data key version a sealed value names.
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
        let k = SealKey::new(random_key().unwrap().as_ref()).unwrap();
        let s = k.seal(b"where", b"secret").unwrap();
        assert_eq!(k.open(b"where", &s).unwrap().as_slice(), b"secret");
        assert!(
            k.open(b"elsewhere", &s).is_err(),
            "moved ciphertext must not open"
        );
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(k.open(b"where", &t).is_err());
        assert!(k.open(b"where", &s[..10]).is_err());
        let other = SealKey::new(random_key().unwrap().as_ref()).unwrap();
        assert!(other.open(b"where", &s).is_err());
    }
}
