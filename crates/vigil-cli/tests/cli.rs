//! The `vigil` binary as a user runs it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// `vigil rules match … | head -1`: the reader goes away after one line;
/// vigil ends quietly and successfully instead of panicking on the closed pipe.
#[test]
fn a_closed_output_pipe_ends_match_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("r.yml");
    std::fs::write(
        &rule,
        "title: cat\nid: 11111111-2222-4333-8444-555555555555\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s:\n    Image|endswith: /cat\n  condition: s\n",
    )
    .expect("rule");
    let events = dir.path().join("e.jsonl");
    let mut f = std::fs::File::create(&events).expect("events");
    for _ in 0..200_000 {
        writeln!(f, r#"{{"Image":"/usr/bin/cat","CommandLine":"cat x"}}"#).expect("write");
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["rules", "match"])
        .arg(&rule)
        .arg("--events")
        .arg(&events)
        .args(["--logsource", "linux/process_creation"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(
        first.contains("11111111-2222-4333-8444-555555555555"),
        "{first}"
    );
    // stdout is dropped here: the pipe closes while vigil still writes.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
