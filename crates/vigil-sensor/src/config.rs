//! The sensor's configuration file (TOML), validated at load with errors that
//! name the field.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Where the sensor keeps its identity, certificates and spool.
    pub data_dir: PathBuf,
    /// Where records go. Absent only for a standalone sensor (`vigil-sensor run --output jsonl`).
    #[serde(default)]
    pub server: Option<ServerConfig>,
    #[serde(default)]
    pub enrollment: EnrollmentConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub uplink: UplinkConfig,
    #[serde(default)]
    pub collect: CollectConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
}

/// What this device sends beyond what the tenant's policy decides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Send optional data (the sensor's own diagnostics). Unset: as the
    /// tenant's policy says (off unless it turns it on); set, this device's
    /// choice wins either way.
    #[serde(default)]
    pub optional_data: Option<bool>,
    /// Replace user names, host names and home-directory segments by keyed
    /// pseudonyms even when the tenant's policy does not ask it.
    #[serde(default)]
    pub pseudonymize: bool,
    /// Redaction patterns added to the defaults and the tenant's.
    #[serde(default)]
    pub redact: Vec<RedactPattern>,
}

/// A redaction pattern: a name (counted in health) and a regular expression
/// whose group `secret` (or whole match) is replaced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactPattern {
    pub name: String,
    pub regex: String,
}

impl PrivacyConfig {
    pub fn patterns(&self) -> Vec<(String, String)> {
        self.redact
            .iter()
            .map(|p| (p.name.clone(), p.regex.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `https://host:port` of the server's ingest service.
    pub endpoint: String,
    /// PEM file of the CA that signed the server's certificate. Trusted for
    /// enrollment only; afterwards the CA pinned then (`server-ca.pem` in
    /// `data_dir`) is, and a different file here is logged and ignored.
    pub ca_file: PathBuf,
    /// Name to verify in the server certificate (defaults to the endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Enrollment token, inline. Prefer `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the enrollment token (read once, at first enrollment).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule files or directories of Sigma YAML (or `.vrb` bundles).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Correlation groups kept per correlation rule; the least recently
    /// updated is evicted beyond this (evictions are reported in SensorHealth).
    #[serde(default = "default_max_groups")]
    pub correlation_max_groups: usize,
    /// Entries (events, values) kept per correlation group.
    #[serde(default = "default_max_entries")]
    pub correlation_max_entries: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: Vec::new(),
            correlation_max_groups: default_max_groups(),
            correlation_max_entries: default_max_entries(),
        }
    }
}

fn default_max_groups() -> usize {
    vigil_rules::EngineConfig::default().max_groups
}
fn default_max_entries() -> usize {
    vigil_rules::EngineConfig::default().max_entries_per_group
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Disk the spool may use before it evicts the oldest unsent records.
    #[serde(default = "default_spool_mb")]
    pub capacity_mb: u64,
    /// Free space the spool leaves on its filesystem: below it the spool stops
    /// growing and drops bulk telemetry, oldest first, to write what is new
    /// (detections and health go last). Counted as `disk_full` in health.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            capacity_mb: default_spool_mb(),
            min_free_mb: default_min_free_mb(),
        }
    }
}

fn default_spool_mb() -> u64 {
    512
}

fn default_min_free_mb() -> u64 {
    vigil_spool::DEFAULT_MIN_FREE_BYTES >> 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Records per batch sent to the server.
    #[serde(default = "default_batch")]
    pub batch_max_records: usize,
    /// How long events may wait before they are spooled and sent.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// Largest gRPC message, both ways.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            batch_max_records: default_batch(),
            flush_interval_ms: default_flush_ms(),
            max_message_bytes: default_max_message(),
        }
    }
}

