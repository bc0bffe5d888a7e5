//! Offline transfer, the device's side: `vigil-sensor export` writes the
//! records the spool holds into a bundle (the `vigil-bundle` crate) signed
//! with the device key and encrypted to the server's transfer key, which a
//! tenant admin imports with `vigil import`.
//!
//! The spool is read, never changed: records still leave it only when the
//! server acknowledges them over the live stream, and those a bundle already
//! carried are then acknowledged as re-sends. The sensor must be stopped: the
//! spool is opened read only ([`SpoolView`]), which redb refuses while a
//! sensor holds the file.

use crate::SensorError;
use crate::uplink::DeviceIdentity;
use std::path::{Path, PathBuf};
use vigil_bundle::{Builder, DeviceKey, Origin, TransferPublicKey};
use vigil_proto::v1::Record;
use vigil_spool::{SpoolError, SpoolView};

/// The server's transfer public key (PEM), in the data directory: saved at
/// enrollment, or copied from the server's `<data_dir>/pki/transfer.pub`.
pub const TRANSFER_KEY_FILE: &str = "transfer.pub";
/// The spool, in the data directory.
pub const SPOOL_FILE: &str = "spool.redb";
/// Records read from the spool at a time.
const PAGE_RECORDS: usize = 1_000;
const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Only records with a sequence number above this one.
    pub after: u64,
    /// The bundle's size at most (never more than `vigil_bundle::MAX_BUNDLE_BYTES`).
    pub max_bytes: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            after: 0,
            max_bytes: vigil_bundle::MAX_BUNDLE_BYTES,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub device_id: String,
    pub records: u32,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The bundle's size in bytes.
    pub bytes: usize,
    /// Spool records that do not decode (a disk can rot), left out as the
    /// uplink leaves them out.
    pub skipped: u64,
    /// The spool holds more records after `last_sequence` than one bundle
    /// takes: export again with `--after last_sequence`.
    pub more: bool,
}

/// Saves the transfer key the server sent at enrollment (an uncompressed SEC1
/// point). A server that sent none is older than offline transfer: the
/// sensor enrolls all the same.
pub(crate) fn save_transfer_key(dir: &Path, sec1: &[u8]) -> Result<(), SensorError> {
    if sec1.is_empty() {
        tracing::warn!(
            "The server gave no transfer key: offline export needs its pki/transfer.pub copied to the data directory"
        );
        return Ok(());
    }
    let pem = TransferPublicKey::from_sec1_bytes(sec1)
        .and_then(|k| k.to_pem())
        .map_err(|e| SensorError::Enroll(format!("the server's transfer key: {e}")))?;
    write_new_or_replace(&dir.join(TRANSFER_KEY_FILE), pem.as_bytes())
        .map_err(|e| SensorError::Io(format!("saving the server's transfer key: {e}")))
}

/// The server's transfer public key from the data directory.
pub fn load_transfer_key(dir: &Path) -> Result<TransferPublicKey, SensorError> {
    let path = dir.join(TRANSFER_KEY_FILE);
    let pem = match read_bounded(&path, 64 * 1024) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SensorError::Export(format!(
                "no server transfer key at {}: this sensor enrolled before the server handed it \
                 out. Enroll it again, or copy the server's <data_dir>/pki/transfer.pub there",
                path.display()
            )));
        }
        Err(e) => return Err(SensorError::Io(format!("{}: {e}", path.display()))),
    };
    TransferPublicKey::from_pem(&pem)
        .map_err(|e| SensorError::Export(format!("{}: {e}", path.display())))
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Writes `data` to `path` through a temporary file (mode 0600), synced.
fn write_new_or_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    write_new(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` (never overwrites it) with `data`, mode 0600, synced; a
/// failed write leaves no file behind.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Writes the spool's records after `opts.after` into a new bundle at `out`.
pub fn export(data_dir: &Path, out: &Path, opts: &ExportOptions) -> Result<Exported, SensorError> {
    let identity = DeviceIdentity::load(data_dir).ok_or_else(|| {
        SensorError::Export(format!(
            "{} holds no device identity: the sensor has not enrolled",
            data_dir.display()
        ))
    })?;
    let device = DeviceKey::from_pkcs8_pem(identity.key_pem())
        .map_err(|e| SensorError::Export(e.to_string()))?;
    let to = load_transfer_key(data_dir)?;
    let spool_path: PathBuf = data_dir.join(SPOOL_FILE);
    if !spool_path.exists() {
        return Err(SensorError::Export(format!(
            "there is no spool at {}: this sensor spooled nothing",
            spool_path.display()
        )));
    }
    let spool = SpoolView::open(&spool_path).map_err(|e| match e {
        SpoolError::InUse => SensorError::Export(format!(
            "{e}: the sensor is running; stop it (systemctl stop vigil-sensor) and export again"
        )),
        SpoolError::NeedsRepair => SensorError::Export(format!(
            "{e}: start the sensor and stop it again, then export"
        )),
        other => SensorError::Spool(other),
    })?;
    let mut bundle = Builder::with_limit(opts.max_bytes);
    let mut after = opts.after;
    let mut skipped = 0;
    let mut more = false;
    'pages: loop {
        let page = spool.read_after(after, PAGE_RECORDS, PAGE_BYTES)?;
        if page.is_empty() {
            break;
        }
        for (seq, bytes) in page {
            if <Record as prost::Message>::decode(bytes.as_slice()).is_err() {
                tracing::error!(seq, "Corrupt spool record left out of the bundle");
                skipped += 1;
                after = seq;
                continue;
            }
            let added = bundle
                .push(seq, &bytes)
                .map_err(|e| SensorError::Export(e.to_string()))?;
            if !added {
                more = true;
                break 'pages;
            }
            after = seq;
        }
    }
    let Some((first, last)) = bundle.range() else {
        return Err(SensorError::Export(format!(
            "the spool holds no records after sequence {}: nothing to export",
            opts.after
        )));
    };
    let records = bundle.len();
    let created_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let sealed = bundle
        .seal(
            &Origin {
                device_id: &identity.device_id,
                tenant_id: &identity.tenant_id,
                created_unix_ns,
            },
            &device,
            &to,
        )
        .map_err(|e| SensorError::Export(e.to_string()))?;
    write_new(out, &sealed).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            SensorError::Export(format!("{} exists: export to a new file", out.display()))
        }
        _ => SensorError::Io(format!("{}: {e}", out.display())),
    })?;
    tracing::info!(
        device = %identity.device_id,
        records,
        first,
        last,
        bytes = sealed.len(),
        "Bundle exported"
    );
    Ok(Exported {
        device_id: identity.device_id,
        records,
        first_sequence: first,
        last_sequence: last,
        bytes: sealed.len(),
        skipped,
        more,
    })
}
