//! The crate's tests: every error by name, the cache across reopen and at its
//! bound, and the budget on a manual clock.

use crate::budget::Bucket;
use crate::read::{self, CHUNK};
use crate::*;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const ABC_BLAKE3: &str = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";

/// Caches what it hashes at once (no racy window: test files are all new).
fn config() -> HashConfig {
    HashConfig {
        racy_window: Duration::ZERO,
        ..HashConfig::default()
    }
}

fn hasher() -> FileHasher {
    FileHasher::new(config(), Some(HashCache::in_memory(100)))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn err(r: Result<FileHashes, HashError>) -> &'static str {
    match r {
        Ok(h) => panic!("expected an error, got {h:?}"),
        Err(e) => e.as_str(),
    }
}

fn key(i: u64) -> FileKey {
    FileKey {
        dev: 1,
        ino: i,
        size: 3,
        mtime_ns: 0,
        ctime_ns: 0,
    }
}

fn digests(b: u8) -> Digests {
    Digests {
        blake3: Some([b; 32]),
        sha256: Some([b; 32]),
    }
}

#[test]
fn abc_matches_reference_vectors_and_converts_to_proto() {
    let dir = tempfile::tempdir().unwrap();
    let h = hasher().try_hash(&write(dir.path(), "f", b"abc")).unwrap();
    assert_eq!(hex::encode(h.digests.sha256.unwrap()), ABC_SHA256);
    assert_eq!(hex::encode(h.digests.blake3.unwrap()), ABC_BLAKE3);
    let p = to_proto(&Ok(h));
    assert_eq!(
        (hex::encode(&p.sha256), p.error.as_str()),
        (ABC_SHA256.into(), "")
    );
    let p = to_proto(&Err(HashError::Vanished));
    assert_eq!((p.blake3.len(), p.error.as_str()), (0, "vanished"));
}

#[test]
fn digest_selection_and_empty_and_multi_chunk_files() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
    for (name, data) in [("empty", &b""[..]), ("big", &big[..])] {
        let p = write(dir.path(), name, data);
        let both = hasher().try_hash(&p).unwrap().digests;
        assert_eq!(both.blake3, Some(*blake3::hash(data).as_bytes()));
        use sha2::Digest;
        assert_eq!(both.sha256, Some(sha2::Sha256::digest(data).into()));
        for (algorithms, want) in [
            (Algorithms::Blake3Only, (true, false)),
            (Algorithms::Sha256Only, (false, true)),
        ] {
            let h = FileHasher::new(
                HashConfig {
                    algorithms,
                    ..config()
                },
                None,
            );
            let d = h.try_hash(&p).unwrap().digests;
            assert_eq!((d.blake3.is_some(), d.sha256.is_some()), want);
            assert!(d.blake3.is_none() || d.blake3 == both.blake3);
            assert!(d.sha256.is_none() || d.sha256 == both.sha256);
        }
    }
}

#[test]
fn non_utf8_names_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bad\xff\xfename"));
    std::fs::write(&p, b"abc").unwrap();
    let h = hasher().try_hash(&p).unwrap();
    assert_eq!(hex::encode(h.digests.sha256.unwrap()), ABC_SHA256);
}

/// Runs `f` on another thread and fails if it has not returned within 5 s.
fn must_not_block<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(5))
        .expect("blocked on a FIFO")
}

#[test]
fn fifo_is_refused_without_blocking_even_when_swapped_in_after_the_stat() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let p = fifo.clone();
    assert_eq!(
        must_not_block(move || err(hasher().try_hash(&p))),
        "not_a_regular_file"
    );
    // The race: the path was a regular file at the stat, a FIFO at the open.
    let regular = std::fs::metadata(write(dir.path(), "r", b"x")).unwrap();
    let r = must_not_block(move || read::open_regular(&fifo, regular.dev()).map(|_| ()));
    assert_eq!(r.unwrap_err().as_str(), "not_a_regular_file");
}

