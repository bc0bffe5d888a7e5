//! What the sensor costs the machine: the real `vigil-sensor` binary,
//! standalone (`run --output jsonl=FILE`), with the SigmaHQ Linux rules
//! loaded, measured from outside through /proc/PID (the sensor's own CPU
//! only, utime + stime of all its threads; RSS and its high-water mark).
//!
//! - idle: CPU and memory over IDLE_SECS (default 30) after a 5 s settle,
//!   with the events the sensor saw meanwhile (the machine is never quiet);
//! - exec bursts: spawner threads exec `/bin/true <unique marker>` at RATE/s
//!   (default 1000) for BURST_SECS (default 10), then as fast as two spawners
//!   go; the sensor's CPU over the burst and until its output stops growing,
//!   as % of one core per 1,000 execs/s; and how many of the spawned
//!   processes it reported (process_creation with the exact command line).
//!
//! Each scenario runs with eBPF (the default) and with the audit fallback
//! (`[collect] ebpf = false`), alternating, REPEAT times (default 2).
//! `sudo cargo bench --bench sensor_cost` (`-- idle` or `-- burst` for one
//! part). The binary: VIGIL_SENSOR_BIN, else `release/vigil-sensor` in this
//! bench's target directory, built first with cargo. Rules: VIGIL_SIGMA_CORPUS
//! (default ../shared/sigma)/rules/linux. Needs root; prints why and exits 0
//! otherwise.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::sensor::{Collector, Sensor, sensor_bin};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn corpus() -> PathBuf {
    std::env::var_os("VIGIL_SIGMA_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/sigma"),
        PathBuf::from,
    )
}

/// CPU time (utime + stime, clock ticks) of a process, all its threads.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// (VmRSS, VmHWM) in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

/// What the sensor wrote between two offsets of its output: lines per
/// category, and the markers of `prefix` seen in process_creation lines.
#[derive(Default)]
struct Seen {
    lines: u64,
    by_kind: BTreeMap<String, u64>,
    markers: HashSet<String>,
}

fn read_lines(path: &Path, from: u64, to: u64, prefix: &str) -> Result<Seen> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut seen = Seen::default();
    let reader = BufReader::new(f.take(to - from));
    let command = format!("/bin/true {prefix}");
    for line in reader.lines() {
        let line = line?;
        seen.lines += 1;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let kind = v["logsource"]["category"]
            .as_str()
            .or(v["logsource"]["service"].as_str())
            .or(v["vigil"]["record"].as_str())
            .unwrap_or("other");
        if kind == "process_creation"
            && let Some(cmd) = v["event"]["CommandLine"].as_str()
            && cmd.starts_with(&command)
        {
            seen.markers.insert(cmd.to_owned());
        }
        let kind = if v.get("detection").is_some() {
            "detection"
        } else {
            kind
        };
        *seen.by_kind.entry(kind.to_owned()).or_default() += 1;
    }
    Ok(seen)
}

