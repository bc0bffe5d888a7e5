//! Entry point for the fuzz target (`fuzz/`, cargo-fuzz) and for the replay
//! of its corpus and regressions in `cargo test` (`tests/fuzz_regressions.rs`).
//! Not an API.

use crate::{DeviceKey, TransferKey, parse};
use std::sync::OnceLock;

/// A fixed device key, made for fuzzing and published here: it protects
/// nothing. Fixed so that the seed bundles (sealed with it) verify and open
/// in every run, and the fuzzer starts from the whole read path.
const DEVICE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9zmiKygO8TI9Uj3F
AShSWmAbmS4HkkKEVGRQKRERqzChRANCAATQhkAyTq1L0YyCNsOx/egddG4EhHnH
3ZoR6BaqxPKROQwfzuzBiUqYtDRU+lbK87WJ0bumlAMcDomIV6sEmuL/
-----END PRIVATE KEY-----
";

/// A fixed transfer key, as [`DEVICE_KEY`].
const TRANSFER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0093PfWsxcSTsah7
+6TA1WWgRcR4Cm0MHtzCYZLxIG6hRANCAAQb5hAOhoRgkl7Ho7Eg8nYaTpKdnD8h
v44vZ2f0W4Itp5CPZPxEy/Z2PxbksgjJtUnUIflcPzq5pvb5aINwv0J6
-----END PRIVATE KEY-----
";

/// The device key a bundle is verified with and the transfer key it is
/// opened with (fixed, see [`DEVICE_KEY`]).
#[allow(clippy::expect_used)]
pub fn keys() -> &'static (DeviceKey, TransferKey) {
    static KEYS: OnceLock<(DeviceKey, TransferKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            DeviceKey::from_pkcs8_pem(DEVICE_KEY).expect("the fuzzing device key parses"),
            TransferKey::from_pkcs8_pem(TRANSFER_KEY).expect("the fuzzing transfer key parses"),
        )
    })
}

/// A bundle of any bytes read as `vigil import` reads one: parse, verify
/// with the device's public key, open with the transfer key, every record.
pub fn bundle(data: &[u8]) {
    let (device, transfer) = keys();
    let Ok(sealed) = parse(data) else { return };
    let _ = sealed.header();
    let Ok(verified) = sealed.verify(&device.public_key()) else {
        return;
    };
    if let Ok(opened) = verified.open(transfer) {
        for (_, record) in opened.records() {
            assert!(record.len() <= data.len());
        }
    }
}