fn default_batch() -> usize {
    512
}
fn default_flush_ms() -> u64 {
    100
}
fn default_max_message() -> usize {
    4 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Use eBPF (processes, files, network) where the kernel has BTF; audit
    /// and the proc connector are the fallback, chosen automatically.
    #[serde(default = "yes")]
    pub ebpf: bool,
    /// Report file changes (eBPF only).
    #[serde(default = "yes")]
    pub files: bool,
    /// Report network connections and listeners (eBPF only).
    #[serde(default = "yes")]
    pub network: bool,
    /// The kernel ring buffer between the eBPF programs and the sensor, in KiB
    /// (a power of two; what does not fit is counted as dropped).
    #[serde(default = "default_ring_kb")]
    pub ring_buffer_kb: u32,
    /// File paths never reported, besides /proc, /sys and the data directory.
    #[serde(default)]
    pub exclude_paths: Vec<PathBuf>,
    /// Executables whose processes (and their file and network activity) are not reported.
    #[serde(default)]
    pub exclude_executables: Vec<PathBuf>,
    /// Leave out the sensor's own process and everything it starts.
    #[serde(default = "yes")]
    pub exclude_self: bool,
    /// Written files under these paths are hashed when closed (persistence
    /// files and executables always are).
    #[serde(default)]
    pub hash_written_under: Vec<PathBuf>,
    /// Use the kernel audit subsystem for process execution when eBPF is unavailable.
    #[serde(default = "yes")]
    pub audit: bool,
    /// Use the proc connector for exits (and execs when audit is off).
    #[serde(default = "yes")]
    pub proc_connector: bool,
    /// Report running processes at start.
    #[serde(default = "yes")]
    pub inventory: bool,
    /// Files larger than this are not hashed (the record says `too_large`).
    #[serde(default = "default_hash_mb")]
    pub hash_max_mb: u64,
    /// Hashing reads at most this many MiB per second on average (0: no
    /// limit); a file that would exceed it is reported `budget_exceeded`
    /// rather than delaying events.
    #[serde(default = "default_hash_rate")]
    pub hash_read_mb_per_s: u64,
    /// File identities remembered with their hashes (on disk, across restarts).
    #[serde(default = "default_hash_cache")]
    pub hash_cache_entries: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            ebpf: true,
            files: true,
            network: true,
            ring_buffer_kb: default_ring_kb(),
            exclude_paths: Vec::new(),
            exclude_executables: Vec::new(),
            exclude_self: true,
            hash_written_under: Vec::new(),
            audit: true,
            proc_connector: true,
            inventory: true,
            hash_max_mb: default_hash_mb(),
            hash_read_mb_per_s: default_hash_rate(),
            hash_cache_entries: default_hash_cache(),
        }
    }
}

fn default_hash_rate() -> u64 {
    64
}
fn default_hash_cache() -> usize {
    100_000
}
fn default_ring_kb() -> u32 {
    4096
}

fn yes() -> bool {
    true
}
fn default_hash_mb() -> u64 {
    256
}

pub use vigil_config::ConfigError;

impl SensorConfig {
    pub fn load(path: &Path) -> Result<SensorConfig, ConfigError> {
        vigil_config::load(path)
    }

    pub fn parse(path: &Path, text: &str) -> Result<SensorConfig, ConfigError> {
        vigil_config::parse(path, text)
    }

    /// The server section, which connected mode requires.
    pub fn server(&self) -> Result<&ServerConfig, String> {
        self.server.as_ref().ok_or_else(|| {
            "field `server`: required to send records to a server \
             (run `vigil-sensor run --output jsonl` for a standalone sensor)"
                .to_owned()
        })
    }
}

impl ServerConfig {
    /// The server name to verify in its certificate.
    pub fn server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let rest = self.endpoint.trim_start_matches("https://");
            let host = rest.split('/').next().unwrap_or(rest);
            match host.rsplit_once(':') {
                Some((h, _)) => h.trim_matches(['[', ']']).to_owned(),
                None => host.to_owned(),
            }
        })
    }
}

