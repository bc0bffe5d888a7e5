//! A spool file that rotted or was cut short (issue 16, item 3): the sensor
//! keeps what it can read, under the same sequence numbers, moves the damaged
//! file aside, says how much was lost, and hands out sequence numbers above
//! every one it handed out before. Nothing panics, whatever the bytes.

#![allow(clippy::unwrap_used)]

use vigil_spool::{Spool, SpoolError};

/// A spool of 10,000 records of ~220 bytes; the file's bytes.
fn made(p: &std::path::Path) -> Vec<u8> {
    let s = Spool::open(p, 1 << 30).unwrap();
    for _ in 0..20 {
        s.append(0..500u32, |seq, i| {
            let b = format!("record {seq} {i} {}", "x".repeat(200)).into_bytes();
            (b, vigil_spool::Priority::Bulk)
        })
        .unwrap();
    }
    drop(s);
    std::fs::read(p).unwrap()
}

#[test]
fn a_sound_spool_opens_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spool.redb");
    made(&p);
    let (s, recovery) = Spool::open_recovering(&p, 1 << 30).unwrap();
    assert_eq!(recovery, None);
    assert_eq!(s.stats().unwrap().records, 10_000);
    // A second opener while the sensor holds it: in use, nothing moved.
    assert!(matches!(
        Spool::open_recovering(&p, 1 << 30),
        Err(SpoolError::InUse)
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_damaged_spool_keeps_what_it_can_and_numbers_stay_above_the_old_ones() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("cut in half", |b| b.truncate(b.len() / 2)),
        ("last page cut", |b| b.truncate(b.len() - 4096)),
        ("8 KiB scribbled in the middle", |b| {
            let n = b.len() / 2;
            for x in &mut b[n..n + 8192] {
                *x ^= 0x5a;
            }
        }),
        ("header zeroed", |b| b[..4096].fill(0)),
        ("not a spool at all", |b| *b = vec![0x41; 100_000]),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.redb");
        let mut bytes = made(&p);
        damage(&mut bytes);
        std::fs::write(&p, &bytes).unwrap();
        let (s, recovery) = Spool::open_recovering(&p, 1 << 30).unwrap();
        let r = recovery.unwrap_or_else(|| panic!("{what}: not noticed"));
        assert!(r.moved_to.exists(), "{what}: the damaged file is kept");
        assert!(r.next_seq > 10_000, "{what}");
        // What was kept is what was written, under its own numbers.
        let kept = s.read_after(0, 100_000, usize::MAX).unwrap();
        assert_eq!(kept.len() as u64, r.kept, "{what}");
        for (seq, b) in &kept {
            let text = String::from_utf8_lossy(b);
            assert!(
                text.starts_with(&format!("record {seq} ")),
                "{what}: {text:.40}"
            );
        }
        if let Some(lost) = r.lost {
            assert_eq!(lost + r.kept, 10_000, "{what}");
        }
        // New records come after every old number, and survive a restart.
        s.append(0..3u32, |seq, _| {
            (seq.to_le_bytes().to_vec(), vigil_spool::Priority::Bulk)
        })
        .unwrap();
        drop(s);
        let (s, again) = Spool::open_recovering(&p, 1 << 30).unwrap();
        assert_eq!(again, None, "{what}: the new spool is sound");
        let all = s.read_after(0, 100_000, usize::MAX).unwrap();
        let new: Vec<u64> = all[all.len() - 3..].iter().map(|r| r.0).collect();
        assert_eq!(new, [r.next_seq, r.next_seq + 1, r.next_seq + 2], "{what}");
        eprintln!("{what}: kept {}, lost {:?} ({})", r.kept, r.lost, r.reason);
    }
}

/// A start that died while checking the spool (redb can abort the process on
/// some damaged files: a panic in a destructor while a panic unwinds, which
/// nothing in the process can catch) leaves its marker: the next start sets
/// the file aside unread and starts a sound spool numbered from the clock.
#[test]
fn a_spool_whose_check_stopped_the_process_is_set_aside_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spool.redb");
    made(&p);
    std::fs::write(dir.path().join("spool.redb.checking"), b"").unwrap();
    let (s, recovery) = Spool::open_recovering(&p, 1 << 30).unwrap();
    let r = recovery.expect("the file was set aside");
    assert!(r.reason.contains("stopped the sensor"), "{r:?}");
    assert_eq!((r.kept, r.lost), (0, None));
    assert!(r.moved_to.exists(), "kept for a person to look at");
    assert!(
        r.next_seq > 1_000_000_000_000_000_000,
        "numbered from the clock"
    );
    assert!(!dir.path().join("spool.redb.checking").exists());
    assert_eq!(s.stats().unwrap().records, 0);
    s.append(0..3u32, |_, _| {
        (b"new".to_vec(), vigil_spool::Priority::Bulk)
    })
    .unwrap();
    assert_eq!(s.read_after(0, 10, 1 << 20).unwrap()[0].0, r.next_seq);
    // A clean start leaves no marker behind.
    drop(s);
    let (_, again) = Spool::open_recovering(&p, 1 << 30).unwrap();
    assert_eq!(again, None);
    assert!(!dir.path().join("spool.redb.checking").exists());
}
