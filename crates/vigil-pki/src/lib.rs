//! Certificates for Vigil.
//!
//! What it is: the certificate authority that signs the server's certificate and
//! every device certificate, the device side of enrollment (key + CSR), and the
//! reading of a device's identity (tenant and device id) out of a verified
//! certificate.
//!
//! What it is not: it does not verify chains (rustls does that during the
//! handshake) and does no network or file I/O; callers store the PEM it returns.
//!
//! A device's identity lives in one URI subject alternative name,
//! `vigil://tenant/<tenant>/device/<device>`, written by the server from its
//! own records: nothing the device asks for in its CSR is copied over.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// How long a device certificate is valid.
pub const DEVICE_CERT_VALIDITY: Duration = Duration::days(365);
/// Largest CSR accepted, in bytes of PEM.
pub const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("certificate carries no Vigil device identity")]
    NoIdentity,
    #[error("identifier `{0}` may only contain letters, digits, '-' and '_'")]
    BadIdentifier(String),
}

/// The CA: its certificate (PEM) and key, able to sign.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Who a device certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub tenant_id: String,
    pub device_id: String,
}

impl CertificateAuthority {
    /// Makes a new self-signed CA (ECDSA P-256, ten years).
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved with [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn("vigil-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(825);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a device's CSR. Only the CSR's public key is used; the subject and
    /// the identity come from the server's own records.
    pub fn sign_device(
        &self,
        csr_pem: &str,
        id: &DeviceIdentity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        if csr_pem.len() > MAX_CSR_PEM_BYTES {
            return Err(PkiError::InvalidCsr(format!(
                "larger than {MAX_CSR_PEM_BYTES} bytes"
            )));
        }
        check_identifier(&id.tenant_id)?;
        check_identifier(&id.device_id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&id.device_id);
        let uri = format!("vigil://tenant/{}/device/{}", id.tenant_id, id.device_id);
        let uri = uri
            .try_into()
            .map_err(|_| PkiError::BadIdentifier(id.device_id.clone()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + validity;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.pem())
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vigil");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Tenant and device ids go into a URI: keep them to a safe alphabet.
pub fn check_identifier(s: &str) -> Result<(), PkiError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PkiError::BadIdentifier(s.to_owned()));
    }
    Ok(())
}

/// The device side of enrollment: a fresh key and a CSR for it.
pub fn device_key_and_csr(hostname: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(hostname);
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Reads the device identity from a DER certificate that rustls has already verified.
pub fn device_identity(cert_der: &[u8]) -> Result<DeviceIdentity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?
        .ok_or(PkiError::NoIdentity)?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix("vigil://tenant/")
            && let Some((tenant, device)) = rest.split_once("/device/")
        {
            check_identifier(tenant)?;
            check_identifier(device)?;
            return Ok(DeviceIdentity {
                tenant_id: tenant.to_owned(),
                device_id: device.to_owned(),
            });
        }
    }
    Err(PkiError::NoIdentity)
}

/// The subject public key of a DER certificate: for a device's ECDSA P-256
/// key, the uncompressed SEC1 point (what verifies the bundles it signs).
pub fn certificate_public_key(cert_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Decodes the first certificate of a PEM text to DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    Ok(p.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_identity_round_trips_and_ignores_csr_names() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let (_key, csr) = device_key_and_csr("vigil://tenant/evil/device/x").unwrap();
        let id = DeviceIdentity {
            tenant_id: "acme".into(),
            device_id: "dev-1".into(),
        };
        let cert = ca.sign_device(&csr, &id, DEVICE_CERT_VALIDITY).unwrap();
        assert_eq!(device_identity(&pem_to_der(&cert).unwrap()).unwrap(), id);
        // The CA reloads from its PEM and still signs.
        let ca2 = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert!(ca2.sign_device(&csr, &id, DEVICE_CERT_VALIDITY).is_ok());
        // The certificate carries the CSR's key: an uncompressed P-256 point.
        let key = certificate_public_key(&pem_to_der(&cert).unwrap()).unwrap();
        assert_eq!((key.len(), key[0]), (65, 4));
        assert!(certificate_public_key(b"junk").is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let id = DeviceIdentity {
            tenant_id: "acme".into(),
            device_id: "dev-1".into(),
        };
        assert!(matches!(
            ca.sign_device("garbage", &id, DEVICE_CERT_VALIDITY),
            Err(PkiError::InvalidCsr(_))
        ));
        let (_k, csr) = device_key_and_csr("h").unwrap();
        let bad = DeviceIdentity {
            tenant_id: "a/b".into(),
            device_id: "d".into(),
        };
        assert!(matches!(
            ca.sign_device(&csr, &bad, DEVICE_CERT_VALIDITY),
            Err(PkiError::BadIdentifier(_))
        ));
        let server = ca.issue_server(&["localhost".into()]).unwrap();
        assert!(matches!(
            device_identity(&pem_to_der(&server.cert_pem).unwrap()),
            Err(PkiError::NoIdentity)
        ));
        assert!(device_identity(b"\x30\x03junk").is_err());
    }
}
