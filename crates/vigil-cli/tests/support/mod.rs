//! `vigil up` as a user runs it, for the tests that drive the whole system.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn vigil(profile: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // Ctrl-C, as a user stops it; then make sure.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

/// A running `vigil up` and where it keeps its data.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub analyst: PathBuf,
    pub operator: PathBuf,
    _up: Up,
}

/// Starts `vigil up` in a temporary directory with the shipped rules, and
/// waits until its sensor runs and its server answers.
pub fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vigil-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let up = Up(Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--rules")
        .arg(&rules)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap());
    let analyst = data.join("analyst.toml");
    let operator = data.join("operator.toml");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The banner comes once the sensor runs.
        let banner = std::fs::read_to_string(dir.path().join("up.log"))
            .is_ok_and(|l| l.contains("Vigil is up."));
        if banner
            && vigil(&analyst, &["alerts", "list", "--json"])
                .status
                .success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vigil up did not come up: {}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    Running {
        dir,
        data,
        analyst,
        operator,
        _up: up,
    }
}