#[test]
fn the_path_stat_gives_the_key_std_metadata_gives() {
    // Lookups use the key from `fstatat` on the path; entries are stored under
    // the key from std's `fstat` of the open file. They must agree field for field.
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "f", b"some bytes");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    let want = FileKey::from_metadata(&std::fs::metadata(&p).unwrap());
    assert_eq!(read::stat_regular(&p).unwrap(), want);
    assert_eq!(read::stat_regular(&link).unwrap(), want);
    let (file, before) = read::open_regular(&p, want.dev).unwrap();
    assert_eq!(FileKey::from_metadata(&before), want);
    assert_eq!(FileKey::from_metadata(&file.metadata().unwrap()), want);
}

#[test]
fn devices_sockets_and_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let h = hasher();
    for p in [
        Path::new("/dev/null"),
        Path::new("/dev/zero"),
        &sock,
        dir.path(),
    ] {
        assert_eq!(err(h.try_hash(p)), "not_a_regular_file", "{}", p.display());
    }
    assert_eq!(h.stats().bytes_read, 0);
}

#[test]
fn proc_and_sys_are_refused_by_path_and_by_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let h = hasher();
    for p in [
        "/proc/self/status",
        "/proc/version",
        "/sys/kernel/uevent_seqnum",
    ] {
        assert_eq!(err(h.try_hash(Path::new(p))), "excluded_path", "{p}");
    }
    // Other spellings reach procfs too; the filesystem check catches them.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/proc/self/status", &link).unwrap();
    for p in [
        link.as_path(),
        Path::new("//proc/version"),
        Path::new("/./proc/version"),
    ] {
        assert_eq!(err(h.try_hash(p)), "excluded_path", "{}", p.display());
    }
    assert_eq!(h.stats().bytes_read, 0);
    assert!(read::is_excluded_path(Path::new("/sys")));
    assert!(!read::is_excluded_path(Path::new("/procfs/x")));
    assert!(!read::is_excluded_path(Path::new("/system/x")));
}

#[test]
fn missing_file_has_vanished() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(err(hasher().try_hash(&dir.path().join("gone"))), "vanished");
}

/// A hasher whose `hook` runs once, after the first chunk of the first read.
fn with_hook(hook: impl Fn() + Send + Sync + 'static) -> FileHasher {
    let mut h = FileHasher::new(config(), Some(HashCache::in_memory(100)));
    let done = AtomicBool::new(false);
    h.set_chunk_hook(move |_| {
        if !done.swap(true, Ordering::SeqCst) {
            hook();
        }
    });
    h
}

#[test]
fn unlinked_while_hashed_has_vanished() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "f", &vec![7u8; CHUNK * 2]);
    let q = p.clone();
    let h = with_hook(move || std::fs::remove_file(&q).unwrap());
    assert_eq!(err(h.try_hash(&p)), "vanished");
}

#[test]
fn grown_while_hashed_is_changed_and_not_cached() {
    for size in [10, CHUNK * 2] {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "f", &vec![1u8; size]);
        let q = p.clone();
        let h = with_hook(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&q).unwrap();
            f.write_all(b"more").unwrap();
        });
        assert_eq!(err(h.try_hash(&p)), "changed_during_hash", "size {size}");
        assert!(h.cache().unwrap().is_empty());
        // Once it holds still, it hashes.
        assert!(!h.try_hash(&p).unwrap().from_cache);
    }
}

#[test]
fn rewritten_in_place_while_hashed_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "f", &vec![1u8; CHUNK * 2]);
    let q = p.clone();
    let h = with_hook(move || {
        // Same size; the new mtime is set explicitly so the test does not
        // depend on the timestamp tick.
        let f = std::fs::OpenOptions::new().write(true).open(&q).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH))
            .unwrap();
    });
    assert_eq!(err(h.try_hash(&p)), "changed_during_hash");
}

