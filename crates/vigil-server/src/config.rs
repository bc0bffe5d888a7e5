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
    /// Data locations this server serves, each with its own directory. A
    /// tenant's region is chosen at creation and never changes; tenants of
    /// regions not listed here are refused. Default: one region, `local`, in
    /// `data_dir/store`.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// How often retention removes data older than each tenant's setting.
    #[serde(default = "default_retention_check")]
    pub retention_check_seconds: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP), e.g.
    /// `127.0.0.1:9464`; none when unset. Not authenticated: keep it off
    /// networks that should not read tenant ids and volumes.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// A detection of the same rule on the same device and process tree
    /// received within this many seconds of the last one grows that alert
    /// (count, last seen) instead of raising another; 0: never aggregate.
    #[serde(default = "default_alert_aggregation")]
    pub alert_aggregation_seconds: u64,
    /// Sensor record streams open at once, at most; a stream past it is
    /// refused with `RESOURCE_EXHAUSTED` and a retry hint (`admission.rs`).
    #[serde(default = "default_max_sensor_streams")]
    pub max_sensor_streams: usize,
    /// Bytes of sensor batches read and not yet stored, at most, over
    /// all streams; a stream whose next batch does not fit waits, unread (at
    /// least `max_message_bytes`).
    #[serde(default = "default_max_ingest_bytes")]
    pub max_ingest_bytes_in_flight: usize,
    /// The retry hint (`retry-after-ms`) sent with a refusal for load and when
    /// shutdown ends open streams: sensors wait at least this long, plus
    /// jitter of as much again, before they reconnect.
    #[serde(default = "default_retry_after")]
    pub retry_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Letters, digits, '-' and '_', e.g. `eu-west`.
    pub name: String,
    /// Where this region's tenant data is written (and nowhere else).
    pub data_dir: PathBuf,
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
fn default_retention_check() -> u64 {
    3600
}
fn default_alert_aggregation() -> u64 {
    600
}
fn default_max_sensor_streams() -> usize {
    4096
}
fn default_max_ingest_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_retry_after() -> u64 {
    2000
}
/// The most bytes in flight that can be configured: 64 GiB.
const MAX_INGEST_BYTES: usize = 64 << 30;
/// The longest aggregation window: a day.
const MAX_ALERT_AGGREGATION: u64 = 86_400;

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
            regions: Vec::new(),
            retention_check_seconds: default_retention_check(),
            metrics_listen: None,
            alert_aggregation_seconds: default_alert_aggregation(),
            max_sensor_streams: default_max_sensor_streams(),
            max_ingest_bytes_in_flight: default_max_ingest_bytes(),
            retry_after_ms: default_retry_after(),
        }
    }

    /// Where the control database, master keys and deployment audit log live.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The regions served: as configured, or `local` in the store directory.
    pub fn served_regions(&self) -> Vec<vigil_store::Region> {
        if self.regions.is_empty() {
            return vec![vigil_store::Region {
                name: "local".into(),
                dir: self.store_dir(),
            }];
        }
        self.regions
            .iter()
            .map(|r| vigil_store::Region {
                name: r.name.clone(),
                dir: r.data_dir.clone(),
            })
            .collect()
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
        if !(1..=86_400).contains(&self.retention_check_seconds) {
            return Err((
                "retention_check_seconds",
                "must be between 1 and 86400".into(),
            ));
        }
        if self.alert_aggregation_seconds > MAX_ALERT_AGGREGATION {
            return Err((
                "alert_aggregation_seconds",
                format!("must be at most {MAX_ALERT_AGGREGATION} (0 disables)"),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_sensor_streams) {
            return Err(("max_sensor_streams", "must be between 1 and 1000000".into()));
        }
        // A batch as large as a message must fit, or its stream would wait forever.
        if !(self.max_message_bytes..=MAX_INGEST_BYTES).contains(&self.max_ingest_bytes_in_flight) {
            return Err((
                "max_ingest_bytes_in_flight",
                format!(
                    "must be between max_message_bytes ({}) and {MAX_INGEST_BYTES}",
                    self.max_message_bytes
                ),
            ));
        }
        if !(100..=60_000).contains(&self.retry_after_ms) {
            return Err(("retry_after_ms", "must be between 100 and 60000".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.regions {
            if r.name.is_empty()
                || r.name.len() > 64
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    "regions.name",
                    format!("`{}`: letters, digits, '-' and '_', at most 64", r.name),
                ));
            }
            if !seen.insert(&r.name) {
                return Err(("regions.name", format!("`{}` is listed twice", r.name)));
            }
            if !r.data_dir.is_absolute() {
                return Err((
                    "regions.data_dir",
                    format!("region `{}`: must be an absolute path", r.name),
                ));
            }
        }
        let dirs: Vec<_> = self.regions.iter().map(|r| &r.data_dir).collect();
        for (i, a) in dirs.iter().enumerate() {
            if dirs[i + 1..]
                .iter()
                .any(|b| a.starts_with(b) || b.starts_with(a))
            {
                return Err((
                    "regions.data_dir",
                    "two regions share a directory: each needs its own".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example installed as /etc/vigil/server.toml (deploy/server.toml).
    const EXAMPLE: &str = include_str!("../deploy/server.toml");

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        vigil_config::parse(Path::new("server.toml"), text)
    }

    #[test]
    fn the_shipped_example_loads() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.served_regions().len(), 2);
        assert_eq!(c.served_regions()[0].name, "eu");
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        // The admission limits it shows are the defaults.
        let d = ServerConfig::new(c.listen, c.data_dir.clone());
        assert_eq!(
            (
                c.max_sensor_streams,
                c.max_ingest_bytes_in_flight,
                c.retry_after_ms
            ),
            (
                d.max_sensor_streams,
                d.max_ingest_bytes_in_flight,
                d.retry_after_ms
            )
        );
    }

    #[test]
    fn without_regions_one_local_region_lives_in_the_store() {
        let c = parse("listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n").unwrap();
        let r = c.served_regions();
        assert_eq!(
            (r[0].name.as_str(), r[0].dir.as_path()),
            ("local", Path::new("/d/store"))
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = "listen = \"127.0.0.1:1\"\ndata_dir = \"/d\"\n";
        for (extra, field) in [
            (
                "[[regions]]\nname = \"eu west\"\ndata_dir = \"/e\"\n",
                "regions.name",
            ),
            (
                "[[regions]]\nname = \"eu\"\ndata_dir = \"rel\"\n",
                "regions.data_dir",
            ),
            (
                "[[regions]]\nname = \"a\"\ndata_dir = \"/x\"\n[[regions]]\nname = \"a\"\ndata_dir = \"/y\"\n",
                "regions.name",
            ),
            (
                "[[regions]]\nname = \"a\"\ndata_dir = \"/x\"\n[[regions]]\nname = \"b\"\ndata_dir = \"/x/b\"\n",
                "regions.data_dir",
            ),
            ("retention_check_seconds = 0\n", "retention_check_seconds"),
            (
                "alert_aggregation_seconds = 86401\n",
                "alert_aggregation_seconds",
            ),
            ("max_batch_records = 0\n", "max_batch_records"),
            ("max_sensor_streams = 0\n", "max_sensor_streams"),
            (
                "max_ingest_bytes_in_flight = 65536\n",
                "max_ingest_bytes_in_flight",
            ),
            ("retry_after_ms = 99\n", "retry_after_ms"),
            ("retry_after_ms = 60001\n", "retry_after_ms"),
            ("retention_days = 30\n", "retention_days"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }
}
