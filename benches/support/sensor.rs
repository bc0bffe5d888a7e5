//! The real `vigil-sensor` binary for whole-system benches: found or built,
//! started standalone (`run --output jsonl=FILE`), stopped with SIGTERM.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sensor binary: VIGIL_SENSOR_BIN, else built (or found) beside this bench.
pub fn sensor_bin(bench: &str) -> Result<Option<PathBuf>> {
    super::release_bin(bench, "vigil-sensor", "VIGIL_SENSOR_BIN")
}

#[derive(Clone, Copy, PartialEq)]
pub enum Collector {
    Ebpf,
    Audit,
}

impl Collector {
    pub fn name(self) -> &'static str {
        match self {
            Collector::Ebpf => "eBPF",
            Collector::Audit => "audit",
        }
    }
}

/// A running sensor and the file it writes.
pub struct Sensor {
    child: Child,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sensor {
    pub fn start(bin: &Path, rules: Option<&Path>, collector: Collector) -> Result<Sensor> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("records.jsonl");
        let config = dir.path().join("sensor.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[collect]\nebpf = {}\n",
                dir.path().join("data"),
                collector == Collector::Ebpf
            ),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .arg(format!("--output=jsonl={}", out.display()));
        if let Some(rules) = rules {
            cmd.arg("--rules").arg(rules);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&out).is_ok_and(|t| t.contains("\"host\"")) {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    e.read_to_string(&mut err)?;
                }
                bail!("sensor exited ({status}): {err}");
            }
            if Instant::now() > deadline {
                bail!("sensor wrote nothing within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Keep its log drained; keep the lines that say what it collects with.
        let mut err = child.stderr.take().context("stderr")?;
        std::thread::spawn(move || {
            let mut log = String::new();
            let _ = err.read_to_string(&mut log);
        });
        Ok(Sensor {
            child,
            out,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.out).map_or(0, |m| m.len())
    }

    pub fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pid())?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("sensor exit: {status}");
        }
        Ok(())
    }
}