#[test]
fn size_limit_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let h = FileHasher::new(
        HashConfig {
            max_file_bytes: 10,
            ..config()
        },
        None,
    );
    assert!(h.try_hash(&write(dir.path(), "a", &[0; 9])).is_ok());
    assert!(h.try_hash(&write(dir.path(), "b", &[0; 10])).is_ok());
    match h.try_hash(&write(dir.path(), "c", &[0; 11])) {
        Err(HashError::TooLarge {
            size: 11,
            limit: 10,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(h.stats().bytes_read, 19);
}

#[test]
fn cache_survives_reopen_and_serves_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hashes.redb");
    let f = write(dir.path(), "f", b"abc");
    let first = {
        let (cache, opened) = HashCache::open(&db, 100).unwrap();
        assert_eq!(opened, CacheOpened::default());
        let h = FileHasher::new(config(), Some(cache));
        let r = h.try_hash(&f).unwrap();
        assert_eq!((r.from_cache, h.stats().bytes_read), (false, 3));
        r
    };
    let (cache, opened) = HashCache::open(&db, 100).unwrap();
    assert_eq!((opened.entries, opened.recreated), (1, None));
    let h = FileHasher::new(config(), Some(cache));
    let again = h.try_hash(&f).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.digests, first.digests);
    let s = h.stats();
    assert_eq!((s.bytes_read, s.cache_hits, s.files_hashed), (0, 1, 0));
    // The same answer without an open, by path or by metadata.
    assert_eq!(h.lookup_path(&f).unwrap().unwrap().digests, first.digests);
    let key = FileKey::from_metadata(&std::fs::metadata(&f).unwrap());
    assert_eq!(h.lookup(&key).unwrap().digests, first.digests);
}

#[test]
fn cache_misses_when_size_or_mtime_changes() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "f", b"abc");
    let h = hasher();
    let abc = h.try_hash(&f).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH))
        .unwrap();
    let touched = h.try_hash(&f).unwrap();
    assert!(!touched.from_cache);
    assert_eq!(touched.digests, abc.digests);
    std::fs::write(&f, b"abcd").unwrap();
    let grown = h.try_hash(&f).unwrap();
    assert!(!grown.from_cache);
    assert_ne!(grown.digests, abc.digests);
    assert_eq!(h.stats().bytes_read, 3 + 3 + 4);
}

#[test]
fn freshly_changed_files_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "f", b"abc");
    let h = FileHasher::new(HashConfig::default(), Some(HashCache::in_memory(10)));
    assert!(!h.try_hash(&f).unwrap().from_cache);
    assert!(!h.try_hash(&f).unwrap().from_cache);
    assert!(h.cache().unwrap().is_empty());
}

#[test]
fn partial_digests_do_not_answer_for_both() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "f", b"abc");
    let cache = HashCache::in_memory(10);
    let key = FileKey::from_metadata(&std::fs::metadata(&f).unwrap());
    cache.insert(
        key,
        Digests {
            blake3: Some([1; 32]),
            sha256: None,
        },
    );
    assert!(cache.get(&key, Algorithms::Blake3Only).is_some());
    assert!(cache.get(&key, Algorithms::Both).is_none());
    let h = FileHasher::new(config(), Some(cache));
    assert!(!h.try_hash(&f).unwrap().from_cache);
    assert!(h.try_hash(&f).unwrap().from_cache);
}

#[test]
fn garbage_cache_file_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hashes.redb");
    for garbage in [vec![0xA5u8; 64 * 1024], b"not a database".to_vec(), vec![]] {
        std::fs::write(&db, &garbage).unwrap();
        let (cache, opened) = HashCache::open(&db, 10).unwrap();
        assert!(
            opened.recreated.is_some() || garbage.is_empty(),
            "{opened:?}"
        );
        cache.insert(key(1), digests(1));
        drop(cache);
        let (cache, opened) = HashCache::open(&db, 10).unwrap();
        assert_eq!((opened.entries, opened.recreated), (1, None));
        assert_eq!(cache.get(&key(1), Algorithms::Both), Some(digests(1)));
    }
}

#[test]
fn truncated_or_scribbled_cache_file_opens_without_panic_and_serves_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.redb");
    {
        let (cache, _) = HashCache::open(&good, 1000).unwrap();
        for i in 0..500 {
            cache.insert(key(i), digests(i as u8));
        }
    }
    let bytes = std::fs::read(&good).unwrap();
    let mut scribbled = bytes.clone();
    for b in scribbled.iter_mut().skip(4096).step_by(7) {
        *b ^= 0x5A;
    }
    let cases = [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header only", bytes[..4096.min(bytes.len())].to_vec()),
        ("scribbled", scribbled),
    ];
    for (name, data) in cases {
        let db = dir.path().join(format!("{}.redb", name.replace(' ', "_")));
        std::fs::write(&db, &data).unwrap();
        let (cache, opened) = HashCache::open(&db, 1000).unwrap();
        for i in 0..500 {
            if let Some(d) = cache.get(&key(i), Algorithms::Both) {
                assert_eq!(d, digests(i as u8), "{name}: entry {i}");
            }
        }
        assert!(
            opened.recreated.is_some() || opened.entries > 0,
            "{name}: {opened:?}"
        );
    }
}

