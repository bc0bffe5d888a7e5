#![allow(clippy::unwrap_used)]

use super::*;

struct Keys {
    device: DeviceKey,
    server: TransferKey,
}

fn keys() -> Keys {
    Keys {
        device: DeviceKey::generate(),
        server: TransferKey::generate(),
    }
}

const ORIGIN: Origin<'static> = Origin {
    device_id: "dev-1",
    tenant_id: "acme",
    created_unix_ns: 1_700_000_000_000_000_000,
};

/// Records as a spool holds them: arbitrary bytes, sequences with a gap.
fn records() -> Vec<(u64, Vec<u8>)> {
    vec![
        (5, b"\x08\x05\x10\x01first record".to_vec()),
        (6, Vec::new()),
        (9, vec![0xff; 300]),
    ]
}

fn bundle(k: &Keys) -> Vec<u8> {
    let mut b = Builder::new();
    for (seq, r) in records() {
        assert!(b.push(seq, &r).unwrap());
    }
    b.seal(&ORIGIN, &k.device, &k.server.public()).unwrap()
}

/// Every step the server takes, up to the records.
fn open(bytes: &[u8], k: &Keys) -> Result<Vec<(u64, Vec<u8>)>, BundleError> {
    let opened = parse(bytes)?
        .verify(&k.device.public_key())?
        .open(&k.server)?;
    Ok(opened.records().map(|(s, r)| (s, r.to_vec())).collect())
}

/// Signs `bytes` (without its old signature) again with the device key: the
/// bundle a device would make with these contents.
fn resign(bytes: &[u8], k: &Keys) -> Vec<u8> {
    let mut out = bytes[..bytes.len() - SIGNATURE_LEN].to_vec();
    let signature: Signature = k.device.signing().sign(&out);
    out.extend_from_slice(&signature.to_bytes());
    out
}

#[test]
fn a_bundle_round_trips_with_its_records_unchanged() {
    let k = keys();
    let bytes = bundle(&k);
    assert_eq!(open(&bytes, &k).unwrap(), records());
    let sealed = parse(&bytes).unwrap();
    let h = sealed.header().clone();
    assert_eq!(
        (h.device_id.as_str(), h.tenant_id.as_str()),
        ("dev-1", "acme")
    );
    assert_eq!(h.created_unix_ns, ORIGIN.created_unix_ns);
    assert_eq!(
        (h.first_sequence, h.last_sequence, h.record_count),
        (5, 9, 3)
    );
    assert_eq!(h.recipient_key_id, k.server.public().key_id());
    let opened = sealed
        .verify(&k.device.public_key())
        .unwrap()
        .open(&k.server)
        .unwrap();
    assert_eq!(opened.header(), &h);
    let (_, plain, ranges) = opened.into_parts();
    assert_eq!(ranges[2].0, 9);
    assert_eq!(&plain[ranges[2].1.clone()], &[0xff; 300][..]);
}

#[test]
fn the_records_are_not_in_the_clear() {
    let k = keys();
    let bytes = bundle(&k);
    assert!(!bytes.windows(12).any(|w| w == b"first record"));
    // Two bundles of the same records differ: a fresh ephemeral key each time.
    assert_ne!(bytes, bundle(&k));
}

#[test]
fn every_single_flipped_byte_is_refused() {
    let k = keys();
    let bytes = bundle(&k);
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = bytes.clone();
            t[i] ^= mask;
            let e = open(&t, &k);
            assert!(e.is_err(), "byte {i} ^ {mask:#04x} was accepted");
        }
    }
}

#[test]
fn flipped_bytes_are_refused_naming_why() {
    let k = keys();
    let bytes = bundle(&k);
    let flip = |i: usize| {
        let mut t = bytes.clone();
        t[i] ^= 1;
        open(&t, &k).unwrap_err()
    };
    assert_eq!(flip(0), BundleError::BadMagic);
    assert_eq!(flip(9), BundleError::UnsupportedVersion(0));
    // The header's created time: only the signature notices.
    let created = PREFIX_LEN + 1 + 5 + 1 + 4;
    assert!(matches!(flip(created), BundleError::BadSignature { device } if device == "dev-1"));
    // The ciphertext and the signature.
    assert!(matches!(
        flip(bytes.len() - 100),
        BundleError::BadSignature { .. }
    ));
    assert!(matches!(
        flip(bytes.len() - 1),
        BundleError::BadSignature { .. }
    ));
    // A device id byte turned into one the alphabet refuses.
    assert!(matches!(
        flip(PREFIX_LEN + 4),
        BundleError::MalformedHeader(_)
    ));
}

