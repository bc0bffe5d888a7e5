//! Triage and rule distribution through `vigil up`, with the kernel: repeats
//! of `cat /etc/shadow` from one shell make one alert with a count; `vigil
//! alerts update` resolves it; `vigil hunt process-tree` shows the shell
//! that ran it, `vigil hunt prevalence` finds `/usr/bin/cat`'s hash on the
//! device, `vigil hunt search` finds the commands; a rule published with `vigil rules publish`
//! fires on the running sensor without a restart. Needs root (the sensor's
//! kernel sources); says so and passes without.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{is_root, text, vigil};

fn alerts(profile: &std::path::Path) -> Vec<serde_json::Value> {
    let out = vigil(profile, &["alerts", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn repeats_aggregate_an_update_resolves_and_a_published_rule_fires_without_restart() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for the sensor's kernel sources");
        return;
    }
    let up = support::start();
    let analyst = &up.analyst;
    let marker = format!("vigil-triage-{}", std::process::id());

    // Three reads of /etc/shadow from one shell: one alert, counted three times.
    let script = format!(
        "for i in 1 2 3; do cat /etc/shadow /nonexistent/{marker} >/dev/null 2>&1; done; true"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let mine: Vec<_> = alerts(analyst)
            .into_iter()
            .filter(|a| a.to_string().contains(&marker))
            .collect();
        if let Some(a) = mine.iter().find(|a| a["count"].as_u64() >= Some(3)) {
            // Each shell's repeats are one alert, however many shells ran.
            for a in &mine {
                assert_eq!(a["count"].as_u64().unwrap() % 3, 0, "{a}");
            }
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no aggregated alert: {mine:?}");
    };
    let id = alert["id"].as_str().unwrap();

    // Resolved by an analyst, with a comment.
    let out = vigil(
        analyst,
        &[
            "alerts",
            "update",
            id,
            "--status",
            "resolved",
            "--comment",
            "expected: admin check",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = vigil(analyst, &["alerts", "show", id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "resolved", "{shown}");

    // The process tree of the alerted `cat` shows the shell that ran it.
    let guid = alert["process"]["guid"].as_str().unwrap();
    let out = vigil(analyst, &["hunt", "process-tree", guid, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shell = &tree["ancestors"][0]["start"];
    assert!(
        shell.to_string().contains(&marker) && shell.to_string().contains("sh"),
        "the parent is the shell that ran the loop: {tree}"
    );
    let out = vigil(analyst, &["hunt", "process-tree", guid]);
    assert!(
        text(&out.stdout).contains("/etc/shadow"),
        "{}",
        text(&out.stdout)
    );
    // The alert shows it too, with the rule's ATT&CK ids.
    let out = vigil(analyst, &["alerts", "show", id]);
    assert!(text(&out.stdout).contains(&marker), "{}", text(&out.stdout));

    // /usr/bin/cat's hash is found on this device.
    let exe = std::fs::canonicalize("/usr/bin/cat").unwrap();
    let sum = Command::new("sha256sum").arg(&exe).output().unwrap();
    let hash = text(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = vigil(analyst, &["hunt", "prevalence", &hash, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), 1, "one device: {seen:?}");
    assert_eq!(seen[0]["device_id"], alert["device"], "{seen:?}");
    assert!(seen[0]["count"].as_u64().unwrap() >= 3);
    let out = vigil(
        analyst,
        &[
            "hunt",
            "search",
            "--kind",
            "process_start",
            &format!("CommandLine*={marker}"),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().count() >= 3,
        "{}",
        text(&out.stdout)
    );

    // A rule published to the tenant fires on the running sensor.
    let rule_marker = format!("vigil-published-{}", std::process::id());
    let rule = up.dir.path().join("published.yml");
    std::fs::write(
        &rule,
        format!(
            "title: Published test rule\nid: 0d1c6a55-4e0b-4a7e-9c51-3f6b2a9d7e10\nstatus: test\nlevel: high\n\
             logsource: {{product: linux, category: process_creation}}\n\
             detection:\n  s:\n    CommandLine|contains: {rule_marker}\n  condition: s\n"
        ),
    )
    .unwrap();
    let out = vigil(analyst, &["rules", "publish", rule.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        Command::new("true").arg(&rule_marker).status().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        if alerts(analyst)
            .iter()
            .any(|a| a["rule_id"] == "0d1c6a55-4e0b-4a7e-9c51-3f6b2a9d7e10")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the published rule never fired");
    }
    let out = vigil(analyst, &["device", "list", "--json"]);
    assert!(text(&out.stdout).contains("v1"), "{}", text(&out.stdout));
}
