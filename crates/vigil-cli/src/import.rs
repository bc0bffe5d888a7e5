//! `vigil import FILE`: an offline bundle (`vigil-sensor export`) sent to the
//! server's Transfer service (tenant admin), which verifies it, decrypts it
//! and stores its records exactly once: what it already held of the device
//! counts as duplicates.

use crate::client::{Api, rpc};
use crate::display::{fields, print};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;
use vigil_bundle::MAX_BUNDLE_BYTES;
use vigil_proto::v1::{ImportBundleRequest, ImportBundleResponse};

pub async fn run(api: &Api, file: &Path, allow_gap: bool, json: bool) -> Result<()> {
    let bundle = read(file)?;
    let r = api
        .transfer()
        .import_bundle(ImportBundleRequest { bundle, allow_gap })
        .await
        .map_err(rpc)
        .with_context(|| format!("importing {}", file.display()))?
        .into_inner();
    if json {
        out!("{}", to_json(&r));
    } else {
        print(&fields(&summary(&r)))?;
    }
    Ok(())
}

/// The file, refused before it is read when no bundle can be that large.
fn read(file: &Path) -> Result<Vec<u8>> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > MAX_BUNDLE_BYTES as u64 {
        bail!(
            "{} is {size} bytes, more than a bundle may be ({MAX_BUNDLE_BYTES} bytes)",
            file.display()
        );
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn summary(r: &ImportBundleResponse) -> Vec<(&'static str, String)> {
    vec![
        ("Device", r.device_id.clone()),
        (
            "Records",
            format!(
                "{} (sequences {} to {})",
                r.records, r.first_sequence, r.last_sequence
            ),
        ),
        ("Accepted", r.accepted.to_string()),
        ("Duplicates", r.duplicates.to_string()),
        ("Stored through", r.stored_through.to_string()),
    ]
}

fn to_json(r: &ImportBundleResponse) -> Value {
    json!({
        "device_id": r.device_id,
        "records": r.records,
        "first_sequence": r.first_sequence,
        "last_sequence": r.last_sequence,
        "accepted": r.accepted,
        "duplicates": r.duplicates,
        "stored_through": r.stored_through,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn response() -> ImportBundleResponse {
        ImportBundleResponse {
            device_id: "d1".into(),
            records: 3,
            first_sequence: 5,
            last_sequence: 7,
            accepted: 1,
            duplicates: 2,
            stored_through: 7,
        }
    }

    #[test]
    fn the_outcome_reads_as_accepted_and_duplicates() {
        let lines = fields(&summary(&response()));
        assert!(
            lines.contains(&"Records         3 (sequences 5 to 7)".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&"Accepted        1".to_owned()), "{lines:?}");
        assert!(lines.contains(&"Duplicates      2".to_owned()), "{lines:?}");
        let j = to_json(&response());
        assert_eq!(
            (j["accepted"].as_u64(), j["duplicates"].as_u64()),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn a_file_no_bundle_can_be_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("absent")).is_err());
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_BUNDLE_BYTES as u64 + 1)
            .unwrap();
        let e = read(&big).unwrap_err().to_string();
        assert!(e.contains("more than a bundle may be"), "{e}");
    }
}
