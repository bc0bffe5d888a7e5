//! An analyst profile: where the server is, how to trust it, and the API token.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `https://host:port` of the server.
    pub endpoint: String,
    /// CA certificate that signed the server's certificate (PEM file).
    pub ca_file: PathBuf,
    /// Name to verify in the server certificate.
    pub server_name: String,
    /// Bearer API token, scoped to one tenant.
    pub token: String,
    /// The tenant the token belongs to (informational).
    #[serde(default)]
    pub tenant: String,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profile {}", path.display()))?;
        let p: Profile =
            toml::from_str(&text).with_context(|| format!("parsing profile {}", path.display()))?;
        if !p.endpoint.starts_with("https://") {
            anyhow::bail!(
                "{}: field `endpoint` must start with https://",
                path.display()
            );
        }
        Ok(p)
    }

    /// Writes the profile readable by its owner only: it holds a secret.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let text = toml::to_string(self)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    pub async fn channel(&self) -> Result<Channel> {
        let ca = std::fs::read_to_string(&self.ca_file)
            .with_context(|| format!("reading CA certificate {}", self.ca_file.display()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(self.server_name.clone());
        Channel::from_shared(self.endpoint.clone())?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.endpoint))
    }
}