impl vigil_config::Validate for SensorConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(server) = &self.server
            && !server.endpoint.starts_with("https://")
        {
            return Err((
                "server.endpoint",
                "must start with https:// (the sensor only speaks TLS)".into(),
            ));
        }
        if self.spool.capacity_mb == 0 || self.spool.capacity_mb > 1024 * 1024 {
            return Err(("spool.capacity_mb", "must be between 1 and 1048576".into()));
        }
        if self.spool.min_free_mb > 1024 * 1024 {
            return Err(("spool.min_free_mb", "must be at most 1048576".into()));
        }
        if self.uplink.batch_max_records == 0 || self.uplink.batch_max_records > 10_000 {
            return Err((
                "uplink.batch_max_records",
                "must be between 1 and 10000".into(),
            ));
        }
        if self.uplink.flush_interval_ms == 0 || self.uplink.flush_interval_ms > 60_000 {
            return Err((
                "uplink.flush_interval_ms",
                "must be between 1 and 60000".into(),
            ));
        }
        if self.uplink.max_message_bytes < 64 * 1024
            || self.uplink.max_message_bytes > 64 * 1024 * 1024
        {
            return Err((
                "uplink.max_message_bytes",
                "must be between 65536 and 67108864".into(),
            ));
        }
        if !(1..=10_000_000).contains(&self.rules.correlation_max_groups) {
            return Err((
                "rules.correlation_max_groups",
                "must be between 1 and 10000000".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.rules.correlation_max_entries) {
            return Err((
                "rules.correlation_max_entries",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(64..=1024 * 1024).contains(&self.collect.ring_buffer_kb)
            || !self.collect.ring_buffer_kb.is_power_of_two()
        {
            return Err((
                "collect.ring_buffer_kb",
                "must be a power of two between 64 and 1048576".into(),
            ));
        }
        if self.privacy.redact.len() > 64 {
            return Err(("privacy.redact", "at most 64 patterns".into()));
        }
        if let Err(e) = vigil_redact::Redactor::with_rules(&self.privacy.patterns()) {
            return Err(("privacy.redact", e.to_string()));
        }
        if !(1..=10_000_000).contains(&self.collect.hash_cache_entries) {
            return Err((
                "collect.hash_cache_entries",
                "must be between 1 and 10000000".into(),
            ));
        }
        for (field, paths) in [
            ("collect.exclude_paths", &self.collect.exclude_paths),
            (
                "collect.exclude_executables",
                &self.collect.exclude_executables,
            ),
            (
                "collect.hash_written_under",
                &self.collect.hash_written_under,
            ),
        ] {
            if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
                return Err((field, format!("{} is not an absolute path", p.display())));
            }
        }
        if self.enrollment.token.is_some() && self.enrollment.token_file.is_some() {
            return Err(("enrollment", "set `token` or `token_file`, not both".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
data_dir = "/tmp/x"
[server]
endpoint = "https://127.0.0.1:4443"
ca_file = "/tmp/ca.pem"
"#;

    #[test]
    fn defaults_and_server_name() {
        let c = SensorConfig::parse(Path::new("s.toml"), OK).unwrap();
        assert_eq!(c.spool.capacity_mb, 512);
        assert_eq!(c.server().unwrap().server_name(), "127.0.0.1");
        assert!(c.collect.audit);
    }

    #[test]
    fn errors_name_the_field() {
        let e = SensorConfig::parse(Path::new("s.toml"), &OK.replace("https", "http")).unwrap_err();
        assert!(e.to_string().contains("server.endpoint"), "{e}");
        let e = SensorConfig::parse(
            Path::new("s.toml"),
            &format!("{OK}\n[spool]\ncapacity_mb = 0\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("spool.capacity_mb"), "{e}");
        let e =
            SensorConfig::parse(Path::new("s.toml"), &format!("{OK}\nbogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    /// The example installed as /etc/vigil/sensor.toml (deploy/sensor.toml).
    const EXAMPLE: &str = include_str!("../deploy/sensor.toml");

    #[test]
    fn deploy_example_parses_with_the_defaults() {
        let c = SensorConfig::parse(Path::new("deploy/sensor.toml"), EXAMPLE).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/vigil"));
        let server = c.server().unwrap();
        assert_eq!(server.ca_file, Path::new("/etc/vigil/ca.pem"));
        assert_eq!(server.server_name(), "vigil.example.internal");
        assert_eq!(
            c.enrollment.token_file.as_deref(),
            Some(Path::new("/etc/vigil/enroll.token"))
        );
        // Every value the example spells out is the default it claims to be.
        let d = CollectConfig::default();
        let col = &c.collect;
        assert_eq!(
            (col.ebpf, col.files, col.network, col.exclude_self),
            (d.ebpf, d.files, d.network, d.exclude_self)
        );
        assert_eq!(
            (col.audit, col.proc_connector, col.inventory),
            (d.audit, d.proc_connector, d.inventory)
        );
        assert_eq!(
            (col.ring_buffer_kb, col.hash_max_mb),
            (d.ring_buffer_kb, d.hash_max_mb)
        );
        assert!(col.exclude_paths.is_empty() && col.exclude_executables.is_empty());
        assert!(col.hash_written_under.is_empty());
        let (r, dr) = (&c.rules, RulesConfig::default());
        assert!(r.paths.is_empty());
        assert_eq!(
            (r.correlation_max_groups, r.correlation_max_entries),
            (dr.correlation_max_groups, dr.correlation_max_entries)
        );
        assert_eq!(c.spool.capacity_mb, SpoolConfig::default().capacity_mb);
        let (u, du) = (&c.uplink, UplinkConfig::default());
        assert_eq!(
            (
                u.batch_max_records,
                u.flush_interval_ms,
                u.max_message_bytes
            ),
            (
                du.batch_max_records,
                du.flush_interval_ms,
                du.max_message_bytes
            )
        );
    }

    /// Each `pub` field of a section's struct, as written in this file.
    fn pub_fields(section: &str) -> Vec<&'static str> {
        let src = include_str!("config.rs");
        let start = src
            .find(&format!("pub struct {section} {{"))
            .unwrap_or_else(|| panic!("struct {section} not found"));
        let body = &src[start..];
        let body = &body[..body.find("\n}").unwrap_or(body.len())];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
            .collect()
    }

    #[test]
    fn deploy_example_names_every_field() {
        for (section, header) in [
            ("SensorConfig", None),
            ("ServerConfig", Some("[server]")),
            ("EnrollmentConfig", Some("[enrollment]")),
            ("RulesConfig", Some("[rules]")),
            ("SpoolConfig", Some("[spool]")),
            ("UplinkConfig", Some("[uplink]")),
            ("CollectConfig", Some("[collect]")),
            ("PrivacyConfig", Some("[privacy]")),
        ] {
            let fields = pub_fields(section);
            assert!(!fields.is_empty(), "no fields found in {section}");
            // The section's text: from its header to the next one.
            let text = match header {
                None => &EXAMPLE[..EXAMPLE.find("\n[").unwrap()],
                Some(h) => {
                    let rest = &EXAMPLE[EXAMPLE.find(&format!("\n{h}\n")).unwrap() + 1..];
                    &rest[..rest[1..].find("\n[").map_or(rest.len(), |i| i + 1)]
                }
            };
            for f in fields {
                // A field is set (`name = `) or shown commented out (`# name = `);
                // for the top-level struct, sections count by their header.
                let shown = text.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim_start();
                    l.starts_with(&format!("{f} =")) || l == format!("[{f}]")
                }) || EXAMPLE.contains(&format!("\n[{f}]\n"));
                assert!(shown, "deploy/sensor.toml does not show {section}.{f}");
            }
        }
    }
}