#[test]
fn a_bundle_signed_by_another_device_is_refused() {
    let k = keys();
    let bytes = bundle(&k);
    let other = DeviceKey::generate();
    let e = parse(&bytes)
        .unwrap()
        .verify(&other.public_key())
        .unwrap_err();
    assert_eq!(
        e,
        BundleError::BadSignature {
            device: "dev-1".into()
        }
    );
    assert!(
        e.to_string()
            .contains("signature does not verify for device dev-1")
    );
    // A key on record that is not a point at all.
    assert!(matches!(
        parse(&bytes).unwrap().verify(&[4; 65]),
        Err(BundleError::Key(_))
    ));
}

#[test]
fn a_bundle_for_another_server_is_refused_before_decryption() {
    let k = keys();
    let bytes = bundle(&k);
    let other = TransferKey::generate();
    let e = parse(&bytes)
        .unwrap()
        .verify(&k.device.public_key())
        .unwrap()
        .open(&other)
        .unwrap_err();
    assert!(matches!(e, BundleError::WrongRecipient { .. }), "{e}");
    assert!(e.to_string().contains(&hex(&k.server.public().key_id())));
}

#[test]
fn a_changed_ciphertext_signed_again_by_the_device_fails_decryption() {
    let k = keys();
    let mut bytes = bundle(&k);
    let i = bytes.len() - SIGNATURE_LEN - 20;
    bytes[i] ^= 1;
    let bytes = resign(&bytes, &k);
    assert_eq!(open(&bytes, &k).unwrap_err(), BundleError::DecryptionFailed);
}

#[test]
fn every_truncation_is_refused() {
    let k = keys();
    let bytes = bundle(&k);
    for n in 0..bytes.len() {
        let e = open(&bytes[..n], &k).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Truncated(_) | BundleError::MalformedHeader(_) | BundleError::BadMagic
            ),
            "{n} bytes: {e}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        open(&longer, &k).unwrap_err(),
        BundleError::TrailingBytes(1)
    );
}

#[test]
fn the_size_bound_is_checked_before_anything_else() {
    let k = keys();
    let mut bytes = bundle(&k);
    bytes.resize(MAX_BUNDLE_BYTES, 0);
    assert!(matches!(parse(&bytes), Err(BundleError::TrailingBytes(_))));
    bytes.push(0);
    assert_eq!(
        parse(&bytes).unwrap_err(),
        BundleError::TooLarge {
            size: MAX_BUNDLE_BYTES + 1,
            max: MAX_BUNDLE_BYTES
        }
    );
}

/// A bundle with the given plaintext, correctly encrypted and signed.
fn with_plain(plain: &[u8], range: (u64, u64, u32), k: &Keys) -> Vec<u8> {
    seal_plain(plain, range, &ORIGIN, &k.device, &k.server.public()).unwrap()
}

fn frame(seq: u64, len: u32, body: &[u8]) -> Vec<u8> {
    [&seq.to_be_bytes()[..], &len.to_be_bytes(), body].concat()
}