#[test]
fn damaged_entries_are_discarded_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hashes.redb");
    {
        let (cache, _) = HashCache::open(&db, 10).unwrap();
        cache.insert(key(1), digests(1));
        cache.insert(key(2), digests(2));
    }
    {
        // Flip one digest byte of entry 2 behind the cache's back.
        use redb::ReadableTable;
        let db = redb::Database::create(&db).unwrap();
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("entries");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(table).unwrap();
            let k = key(2).to_bytes();
            let mut v = t.get(k.as_slice()).unwrap().unwrap().value().to_vec();
            v[20] ^= 1;
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let (cache, opened) = HashCache::open(&db, 10).unwrap();
    assert_eq!((opened.entries, opened.discarded), (1, 1));
    assert_eq!(cache.get(&key(1), Algorithms::Both), Some(digests(1)));
    assert_eq!(cache.get(&key(2), Algorithms::Both), None);
}

#[test]
fn cache_in_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = HashCache::open(&dir.path().join("no/such.redb"), 10);
    assert!(matches!(r, Err(CacheError::Db { .. })), "{r:?}");
}

#[test]
fn cache_in_use_by_another_opener_is_an_error_not_a_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hashes.redb");
    let (first, _) = HashCache::open(&db, 10).unwrap();
    first.insert(key(1), digests(1));
    first.flush().unwrap();
    assert!(matches!(
        HashCache::open(&db, 10),
        Err(CacheError::InUse { .. })
    ));
    drop(first);
    assert_eq!(HashCache::open(&db, 10).unwrap().1.entries, 1);
}

#[test]
fn bound_evicts_oldest_at_the_edge() {
    const LIMIT: usize = 4;
    for n in [LIMIT - 1, LIMIT, LIMIT + 1] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hashes.redb");
        let (cache, _) = HashCache::open(&db, LIMIT).unwrap();
        for i in 0..n as u64 {
            cache.insert(key(i), digests(i as u8));
        }
        let evicted = n.saturating_sub(LIMIT);
        assert_eq!(
            (cache.len(), cache.stats().evicted),
            (n.min(LIMIT), evicted as u64)
        );
        assert_eq!(
            cache.get(&key(0), Algorithms::Both).is_some(),
            evicted == 0,
            "n={n}"
        );
        assert!(cache.get(&key(n as u64 - 1), Algorithms::Both).is_some());
        drop(cache);
        let (cache, opened) = HashCache::open(&db, LIMIT).unwrap();
        assert_eq!((opened.entries, opened.discarded), (n.min(LIMIT), 0));
        assert_eq!(cache.get(&key(0), Algorithms::Both).is_some(), evicted == 0);
        // Reopened with a smaller bound, the oldest go.
        drop(cache);
        let (cache, opened) = HashCache::open(&db, LIMIT - 2).unwrap();
        assert_eq!(cache.len(), LIMIT - 2);
        assert_eq!(opened.discarded as usize, n.min(LIMIT) - (LIMIT - 2));
        assert!(cache.get(&key(n as u64 - 1), Algorithms::Both).is_some());
    }
}

#[test]
fn a_hit_on_an_aged_entry_saves_it_from_eviction() {
    let cache = HashCache::in_memory(4);
    for i in 0..4 {
        cache.insert(key(i), digests(0));
    }
    // key(0) is older than half the bound: the hit refreshes it.
    assert!(cache.get(&key(0), Algorithms::Both).is_some());
    cache.insert(key(4), digests(0));
    assert!(cache.get(&key(0), Algorithms::Both).is_some());
    assert!(cache.get(&key(1), Algorithms::Both).is_none());
}

