//! The server CA a sensor enrolled with, pinned in its data directory.
//!
//! `server.ca_file` is trusted once: for the enrollment call, and only when the
//! server answers with that same CA. It is then saved as `server-ca.pem` beside
//! the device identity, and every later connection trusts that file, not the
//! configuration: whoever can change the configuration's CA file (and
//! endpoint) cannot point an enrolled sensor at a server of their own. Moving a
//! sensor to another server means enrolling it again (a fresh data directory).
//!
//! A device enrolled before pinning existed has no `server-ca.pem`: it trusts
//! `server.ca_file`, and pins it on its first successful connection.

use crate::SensorError;
use crate::config::SensorConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The pinned CA, in the data directory.
pub const PIN_FILE: &str = "server-ca.pem";

/// Largest CA file read, pinned or configured: a few certificates.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// The certificates of a PEM text, in DER and sorted, so that two texts naming
/// the same certificates compare equal whatever their order, line breaks or
/// comments. Fails when the text holds no certificate or a malformed one.
pub(crate) fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".into());
    }
    certs.sort();
    certs.dedup();
    Ok(certs)
}

/// Whether two PEM texts hold the same certificates.
pub(crate) fn same_certificates(a: &str, b: &str) -> Result<bool, String> {
    Ok(certificates(a)? == certificates(b)?)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CA_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The pinned CA in `dir`, or `None` when nothing is pinned there. A pin that
/// cannot be read or holds no certificate is an error: the sensor must not
/// fall back to the configuration's CA because its pin was damaged.
pub fn load(dir: &Path) -> Result<Option<String>, SensorError> {
    let path = dir.join(PIN_FILE);
    let pem = match read_bounded(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SensorError::Io(format!(
                "pinned server CA {}: {e}",
                path.display()
            )));
        }
    };
    certificates(&pem).map_err(|e| {
        SensorError::Io(format!(
            "pinned server CA {}: {e}; to trust server.ca_file again, enroll anew",
            path.display()
        ))
    })?;
    Ok(Some(pem))
}

/// Pins `pem` in `dir`: written to a temporary file (mode 0600), synced,
/// renamed over `server-ca.pem`, and the directory synced, so a crash leaves
/// the old pin or the new one, never part of one.
pub fn save(dir: &Path, pem: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{PIN_FILE}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(PIN_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The CA one session trusts.
pub(crate) struct SessionCa {
    pub(crate) pem: String,
    /// False for a device enrolled before pinning: `pem` is `server.ca_file`'s,
    /// to be pinned once a connection with it succeeds.
    pub(crate) pinned: bool,
}

/// Chooses the CA for each session of one uplink, warning once when the
/// configuration's CA file no longer matches the pin.
#[derive(Default)]
pub(crate) struct Trust {
    warned: bool,
}

impl Trust {
    pub(crate) fn session_ca(&mut self, cfg: &SensorConfig) -> Result<SessionCa, SensorError> {
        let Some(pem) = load(&cfg.data_dir)? else {
            return Ok(SessionCa {
                pem: super::read_ca(cfg)?,
                pinned: false,
            });
        };
        if !self.warned {
            let ca_file = &cfg.server().map_err(SensorError::Config)?.ca_file;
            let differs = match read_bounded(ca_file) {
                Ok(configured) => !same_certificates(&pem, &configured).unwrap_or(false),
                Err(_) => true,
            };
            if differs {
                self.warned = true;
                tracing::warn!(
                    pinned = %pin_path(&cfg.data_dir).display(),
                    ca_file = %ca_file.display(),
                    "server.ca_file is not the CA this sensor enrolled with; it is ignored and the pinned CA is trusted"
                );
            }
        }
        Ok(SessionCa { pem, pinned: true })
    }
}

fn pin_path(dir: &Path) -> PathBuf {
    dir.join(PIN_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ca_pem(name: &str) -> String {
        vigil_pki::CertificateAuthority::generate(name)
            .expect("CA")
            .cert_pem()
            .to_owned()
    }

    #[test]
    fn nothing_pinned_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_saved_pin_loads_back_private() {
        let dir = tempfile::tempdir().unwrap();
        let pem = ca_pem("a");
        save(dir.path(), &pem).unwrap();
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some(pem.as_str()));
        let mode = std::fs::metadata(dir.path().join(PIN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join(format!("{PIN_FILE}.tmp")).exists());
        // Saving again replaces the pin.
        let other = ca_pem("b");
        save(dir.path(), &other).unwrap();
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some(other.as_str()));
    }

    #[test]
    fn a_damaged_pin_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PIN_FILE), "not a certificate").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(PIN_FILE), "{err}");
        std::fs::write(dir.path().join(PIN_FILE), "").unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn certificates_compare_by_content_not_text() {
        let (a, b) = (ca_pem("a"), ca_pem("b"));
        assert!(same_certificates(&a, &a.replace('\n', "\r\n")).unwrap());
        assert!(same_certificates(&format!("# comment\n{a}{b}"), &format!("{b}\n{a}")).unwrap());
        assert!(!same_certificates(&a, &b).unwrap());
        assert!(!same_certificates(&a, &format!("{a}{b}")).unwrap());
        assert!(same_certificates(&a, "garbage").is_err());
    }

    fn config(dir: &Path, ca_file: &Path) -> SensorConfig {
        let text = format!(
            "data_dir = {:?}\n[server]\nendpoint = \"https://127.0.0.1:1\"\nca_file = {:?}\n",
            dir, ca_file
        );
        SensorConfig::parse(Path::new("test.toml"), &text).expect("config")
    }

    #[test]
    fn the_pin_wins_over_a_changed_ca_file_and_the_warning_is_given_once() {
        let dir = tempfile::tempdir().unwrap();
        let (enrolled, other) = (ca_pem("enrolled"), ca_pem("other"));
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &other).unwrap();
        let cfg = config(dir.path(), &ca_file);

        // Enrolled before pinning: the configured CA, not yet pinned.
        let mut trust = Trust::default();
        let s = trust.session_ca(&cfg).unwrap();
        assert_eq!((s.pem.as_str(), s.pinned), (other.as_str(), false));

        save(dir.path(), &enrolled).unwrap();
        let s = trust.session_ca(&cfg).unwrap();
        assert_eq!((s.pem.as_str(), s.pinned), (enrolled.as_str(), true));
        assert!(trust.warned);
        // A CA file that cannot be read does not matter either.
        std::fs::remove_file(&ca_file).unwrap();
        let s = trust.session_ca(&cfg).unwrap();
        assert_eq!(s.pem, enrolled);

        // The same CA in the configuration: no warning.
        std::fs::write(&ca_file, &enrolled).unwrap();
        let mut quiet = Trust::default();
        assert_eq!(quiet.session_ca(&cfg).unwrap().pem, enrolled);
        assert!(!quiet.warned);
    }
}