#[test]
fn malformed_records_of_a_signed_bundle_are_named() {
    let k = keys();
    let two = [frame(1, 1, b"a"), frame(1, 1, b"b")].concat();
    let e = open(&with_plain(&two, (1, 2, 2), &k), &k).unwrap_err();
    assert!(
        matches!(&e, BundleError::MalformedRecord { index: 2, reason } if reason.contains("strictly increasing")),
        "{e}"
    );
    let short = [frame(1, 1, b"a"), frame(2, 9, b"b")].concat();
    let e = open(&with_plain(&short, (1, 2, 2), &k), &k).unwrap_err();
    assert!(
        matches!(e, BundleError::MalformedRecord { index: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().starts_with("malformed record 2: "));
    let cut = [frame(1, 1, b"a"), vec![0, 0, 0]].concat();
    let e = open(&with_plain(&cut, (1, 2, 2), &k), &k).unwrap_err();
    assert!(
        matches!(e, BundleError::MalformedRecord { index: 2, .. }),
        "{e}"
    );
    let huge = frame(1, MAX_RECORD_BYTES as u32 + 1, b"");
    let e = open(&with_plain(&huge, (1, 1, 1), &k), &k).unwrap_err();
    assert!(
        matches!(e, BundleError::MalformedRecord { index: 1, .. }),
        "{e}"
    );
    // Well-formed records the header does not describe.
    let one = frame(3, 1, b"a");
    for range in [(1, 3, 1), (3, 4, 1), (3, 4, 2)] {
        let e = open(&with_plain(&one, range, &k), &k).unwrap_err();
        assert!(
            matches!(e, BundleError::HeaderMismatch(_)),
            "{range:?}: {e}"
        );
    }
    let e = open(
        &with_plain(&[one.clone(), frame(4, 0, b"")].concat(), (3, 3, 1), &k),
        &k,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::HeaderMismatch(_)), "{e}");
}

#[test]
fn headers_that_cannot_be_true_are_refused() {
    let k = keys();
    for range in [
        (0, 1, 1),
        (5, 4, 1),
        (1, 2, 3),
        (1, 1, 0),
        (1, u64::MAX, MAX_RECORDS + 1),
    ] {
        let e = open(&with_plain(&frame(1, 0, b""), range, &k), &k).unwrap_err();
        assert!(
            matches!(e, BundleError::MalformedHeader(_)),
            "{range:?}: {e}"
        );
    }
}

#[test]
fn the_builder_keeps_order_and_its_size_limit() {
    let mut b = Builder::with_limit(OVERHEAD + MAX_HEADER_BYTES + 2 * (FRAME_LEN + 10));
    assert!(b.is_empty());
    assert_eq!(
        b.push(0, b"x"),
        Err(BundleError::OutOfOrder { seq: 0, last: 0 })
    );
    assert!(b.push(3, &[1; 10]).unwrap());
    assert_eq!(
        b.push(3, b"x"),
        Err(BundleError::OutOfOrder { seq: 3, last: 3 })
    );
    assert!(b.push(4, &[2; 10]).unwrap());
    // Full: the record waits for the next bundle.
    assert!(!b.push(5, &[3; 10]).unwrap());
    assert_eq!((b.len(), b.range()), (2, Some((3, 4))));
    // One record that could never fit is an error, not "full".
    assert!(matches!(
        b.push(6, &[0; 100]),
        Err(BundleError::RecordTooLarge { seq: 6, len: 100 })
    ));
    assert!(matches!(
        Builder::new().push(1, &vec![0; MAX_RECORD_BYTES + 1]),
        Err(BundleError::RecordTooLarge { .. })
    ));
    let k = keys();
    let bytes = b.seal(&ORIGIN, &k.device, &k.server.public()).unwrap();
    assert!(bytes.len() <= OVERHEAD + MAX_HEADER_BYTES + 2 * (FRAME_LEN + 10));
    assert_eq!(open(&bytes, &k).unwrap().len(), 2);
    assert_eq!(
        Builder::new()
            .seal(&ORIGIN, &k.device, &k.server.public())
            .unwrap_err(),
        BundleError::Empty
    );
    let mut b = Builder::new();
    b.push(1, b"x").unwrap();
    let bad = Origin {
        device_id: "a/b",
        ..ORIGIN
    };
    assert!(matches!(
        b.seal(&bad, &k.device, &k.server.public()),
        Err(BundleError::MalformedHeader(_))
    ));
}

#[test]
fn keys_load_from_the_pem_the_pki_writes() {
    // The device key exactly as enrollment makes it (rcgen, PKCS#8).
    let (key_pem, _csr) = vigil_pki::device_key_and_csr("host").unwrap();
    let device = DeviceKey::from_pkcs8_pem(&key_pem).unwrap();
    assert_eq!(device.public_key().len(), PUBLIC_KEY_LEN);
    assert!(DeviceKey::from_pkcs8_pem("not a key").is_err());

    let server = TransferKey::generate();
    let again = TransferKey::from_pkcs8_pem(&server.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(again.public(), server.public());
    let public = server.public();
    assert_eq!(
        TransferPublicKey::from_pem(&public.to_pem().unwrap()).unwrap(),
        public
    );
    assert_eq!(
        TransferPublicKey::from_sec1_bytes(&public.to_sec1_bytes()).unwrap(),
        public
    );
    assert!(TransferPublicKey::from_sec1_bytes(&[1, 2, 3]).is_err());
    assert!(!format!("{server:?}").contains("PRIVATE"));

    let k = Keys { device, server };
    let mut b = Builder::new();
    b.push(1, b"r").unwrap();
    let bytes = b.seal(&ORIGIN, &k.device, &k.server.public()).unwrap();
    assert_eq!(open(&bytes, &k).unwrap(), vec![(1, b"r".to_vec())]);
}
