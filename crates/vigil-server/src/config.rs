//! The server's configuration file (TOML), validated at load.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:4443`.
    pub listen: SocketAddr,
    /// Where the store (control database, tenants, master key) and PKI live.
    pub data_dir: PathBuf,
    /// Names (DNS or IP) the server certificate is issued for on first start.
    #[serde(default = "default_names")]
    pub server_names: Vec<String>,
    /// Largest gRPC message accepted, in bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Most records in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch_records: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP), e.g.
    /// `127.0.0.1:9464`; none when unset. Not authenticated: keep it off
    /// networks that should not read tenant ids and volumes.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_max_message() -> usize {
    4 * 1024 * 1024
}
fn default_max_batch() -> usize {
    10_000
}

pub use vigil_config::ConfigError;

impl ServerConfig {
    /// A configuration with defaults for everything but where to listen and store.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            server_names: default_names(),
            max_message_bytes: default_max_message(),
            max_batch_records: default_max_batch(),
            metrics_listen: None,
        }
    }

    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        vigil_config::load(path)
    }
}

impl vigil_config::Validate for ServerConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.server_names.is_empty() {
            return Err(("server_names", "needs at least one name".into()));
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err((
                "max_message_bytes",
                "must be between 65536 and 67108864".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_batch_records) {
            return Err(("max_batch_records", "must be between 1 and 100000".into()));
        }
        Ok(())
    }
}
