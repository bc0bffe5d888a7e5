//! File hashing throughput (vigil-hash) against `b3sum --num-threads 1` and
//! `sha256sum` on the same files, and a first scan against a cached rescan,
//! each both in this process and in a fresh process that opens the cache file
//! (so that each rescan figure has a first scan measured the same way).
//!
//! `cargo bench --bench hashing` (env: HASH_BENCH_RUNS, default 5;
//! HASH_BENCH_SMALL small files, default 3000; HASH_BENCH_MIB total, default 256).
//!
//! The tree is made once in a temp dir: many small files (1–64 KiB) and
//! large ones (1–16 MiB) of pseudo-random bytes. Everything is measured with
//! the files in the page cache: each tool runs once to warm before its timed
//! runs, so these are hashing figures, not disk figures. Single thread
//! throughout. Each figure is the median of the runs (min in brackets); in
//! each run every contender takes its turn.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_hash::{Algorithms, FileHasher, FileKey, HashCache, HashConfig};

/// Set in a child process: "first" or "rescan", the cache file and the file
/// list, one a line.
const RESCAN_ENV: &str = "VIGIL_HASH_BENCH_RESCAN";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the tree is the same on every run, without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn make_tree(root: &Path, small: u64, total_mib: u64) -> (Vec<PathBuf>, u64) {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut buf = Vec::new();
    let mut add = |size: u64, rng: &mut Rng, files: &mut Vec<PathBuf>| {
        let dir = root.join(format!("d{:03}", files.len() / 100));
        std::fs::create_dir_all(&dir).expect("mkdir");
        buf.clear();
        while (buf.len() as u64) < size {
            buf.extend_from_slice(&rng.next().to_le_bytes());
        }
        buf.truncate(size as usize);
        let p = dir.join(format!("f{:05}.bin", files.len()));
        std::fs::write(&p, &buf).expect("write");
        files.push(p);
        size
    };
    for _ in 0..small {
        total += add(rng.range(1024, 64 * 1024), &mut rng, &mut files);
    }
    while total < total_mib << 20 {
        total += add(rng.range(1 << 20, 16 << 20), &mut rng, &mut files);
    }
    (files, total)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0])
}

