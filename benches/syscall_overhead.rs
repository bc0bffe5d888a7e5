//! What the eBPF sensor costs every other process: the time of common
//! syscalls without a sensor, then with `vigil-sensor run` attached (its
//! programs run on every syscall entry and exit, and decide by number).
//! Rounds alternate without and with the sensor; medians are printed.
//!
//! `sudo cargo bench --bench syscall_overhead` (builds the release sensor
//! first, or uses VIGIL_SENSOR_BIN)
//! (ROUNDS, default 5; CALLS per measurement, default 2,000,000).
//! Needs root; prints why and exits 0 otherwise.

use std::io::Read;
use std::time::{Duration, Instant};

mod support;
use support::sensor::{Collector, Sensor, sensor_bin};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds per call of each workload.
fn measure(calls: usize) -> [f64; 3] {
    let per = |start: Instant| start.elapsed().as_nanos() as f64 / calls as f64;
    // A syscall none of the programs look at.
    let t = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(nix::unistd::getppid());
    }
    let getppid = per(t);
    // write(2): looked at (is this fd a file opened for writing?).
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let t = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(nix::unistd::write(&null, b"x").ok());
    }
    let write = per(t);
    // open + read + close of a small file: openat is looked at on entry and exit.
    let opens = calls / 10;
    let mut buf = [0u8; 64];
    let t = Instant::now();
    for _ in 0..opens {
        let mut f = std::fs::File::open("/etc/hostname").expect("/etc/hostname");
        std::hint::black_box(f.read(&mut buf).ok());
    }
    let open = t.elapsed().as_nanos() as f64 / opens as f64;
    [getppid, write, open]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("syscall_overhead: SKIPPED (needs root to load the sensor's BPF programs)");
        return;
    }
    let Some(bin) = sensor_bin("syscall_overhead").expect("locating the sensor") else {
        return;
    };
    let rounds = env_or("ROUNDS", 5);
    let calls = env_or("CALLS", 2_000_000);
    let mut without = [Vec::new(), Vec::new(), Vec::new()];
    let mut with = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let a = measure(calls);
        let sensor = Sensor::start(&bin, None, Collector::Ebpf).expect("starting the sensor");
        std::thread::sleep(Duration::from_millis(500));
        let b = measure(calls);
        sensor.stop().expect("stopping the sensor");
        for i in 0..3 {
            without[i].push(a[i]);
            with[i].push(b[i]);
        }
        println!(
            "round {round}: getppid {:.0}/{:.0} ns, write /dev/null {:.0}/{:.0} ns, open+read+close {:.0}/{:.0} ns (without/with)",
            a[0], b[0], a[1], b[1], a[2], b[2]
        );
    }
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "median ns per call", "without", "with", "added"
    );
    for (i, name) in [
        "getppid (not looked at)",
        "write to /dev/null",
        "open+read+close",
    ]
    .iter()
    .enumerate()
    {
        let (w, s) = (median(&mut without[i]), median(&mut with[i]));
        println!("{name:<34} {w:>10.0} {s:>10.0} {:>10.0}", s - w);
    }
}