fn kinds(seen: &Seen) -> String {
    seen.by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Idle {
    cpu_percent: f64,
    rss: f64,
    hwm: f64,
    events_per_s: f64,
    kinds: String,
    load: String,
}

fn idle(sensor: &Sensor, secs: u64) -> Result<Idle> {
    std::thread::sleep(Duration::from_secs(5));
    let (from, c0, t0) = (sensor.len(), cpu_ticks(sensor.pid())?, Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (to, c1, wall) = (sensor.len(), cpu_ticks(sensor.pid())?, t0.elapsed());
    let (rss, hwm) = memory(sensor.pid())?;
    let seen = read_lines(&sensor.out, from, to, "-")?;
    Ok(Idle {
        cpu_percent: (c1 - c0) as f64 / ticks_per_second() / wall.as_secs_f64() * 100.0,
        rss,
        hwm,
        events_per_s: seen.lines as f64 / wall.as_secs_f64(),
        kinds: kinds(&seen),
        load: load_average(),
    })
}

struct Burst {
    spawned: usize,
    rate: f64,
    spawn_secs: f64,
    drain_secs: f64,
    cpu_secs: f64,
    /// The sensor's CPU (% of a core) and records/s over the 3 s before the burst.
    baseline: (f64, f64),
    reported: usize,
    kinds: String,
    hwm: f64,
    load: String,
}

impl Burst {
    /// The sensor's CPU while the burst ran, as % of one core, per 1,000 execs/s:
    /// its CPU seconds (burst and drain) per 1,000 execs, ×100.
    fn per_thousand(&self) -> f64 {
        self.cpu_secs / self.spawned as f64 * 1000.0 * 100.0
    }

    /// The same, less what the background activity cost it at the rate of
    /// the 3 s before the burst.
    fn per_thousand_net(&self) -> f64 {
        let background = self.baseline.0 / 100.0 * (self.spawn_secs + self.drain_secs);
        (self.cpu_secs - background).max(0.0) / self.spawned as f64 * 1000.0 * 100.0
    }
}

/// `spawners` threads exec `/bin/true <prefix>-<thread>-<i>` for `secs`,
/// together at `rate`/s (0: as fast as they can). Returns the markers.
fn spawn_burst(prefix: &str, spawners: usize, rate: f64, secs: f64) -> Vec<String> {
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + Duration::from_secs_f64(secs);
    let every = (rate > 0.0).then(|| Duration::from_secs_f64(spawners as f64 / rate));
    let threads: Vec<_> = (0..spawners)
        .map(|t| {
            let prefix = prefix.to_owned();
            std::thread::spawn(move || {
                let mut markers = Vec::new();
                // Threads start staggered so a paced burst is even.
                let mut next =
                    start + every.map_or(Duration::ZERO, |e| e * t as u32 / spawners as u32);
                while next < end {
                    if let Some(e) = every {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += e;
                    } else {
                        next = Instant::now();
                    }
                    let marker = format!("{prefix}-{t}-{}", markers.len());
                    let status = Command::new("/bin/true")
                        .arg(&marker)
                        .stdin(Stdio::null())
                        .status();
                    if status.is_ok_and(|s| s.success()) {
                        markers.push(marker);
                    }
                }
                markers
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

/// Reads the lines appended to `path` since `offset`, counting those that
/// hold `needle`; leaves `offset` after the last whole line.
fn count_new(path: &Path, offset: &mut u64, needle: &str) -> Result<usize> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(*offset))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text)?;
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    *offset += whole as u64;
    Ok(String::from_utf8_lossy(&text[..whole])
        .lines()
        .filter(|l| l.contains(needle))
        .count())
}

fn burst(sensor: &Sensor, tag: &str, spawners: usize, rate: f64, secs: f64) -> Result<Burst> {
    let prefix = format!("vigil-cost-{}-{tag}", std::process::id());
    // Settle, then the background's cost over 3 s.
    std::thread::sleep(Duration::from_secs(1));
    let (b0, bc0, bt0) = (sensor.len(), cpu_ticks(sensor.pid())?, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (from, c0, t0) = (sensor.len(), cpu_ticks(sensor.pid())?, Instant::now());
    let base_secs = t0.duration_since(bt0).as_secs_f64();
    let base_lines = read_lines(&sensor.out, b0, from, "-")?.lines;
    let baseline = (
        (c0 - bc0) as f64 / ticks_per_second() / base_secs * 100.0,
        base_lines as f64 / base_secs,
    );
    let markers = spawn_burst(&prefix, spawners, rate, secs);
    let spawn_secs = t0.elapsed().as_secs_f64();
    // Drain: until every spawned process was reported, or none more for 2 s
    // (the machine is never quiet enough to wait for the output to stop).
    let needle = format!("\"CommandLine\":\"/bin/true {prefix}-");
    let (mut offset, mut found) = (from, 0);
    let (drain, mut last_found) = (Instant::now(), Instant::now());
    loop {
        let n = count_new(&sensor.out, &mut offset, &needle)?;
        if n > 0 {
            found += n;
            last_found = Instant::now();
        }
        if found >= markers.len() || last_found.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let c1 = cpu_ticks(sensor.pid())?;
    let drain_secs = drain.elapsed().as_secs_f64();
    let (_, hwm) = memory(sensor.pid())?;
    let seen = read_lines(&sensor.out, from, offset, &prefix)?;
    let reported = markers
        .iter()
        .filter(|m| seen.markers.contains(&format!("/bin/true {m}")))
        .count();
    Ok(Burst {
        spawned: markers.len(),
        rate: markers.len() as f64 / spawn_secs,
        spawn_secs,
        drain_secs,
        cpu_secs: (c1 - c0) as f64 / ticks_per_second(),
        baseline,
        reported,
        kinds: kinds(&seen),
        hwm,
        load: load_average(),
    })
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "SKIPPED sensor_cost: needs root (eBPF: CAP_BPF and CAP_PERFMON; audit: CAP_AUDIT_CONTROL)"
        );
        return Ok(());
    }
    let rules = corpus().join("rules/linux");
    if !rules.is_dir() {
        println!(
            "SKIPPED sensor_cost: no SigmaHQ corpus at {} (set VIGIL_SIGMA_CORPUS)",
            rules.display()
        );
        return Ok(());
    }
    let Some(bin) = sensor_bin("sensor_cost")? else {
        return Ok(());
    };
    let part: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |p: &str| part.as_deref().is_none_or(|w| w == p);
    let repeat: usize = env_or("REPEAT", 2);
    let idle_secs: u64 = env_or("IDLE_SECS", 30);
    let burst_secs: f64 = env_or("BURST_SECS", 10.0);
    let rate: f64 = env_or("RATE", 1000.0);
    let collectors = [Collector::Ebpf, Collector::Audit];
    println!(
        "sensor_cost: {} with {}; load average {} at start",
        bin.display(),
        rules.display(),
        load_average()
    );

    let mut idles: Vec<(Collector, Idle)> = Vec::new();
    let mut bursts: Vec<(Collector, &str, Burst)> = Vec::new();
    for round in 0..repeat {
        for &c in &collectors {
            let sensor = Sensor::start(&bin, Some(&rules), c)?;
            if want("idle") {
                let i = idle(&sensor, idle_secs)?;
                println!(
                    "idle [{}] {}s: CPU {:.3}% of a core, RSS {:.1} MiB (peak {:.1}), \
                     {:.1} records/s seen ({}); load {}",
                    c.name(),
                    idle_secs,
                    i.cpu_percent,
                    i.rss,
                    i.hwm,
                    i.events_per_s,
                    i.kinds,
                    i.load
                );
                idles.push((c, i));
            }
            if want("burst") {
                for (label, spawners, r) in [("paced", 2, rate), ("max", 2, 0.0)] {
                    let tag = format!("{round}-{}-{label}", c.name());
                    let b = burst(&sensor, &tag, spawners, r, burst_secs)?;
                    println!(
                        "burst [{}] {label}: {} execs in {:.2} s ({:.0}/s), drain {:.2} s; sensor CPU {:.2} s \
                         = {:.2}% of a core per 1,000 execs/s ({:.2} less the background: {:.2}% and \
                         {:.0} records/s before); reported {} ({:.3}%); peak RSS {:.1} MiB; lines: {}; load {}",
                        c.name(),
                        b.spawned,
                        b.spawn_secs,
                        b.rate,
                        b.drain_secs,
                        b.cpu_secs,
                        b.per_thousand(),
                        b.per_thousand_net(),
                        b.baseline.0,
                        b.baseline.1,
                        b.reported,
                        b.reported as f64 / b.spawned as f64 * 100.0,
                        b.hwm,
                        b.kinds,
                        b.load
                    );
                    if b.reported * 1000 < b.spawned * 999 {
                        println!(
                            "  WARNING: under 99.9% reported (with audit: did another process take the \
                             host's one audit feed?)"
                        );
                    }
                    bursts.push((c, label, b));
                }
            }
            sensor.stop()?;
        }
    }

    println!();
    if !idles.is_empty() {
        println!(
            "| idle ({idle_secs} s) | CPU, % of a core | RSS / peak MiB | records/s seen | load |"
        );
        println!("|---|---|---|---|---|");
        for (c, i) in &idles {
            println!(
                "| {} | {:.3} | {:.1} / {:.1} | {:.1} | {} |",
                c.name(),
                i.cpu_percent,
                i.rss,
                i.hwm,
                i.events_per_s,
                i.load
            );
        }
        println!();
    }
    if !bursts.is_empty() {
        println!(
            "| burst | execs/s | sensor CPU s (burst + drain) | % of a core per 1,000 execs/s | \
             the same less the background | background before: CPU %, records/s | reported | peak RSS MiB | load |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (c, label, b) in &bursts {
            println!(
                "| {} {label} | {:.0} ({} in {:.1} s, drain {:.2} s) | {:.2} | {:.2} | {:.2} | {:.2}, {:.0} | {:.3}% | {:.1} | {} |",
                c.name(),
                b.rate,
                b.spawned,
                b.spawn_secs,
                b.drain_secs,
                b.cpu_secs,
                b.per_thousand(),
                b.per_thousand_net(),
                b.baseline.0,
                b.baseline.1,
                b.reported as f64 / b.spawned as f64 * 100.0,
                b.hwm,
                b.load
            );
        }
    }
    Ok(())
}
