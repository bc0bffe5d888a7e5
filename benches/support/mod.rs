//! Shared benchmark inputs.
#![allow(dead_code)]
pub mod events;
pub mod records;
pub mod sensor;
pub mod server;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A release binary of the workspace for whole-system benches: the path in
/// `env_var` when set, else `release/<name>` in this bench's target directory,
/// built first with cargo (package and binary of the same name). `None`, with
/// the reason printed, when there is none.
pub fn release_bin(bench: &str, name: &str, env_var: &str) -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(Some(PathBuf::from(p)));
    }
    let target = target_dir()?;
    let bin = target.join("release").join(name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--release", "-p", name, "--bin", name])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo sets for this bench's own run: ring's build script reruns
    // when CARGO_MANIFEST_DIR changes, and the nested build would then
    // rebuild the TLS stack on every run (and the next `cargo bench` again).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                &*k,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            build.env_remove(&*k);
        }
    }
    let built = build.status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("{bench}: could not build {name}; using what is there");
    }
    if bin.is_file() {
        Ok(Some(bin))
    } else {
        println!(
            "SKIPPED {bench}: no {}; run `CARGO_TARGET_DIR={} cargo build --release -p {name}` \\
             or set {env_var}",
            bin.display(),
            target.display()
        );
        Ok(None)
    }
}

/// The target directory this bench was built in (`<target>/release/deps/<bench>`).
pub fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_owned)
        .context("bench executable path")
}

/// A scratch directory on a real disk: under /tmp unless /tmp is a tmpfs
/// (then fsync costs nothing and a store bench would measure memory), else
/// under the target directory.
pub fn disk_tempdir(bench: &str) -> Result<tempfile::TempDir> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let tmp_is_tmpfs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/tmp" && f[2] == "tmpfs"
    });
    let base = if tmp_is_tmpfs {
        let d = target_dir()?.join("tmp");
        std::fs::create_dir_all(&d)?;
        d
    } else {
        std::env::temp_dir()
    };
    Ok(tempfile::Builder::new().prefix(bench).tempdir_in(base)?)
}

/// The filesystem and device a path lives on, from /proc/mounts (longest prefix).
pub fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = (0, String::new());
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && path.starts_with(f[1]) && f[1].len() >= best.0 {
            best = (f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2]));
        }
    }
    best.1
}

/// utime + stime of a process, all its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Bytes a process caused to be written to storage (`/proc/PID/io`).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every file under `dir` (not following links), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A knob from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `msg` with a bearer token.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}
