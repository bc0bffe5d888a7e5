//! The server's CA, TLS certificate and transfer key on disk: generated on
//! first start, reused afterwards. The transfer key is what offline bundles
//! are encrypted to (`transfer.rs`); its public half is also written beside
//! the CA, for sensors enrolled before enrollment handed it out.

use crate::ServerError;
use std::path::{Path, PathBuf};
use vigil_pki::CertificateAuthority;

/// The files under `<data_dir>/pki`.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        PkiPaths {
            dir: data_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    fn transfer_key(&self) -> PathBuf {
        self.dir.join("transfer.key")
    }
    /// The transfer public key (PEM), to copy to a sensor's data directory.
    pub fn transfer_public(&self) -> PathBuf {
        self.dir.join("transfer.pub")
    }
}

pub(crate) struct Loaded {
    pub(crate) ca: CertificateAuthority,
    pub(crate) server_cert_pem: String,
    pub(crate) server_key_pem: String,
    pub(crate) transfer: vigil_bundle::TransferKey,
}

fn write_file(path: &Path, data: &str, private: bool) -> Result<(), ServerError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let io = |e| ServerError::Io(format!("{}: {e}", path.display()));
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(data.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, ServerError> {
    std::fs::read_to_string(path).map_err(|e| ServerError::Io(format!("{}: {e}", path.display())))
}

/// Loads the CA and server certificate, creating them when absent.
pub(crate) fn load_or_create(paths: &PkiPaths, names: &[String]) -> Result<Loaded, ServerError> {
    std::fs::create_dir_all(&paths.dir)
        .map_err(|e| ServerError::Io(format!("{}: {e}", paths.dir.display())))?;
    let ca = if paths.ca_cert().exists() {
        CertificateAuthority::from_pem(&read(&paths.ca_cert())?, &read(&paths.ca_key())?)?
    } else {
        let ca = CertificateAuthority::generate("Vigil CA")?;
        write_file(&paths.ca_key(), ca.key_pem(), true)?;
        write_file(&paths.ca_cert(), ca.cert_pem(), false)?;
        tracing::info!(path = %paths.ca_cert().display(), "Created certificate authority");
        ca
    };
    if !paths.server_cert().exists() {
        let server = ca.issue_server(names)?;
        write_file(&paths.server_key(), &server.key_pem, true)?;
        write_file(&paths.server_cert(), &server.cert_pem, false)?;
        tracing::info!(names = ?names, "Issued server certificate");
    }
    let transfer = if paths.transfer_key().exists() {
        vigil_bundle::TransferKey::from_pkcs8_pem(&read(&paths.transfer_key())?)
            .map_err(|e| ServerError::Io(format!("{}: {e}", paths.transfer_key().display())))?
    } else {
        let key = vigil_bundle::TransferKey::generate();
        let pem = key
            .to_pkcs8_pem()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        write_file(&paths.transfer_key(), &pem, true)?;
        tracing::info!(path = %paths.transfer_key().display(), "Created the transfer key");
        key
    };
    // Derived from the key, never read back: written when absent or different.
    let public = transfer
        .public()
        .to_pem()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    if std::fs::read_to_string(paths.transfer_public())
        .ok()
        .as_deref()
        != Some(public.as_str())
    {
        write_file(&paths.transfer_public(), &public, false)?;
    }
    Ok(Loaded {
        ca,
        server_cert_pem: read(&paths.server_cert())?,
        server_key_pem: read(&paths.server_key())?,
        transfer,
    })
}
