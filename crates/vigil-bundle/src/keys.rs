//! The keys a bundle is made and opened with: the device's signing key (the
//! ECDSA P-256 key the sensor made at enrollment, PKCS#8 PEM as `vigil-pki`
//! writes it) and the server's transfer key pair (ECDH P-256).

use crate::BundleError;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of an uncompressed SEC1 P-256 point: `04 || x || y`.
pub const PUBLIC_KEY_LEN: usize = 65;

/// The device's private key, which signs its bundles.
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// The key as enrollment saved it (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    pub fn from_pkcs8_pem(pem: &str) -> Result<DeviceKey, BundleError> {
        let secret = SecretKey::from_pkcs8_pem(pem).map_err(|e| {
            BundleError::Key(format!("the device key is not a P-256 PKCS#8 key: {e}"))
        })?;
        Ok(DeviceKey {
            key: SigningKey::from(&secret),
        })
    }

    /// A fresh key (tests).
    pub fn generate() -> DeviceKey {
        DeviceKey {
            key: SigningKey::from(&SecretKey::generate()),
        }
    }

    /// The public key as an uncompressed SEC1 point (what the server keeps
    /// of the device certificate).
    pub fn public_key(&self) -> Vec<u8> {
        VerifyingKey::from(&self.key)
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    pub(crate) fn signing(&self) -> &SigningKey {
        &self.key
    }
}

/// The server's transfer key: bundles are encrypted to its public half.
pub struct TransferKey {
    secret: SecretKey,
}

impl std::fmt::Debug for TransferKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferKey")
            .field("key_id", &hex(&self.public().key_id()))
            .finish_non_exhaustive()
    }
}

impl TransferKey {
    pub fn generate() -> TransferKey {
        TransferKey {
            secret: SecretKey::generate(),
        }
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<TransferKey, BundleError> {
        let secret = SecretKey::from_pkcs8_pem(pem).map_err(|e| {
            BundleError::Key(format!("the transfer key is not a P-256 PKCS#8 key: {e}"))
        })?;
        Ok(TransferKey { secret })
    }

    /// PKCS#8 PEM, to keep in a file only the server can read.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, BundleError> {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| BundleError::Key(format!("encoding the transfer key: {e}")))
    }

    pub fn public(&self) -> TransferPublicKey {
        TransferPublicKey {
            key: self.secret.public_key(),
        }
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }
}

/// The public half of the server's transfer key, which sensors encrypt to.
#[derive(Clone, PartialEq, Eq)]
pub struct TransferPublicKey {
    key: PublicKey,
}

impl std::fmt::Debug for TransferPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferPublicKey")
            .field("key_id", &hex(&self.key_id()))
            .finish()
    }
}

impl TransferPublicKey {
    /// From an uncompressed or compressed SEC1 point (`EnrollResponse.transfer_public_key`).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<TransferPublicKey, BundleError> {
        PublicKey::from_sec1_bytes(bytes)
            .map(|key| TransferPublicKey { key })
            .map_err(|_| BundleError::Key("the transfer public key is not a P-256 point".into()))
    }

    /// The uncompressed SEC1 point, 65 bytes.
    pub fn to_sec1_bytes(&self) -> Vec<u8> {
        sec1(&self.key)
    }

    /// `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo), as the server
    /// writes it beside its CA and the sensor keeps it.
    pub fn from_pem(pem: &str) -> Result<TransferPublicKey, BundleError> {
        PublicKey::from_public_key_pem(pem)
            .map(|key| TransferPublicKey { key })
            .map_err(|e| {
                BundleError::Key(format!("the transfer public key is not a P-256 key: {e}"))
            })
    }

    pub fn to_pem(&self) -> Result<String, BundleError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| BundleError::Key(format!("encoding the transfer public key: {e}")))
    }

    /// What a bundle names its recipient by: SHA-256 of the uncompressed point.
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::digest(self.to_sec1_bytes()).into()
    }

    pub(crate) fn key(&self) -> &PublicKey {
        &self.key
    }
}

pub(crate) fn sec1(key: &PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToSec1Point;
    key.to_sec1_point(false).as_bytes().to_vec()
}

/// Lowercase hex, for key ids in messages.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
