//! Micro-bench of the cached path: where a rescan by path spends its time.
//!
//! `cargo bench -p vigil-hash --bench rescan` (env: RESCAN_FILES, default
//! 3000; RESCAN_ROUNDS, default 200). Makes RESCAN_FILES small files in a temp
//! dir laid out like `benches/hashing.rs` (100 a directory), hashes them once
//! into an in-memory cache, then times per file, hot (the same files over and
//! over): a bare `stat` (std), `try_hash` served from the cache, and
//! `lookup` by a key the caller holds; and each again cold, right after
//! streaming RESCAN_EVICT_MIB (default 64) through the CPU caches. Each
//! figure is the median of RESCAN_ROUNDS passes over every file. For `perf record`: RESCAN_ONLY=try_hash
//! loops only that.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use vigil_hash::{FileHasher, FileKey, HashCache, HashConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and min, in ns per file.
fn per_file(mut v: Vec<Duration>, n: usize) -> String {
    v.sort();
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    format!("{:>7.1} [{:>6.1}]", ns(v[v.len() / 2]), ns(v[0]))
}

fn main() {
    let n = env_or("RESCAN_FILES", 3000) as usize;
    let rounds = env_or("RESCAN_ROUNDS", 100).max(1);
    let only = std::env::var("RESCAN_ONLY").ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = dir.path().join("tree").join(format!("d{:03}", i / 100));
            std::fs::create_dir_all(&d).expect("mkdir");
            let p = d.join(format!("f{i:05}.bin"));
            std::fs::write(&p, vec![i as u8; 1024 + (i * 37) % 4096]).expect("write");
            p
        })
        .collect();
    let hasher = FileHasher::new(
        HashConfig {
            racy_window: Duration::ZERO,
            ..HashConfig::default()
        },
        Some(HashCache::in_memory(vigil_hash::DEFAULT_CACHE_ENTRIES)),
    );
    for p in &files {
        assert!(!hasher.try_hash(p).expect("hash").from_cache);
    }
    let keys: Vec<FileKey> = files
        .iter()
        .map(|p| FileKey::from_metadata(&std::fs::metadata(p).expect("stat")))
        .collect();
    type Pass<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let passes: Vec<Pass> = vec![
        (
            "stat (std::fs::metadata)",
            Box::new(|| {
                for p in &files {
                    std::hint::black_box(std::fs::metadata(p).expect("stat"));
                }
            }),
        ),
        (
            "stat (fstatat)",
            Box::new(|| {
                for p in &files {
                    std::hint::black_box(nix::sys::stat::stat(p.as_path()).expect("stat"));
                }
            }),
        ),
        (
            "try_hash, cached",
            Box::new(|| {
                for p in &files {
                    let h = hasher.try_hash(p).expect("hash");
                    assert!(h.from_cache);
                    std::hint::black_box(h);
                }
            }),
        ),
        (
            "lookup by key",
            Box::new(|| {
                for k in &keys {
                    std::hint::black_box(hasher.lookup(k).expect("cached"));
                }
            }),
        ),
    ];
    // Cold: before the pass, stream through a buffer larger than L2, as a
    // first scan does with file content (the kernel's dentries and inodes and
    // our map are then out of the CPU caches).
    let mut evict = vec![1u8; (env_or("RESCAN_EVICT_MIB", 64) << 20) as usize];
    let mut samples = vec![(Vec::new(), Vec::new()); passes.len()];
    for round in 0..rounds {
        for ((name, f), (hot, cold)) in passes.iter().zip(&mut samples) {
            if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
                continue;
            }
            for c in evict.chunks_mut(64) {
                c[0] = c[0].wrapping_add(round as u8);
            }
            std::hint::black_box(&evict);
            let t = Instant::now();
            f();
            cold.push(t.elapsed());
            let t = Instant::now();
            f();
            hot.push(t.elapsed());
        }
    }
    println!(
        "{n} files, {rounds} rounds; ns per file, median [min]: hot, then cold (after streaming {} MiB)",
        evict.len() >> 20
    );
    for ((name, _), (hot, cold)) in passes.iter().zip(samples) {
        if !hot.is_empty() {
            println!("{name:<28} {}  {}", per_file(hot, n), per_file(cold, n));
        }
    }
}