#[test]
fn batches_are_written_as_entries_accumulate_and_fsynced_one_in_sixteen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hashes.redb");
    let (cache, _) = HashCache::open(&db, 100).unwrap();
    let cache = cache.with_flush_every(1);
    // What a crash right now would leave: a copy of the file, opened apart.
    let after_crash = |n: u32| {
        let copy = dir.path().join(format!("copy{n}.redb"));
        std::fs::copy(&db, &copy).unwrap();
        HashCache::open(&copy, 100).unwrap().1.entries
    };
    for i in 0..15 {
        cache.insert(key(i), digests(0));
    }
    // Fifteen batches committed without fsync: lost to a crash, file intact.
    assert_eq!(after_crash(1), 0);
    cache.insert(key(15), digests(0));
    assert_eq!(after_crash(2), 16);
    cache.insert(key(16), digests(0));
    assert_eq!(after_crash(3), 16);
    cache.flush().unwrap();
    assert_eq!(after_crash(4), 17);
    // A crash without a final flush keeps what was synced.
    cache.insert(key(17), digests(0));
    std::mem::forget(cache);
    assert_eq!(after_crash(5), 17);
}

fn budget(bytes_per_sec: u64, burst_bytes: u64) -> HashConfig {
    HashConfig {
        read_budget: Some(ReadBudget {
            bytes_per_sec,
            burst_bytes,
        }),
        ..config()
    }
}

#[test]
fn try_hash_defers_when_the_budget_is_spent_and_never_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let h = FileHasher::with_clock(
        budget(1000, 1000),
        Some(HashCache::in_memory(10)),
        clock.clone(),
    );
    let a = write(dir.path(), "a", &[1; 600]);
    let b = write(dir.path(), "b", &[2; 600]);
    h.try_hash(&a).unwrap();
    // 400 tokens left, 600 wanted: 200 bytes at 1000 B/s.
    match h.try_hash(&b) {
        Err(HashError::BudgetExceeded { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
    // A cache hit costs no budget.
    assert!(h.try_hash(&a).unwrap().from_cache);
    clock.advance(Duration::from_millis(199));
    assert_eq!(err(h.try_hash(&b)), "budget_exceeded");
    clock.advance(Duration::from_millis(1));
    h.try_hash(&b).unwrap();
    assert_eq!(clock.slept(), Duration::ZERO);
    let s = h.stats();
    assert_eq!(
        (s.files_hashed, s.deferred, s.cache_hits, s.failed),
        (2, 2, 1, 0)
    );
}

#[test]
fn a_file_larger_than_the_burst_is_admitted_on_a_full_bucket_then_repaid() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let h = FileHasher::with_clock(budget(1000, 1000), None, clock.clone());
    let big = write(dir.path(), "big", &[1; 5000]);
    let small = write(dir.path(), "small", &[1; 10]);
    h.try_hash(&big).unwrap();
    // 4000 bytes of debt plus 10 wanted.
    match h.try_hash(&small) {
        Err(HashError::BudgetExceeded { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(4010));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hash_blocking_sleeps_for_the_budget_and_paces_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let h = FileHasher::with_clock(budget(1000, 1000), None, clock.clone());
    let f = write(dir.path(), "f", &[1; 3000]);
    // Full bucket: admitted at once; the 3000-byte chunk leaves 2000 of debt,
    // repaid (2 s) before the call returns.
    h.hash_blocking(&f).unwrap();
    assert_eq!(clock.slept(), Duration::from_secs(2));
    // Empty bucket now: the next file waits 1 s for admission, then 2 s.
    h.hash_blocking(&f).unwrap();
    assert_eq!(clock.slept(), Duration::from_secs(5));
    assert_eq!(h.stats().deferred, 0);
}

#[test]
fn bucket_refills_exactly_and_caps_at_burst() {
    let mut b = Bucket::new(
        ReadBudget {
            bytes_per_sec: 3,
            burst_bytes: 10,
        },
        Duration::ZERO,
    );
    b.charge(10, Duration::ZERO);
    // 1 byte per 333.33 ms: refills of a nanosecond each add up exactly.
    let mut t = Duration::ZERO;
    for _ in 0..1_000 {
        t += Duration::from_nanos(333_334);
        let _ = b.admit(1, t);
    }
    assert_eq!(b.admit(1, t), Ok(()));
    assert!(b.admit(2, t).is_err());
    // Long idle: capped at the burst.
    let later = t + Duration::from_secs(3600);
    assert_eq!(b.admit(10, later), Ok(()));
    b.charge(10, later);
    assert_eq!(b.admit(1, later), Err(Duration::from_nanos(333_333_334)));
}
