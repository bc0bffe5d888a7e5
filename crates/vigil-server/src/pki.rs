//! The server's CA and TLS certificate on disk: generated on first start,
//! reused afterwards.

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
}

pub(crate) struct Loaded {
    pub(crate) ca: CertificateAuthority,
    pub(crate) server_cert_pem: String,
    pub(crate) server_key_pem: String,
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
    Ok(Loaded {
        ca,
        server_cert_pem: read(&paths.server_cert())?,
        server_key_pem: read(&paths.server_key())?,
    })
}