fn time_runs(runs: u64, mut f: impl FnMut()) -> (Duration, Duration) {
    f(); // warm: page cache, allocator, CPU frequency
    let v = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median(v)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `tool args files`, returning its stdout (the digest lines).
fn run_tool(tool: &str, args: &[&str], files: &[PathBuf]) -> String {
    let out = Command::new(tool)
        .args(args)
        .args(files)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tool");
    assert!(out.status.success(), "{tool} failed");
    String::from_utf8(out.stdout).expect("tool output")
}

fn hash_all(hasher: &FileHasher, files: &[PathBuf]) -> Vec<vigil_hash::Digests> {
    files
        .iter()
        .map(|p| hasher.try_hash(p).expect("hash").digests)
        .collect()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn line(label: &str, (med, min): (Duration, Duration), bytes: u64) {
    println!(
        "{label:<44} {:>9.1} ms  [{:>8.1}]  {:>7.0} MiB/s",
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        mib_s(bytes, med)
    );
}

/// The child: open the cache file (`first`: removed before, so empty), scan
/// every file, flush; print "open_ns scan_ns". Timed like the parent's scans:
/// the scan from after the open to after the flush.
fn child(mode: &str, cache: &Path, list: &Path) {
    let files: Vec<PathBuf> = std::fs::read_to_string(list)
        .expect("file list")
        .lines()
        .map(PathBuf::from)
        .collect();
    let first = mode == "first";
    if first {
        let _ = std::fs::remove_file(cache);
    }
    let t = Instant::now();
    let (cache, opened) = HashCache::open(cache, vigil_hash::DEFAULT_CACHE_ENTRIES).expect("open");
    let open = t.elapsed();
    assert_eq!(opened.entries, if first { 0 } else { files.len() });
    let hasher = FileHasher::new(HashConfig::default(), Some(cache));
    let t = Instant::now();
    let _ = hash_all(&hasher, &files);
    hasher.flush().expect("flush");
    let scan = t.elapsed();
    let s = hasher.stats();
    if first {
        assert_eq!(
            s.files_hashed,
            files.len() as u64,
            "the first scan missed files"
        );
    } else {
        assert_eq!(s.bytes_read, 0, "the rescan read files");
        assert_eq!(s.cache_hits, files.len() as u64);
    }
    println!("{} {}", open.as_nanos(), scan.as_nanos());
}

/// Runs this bench again as a child in `mode`; returns (open, scan).
fn run_child(mode: &str, cache: &Path, list: &Path) -> (Duration, Duration) {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(
            RESCAN_ENV,
            format!("{mode}\n{}\n{}", cache.display(), list.display()),
        )
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (Duration::from_nanos(nums[0]), Duration::from_nanos(nums[1]))
}

fn main() {
    if let Ok(arg) = std::env::var(RESCAN_ENV) {
        let mut parts = arg.splitn(3, '\n');
        let (Some(mode), Some(cache), Some(list)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("{RESCAN_ENV}: mode\\ncache\\nlist");
        };
        return child(mode, Path::new(cache), Path::new(list));
    }
    let runs = env_or("HASH_BENCH_RUNS", 5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let (files, bytes) = make_tree(
        &tree,
        env_or("HASH_BENCH_SMALL", 3000),
        env_or("HASH_BENCH_MIB", 256),
    );
    let made = Instant::now();
    println!(
        "tree: {} files, {:.1} MiB ({} small 1-64 KiB, {} large 1-16 MiB); page cache warm; {} runs, median [min]",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        env_or("HASH_BENCH_SMALL", 3000),
        files.len() as u64 - env_or("HASH_BENCH_SMALL", 3000),
        runs
    );

    // (a) Our throughput, single thread, no cache; (b) the tools on the same
    // files, each checked to agree with us first. The contenders take turns
    // within each run, so load from elsewhere on the machine falls on all alike.
    let ours = |algorithms| {
        FileHasher::new(
            HashConfig {
                algorithms,
                ..HashConfig::default()
            },
            None,
        )
    };
    let reference = hash_all(&ours(Algorithms::Both), &files);
    let check = |out: &str, pick: fn(&vigil_hash::Digests) -> Option<[u8; 32]>| {
        for (l, d) in out.lines().zip(&reference) {
            let want = pick(d).map(|x| hex(&x)).unwrap_or_default();
            assert!(l.starts_with(&want), "tool disagrees: {l}");
        }
        assert_eq!(out.lines().count(), reference.len());
    };
    type Run<'a> = Box<dyn FnMut() + 'a>;
    let mut contenders: Vec<(&str, Run)> = Vec::new();
    for (name, algorithms) in [
        ("vigil-hash BLAKE3+SHA-256 (one read)", Algorithms::Both),
        ("vigil-hash BLAKE3 only", Algorithms::Blake3Only),
        ("vigil-hash SHA-256 only", Algorithms::Sha256Only),
    ] {
        let h = ours(algorithms);
        let files = &files;
        contenders.push((
            name,
            Box::new(move || {
                std::hint::black_box(hash_all(&h, files));
            }),
        ));
    }
    let b3sum_found = on_path("b3sum");
    if b3sum_found {
        check(&run_tool("b3sum", &["--num-threads", "1"], &files), |d| {
            d.blake3
        });
        contenders.push((
            "b3sum --num-threads 1",
            Box::new(|| {
                run_tool("b3sum", &["--num-threads", "1"], &files);
            }),
        ));
    } else {
        println!("b3sum not found, skipped");
    }
    let sha256sum_found = on_path("sha256sum");
    if sha256sum_found {
        check(&run_tool("sha256sum", &[], &files), |d| d.sha256);
        contenders.push((
            "sha256sum",
            Box::new(|| {
                run_tool("sha256sum", &[], &files);
            }),
        ));
    } else {
        println!("sha256sum not found, skipped");
    }
    let mut samples = vec![Vec::new(); contenders.len()];
    for run in 0..=runs {
        for ((_, f), s) in contenders.iter_mut().zip(&mut samples) {
            let t = Instant::now();
            f();
            // Run 0 warms page cache, allocator and CPU frequency.
            if run > 0 {
                s.push(t.elapsed());
            }
        }
    }
    let names: Vec<&str> = contenders.iter().map(|(n, _)| *n).collect();
    drop(contenders);
    let figures: Vec<(Duration, Duration)> = samples.into_iter().map(median).collect();
    for (n, f) in names.iter().zip(&figures) {
        line(n, *f, bytes);
    }
    let (both, b3_only, sha_only) = (figures[0], figures[1], figures[2]);
    let mut rest = figures[3..].iter().copied();
    let b3sum = b3sum_found.then(|| rest.next()).flatten();
    let sha256sum = sha256sum_found.then(|| rest.next()).flatten();
    let pct = |tool: Duration, us: Duration| 100.0 * tool.as_secs_f64() / us.as_secs_f64();
    if let (Some(b), Some(s)) = (b3sum, sha256sum) {
        println!(
            "combined: ours {:.1} ms vs b3sum + sha256sum {:.1} ms: {:.0}% of the tools' speed",
            both.0.as_secs_f64() * 1e3,
            (b.0 + s.0).as_secs_f64() * 1e3,
            pct(b.0 + s.0, both.0)
        );
    }
    if let Some(b) = b3sum {
        println!("BLAKE3 only: {:.0}% of b3sum's speed", pct(b.0, b3_only.0));
    }
    if let Some(s) = sha256sum {
        println!(
            "SHA-256 only: {:.0}% of sha256sum's speed",
            pct(s.0, sha_only.0)
        );
    }

    // (c) First scan into an empty cache file, then rescans of the unchanged tree.
    // Files changed in the last 2 s are not cached (the racy window): wait it out.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(made.elapsed()));
    let cache_path = dir.path().join("hashes.redb");
    let list = dir.path().join("files.txt");
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(&list, names.join("\n")).expect("list");
    // Per run, in this order: a first scan and the rescan right after it in
    // this process; a rescan in a fresh process; a bare stat of every file
    // right after hashing them all (the floor for a rescan that follows a
    // scan, whose content has pushed the kernel's dentries and inodes out of
    // the CPU caches); a first scan in a fresh process. Every scan is timed
    // from after the cache open to after a flush.
    let no_cache = ours(Algorithms::Both);
    let (mut first, mut warm, mut fresh, mut fresh_open) = (vec![], vec![], vec![], vec![]);
    let (mut fresh_first, mut fresh_first_open, mut stat_cold) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let _ = std::fs::remove_file(&cache_path);
        let (cache, _) =
            HashCache::open(&cache_path, vigil_hash::DEFAULT_CACHE_ENTRIES).expect("cache");
        let h = FileHasher::new(HashConfig::default(), Some(cache));
        let t = Instant::now();
        let _ = hash_all(&h, &files);
        h.flush().expect("flush");
        first.push(t.elapsed());
        assert_eq!(h.cache().map(HashCache::len), Some(files.len()));
        let t = Instant::now();
        let _ = hash_all(&h, &files);
        h.flush().expect("flush");
        warm.push(t.elapsed());
        assert_eq!(h.stats().cache_hits, files.len() as u64);
        drop(h);
        let (open, scan) = run_child("rescan", &cache_path, &list);
        fresh_open.push(open);
        fresh.push(scan);
        std::hint::black_box(hash_all(&no_cache, &files));
        let t = Instant::now();
        for p in &files {
            std::hint::black_box(std::fs::metadata(p).expect("stat"));
        }
        stat_cold.push(t.elapsed());
        let (open, scan) = run_child("first", &cache_path, &list);
        fresh_first_open.push(open);
        fresh_first.push(scan);
    }
    let (first, warm, fresh, fresh_open) = (
        median(first),
        median(warm),
        median(fresh),
        median(fresh_open),
    );
    let (fresh_first, fresh_first_open, stat_cold) = (
        median(fresh_first),
        median(fresh_first_open),
        median(stat_cold),
    );
    // What a rescan by path cannot go below: one stat per file. And a lookup
    // by a key the caller already has (no syscall at all).
    let stat_only = time_runs(runs, || {
        for p in &files {
            std::hint::black_box(std::fs::metadata(p).expect("stat"));
        }
    });
    let (cache, _) =
        HashCache::open(&cache_path, vigil_hash::DEFAULT_CACHE_ENTRIES).expect("cache");
    let h = FileHasher::new(HashConfig::default(), Some(cache));
    let keys: Vec<FileKey> = files
        .iter()
        .map(|p| FileKey::from_metadata(&std::fs::metadata(p).expect("stat")))
        .collect();
    let repeated = time_runs(runs, || {
        std::hint::black_box(hash_all(&h, &files));
    });
    let by_key = time_runs(runs, || {
        for k in &keys {
            std::hint::black_box(h.lookup(k).expect("cached"));
        }
    });
    line("first scan into an empty cache file", first, bytes);
    line("first scan, fresh process (after open)", fresh_first, bytes);
    line(
        "  empty cache open in that process",
        fresh_first_open,
        bytes,
    );
    line("cached rescan, same process, right after", warm, bytes);
    line("cached rescan, same process, repeated", repeated, bytes);
    line("cached rescan, fresh process (after open)", fresh, bytes);
    line("  cache open + load in that process", fresh_open, bytes);
    line("stat of every file, right after hashing", stat_cold, bytes);
    line("stat of every file, repeated", stat_only, bytes);
    line("lookup by FileKey (caller has the stat)", by_key, bytes);
    let x = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "rescan speed-up, same process: {:.0}x right after, {:.0}x repeated",
        x(first.0, warm.0),
        x(first.0, repeated.0)
    );
    println!(
        "rescan speed-up, fresh process against fresh process: {:.0}x, {:.0}x counting each one's cache open",
        x(fresh_first.0, fresh.0),
        x(fresh_first.0 + fresh_first_open.0, fresh.0 + fresh_open.0)
    );
    println!(
        "rescan speed-up, fresh process against the same-process first scan (as before): {:.0}x, {:.0}x counting the open",
        x(first.0, fresh.0),
        x(first.0, fresh.0 + fresh_open.0)
    );
    let per_file = |d: Duration| d.as_secs_f64() * 1e6 / files.len() as f64;
    println!(
        "per file: first scan {:.1} us (fresh process {:.1} us), rescan {:.2} us (repeated {:.2} us, fresh process {:.2} us), stat {:.2} us right after hashing / {:.2} us repeated, lookup by key {:.3} us",
        per_file(first.0),
        per_file(fresh_first.0),
        per_file(warm.0),
        per_file(repeated.0),
        per_file(fresh.0),
        per_file(stat_cold.0),
        per_file(stat_only.0),
        per_file(by_key.0)
    );
    println!(
        "rescan speed-up against hashing alone (no cache writes): {:.0}x",
        both.0.as_secs_f64() / warm.0.as_secs_f64()
    );
}
