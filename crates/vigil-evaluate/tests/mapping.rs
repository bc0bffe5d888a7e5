//! How each record kind looks to rules, with rules written here.

mod support;

use support::*;
use vigil_evaluate::{
    Evaluator, ProcessCreation, SigmaEvent, Source, for_each_event, to_json_lines,
};
use vigil_proto::v1::{Direction, FileOperation, Record, TransportProtocol, record::Payload};
use vigil_rules::{EngineConfig, Event};

fn rule(id: &str, logsource: &str, detection: &str) -> String {
    format!("title: {id}\nid: {id}\nlogsource: {logsource}\ndetection:\n{detection}\n---\n")
}

const PC: &str = "{product: linux, category: process_creation}";
const FE: &str = "{product: linux, category: file_event}";
const NC: &str = "{product: linux, category: network_connection}";
const AU: &str = "{product: linux, service: auditd}";

#[test]
fn ancestry_fields_reach_rules() {
    let set = rules(&rule(
        "webshell-child",
        PC,
        "  s:\n    Ancestors|contains: /nginx\n    Image|endswith: /id\n  condition: s",
    ));
    let mut ev = Evaluator::new(set, EngineConfig::default());
    // sh (parent) ← php-fpm ← nginx: the web server is a grand-grandparent.
    let tree = [
        pref(3, "/usr/bin/sh", "sh -c id"),
        pref(2, "/usr/sbin/php-fpm", "php-fpm"),
        pref(1, "/usr/sbin/nginx", "nginx"),
    ];
    let p = start(4, "/usr/bin/id", &["id"], "www-data", &tree[0]);
    let d = ev.evaluate(T0, &p, &tree);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].process.as_ref().map(|p| p.pid), Some(4));
    let Payload::ProcessStart(s) = &p else {
        unreachable!()
    };
    let pc = ProcessCreation::new(s, &tree);
    assert_eq!(
        pc.field("GrandParentImage")
            .map(|v| v.as_text().into_owned()),
        Some("/usr/sbin/php-fpm".into())
    );
    assert!(ev.evaluate(T0, &p, &tree[..1]).is_empty());
}

#[test]
fn a_start_without_argv_has_no_command_line_and_no_execve_record() {
    let yaml = [
        rule("empty-cli", PC, "  s: {CommandLine: ''}\n  condition: s"),
        rule(
            "cli-endswith",
            PC,
            "  s: {CommandLine|endswith: ''}\n  condition: s",
        ),
        rule(
            "cli-null",
            PC,
            "  s: {CommandLine: null, Image|endswith: /kworker}\n  condition: s",
        ),
        rule("execve-any", AU, "  s: {type: EXECVE}\n  condition: s"),
        rule(
            "syscall-execve",
            AU,
            "  s: {type: SYSCALL, SYSCALL: execve, comm: kworker}\n  condition: s",
        ),
    ]
    .concat();
    let mut ev = Evaluator::new(rules(&yaml), EngineConfig::default());
    let parent = pref(1, "/usr/lib/systemd/systemd", "/sbin/init");
    let Payload::ProcessStart(mut s) = start(9, "/usr/bin/kworker", &[], "root", &parent) else {
        unreachable!()
    };
    s.argv_missing = true;
    let p = Payload::ProcessStart(s.clone());
    assert_eq!(fired(&mut ev, T0, &p, &[]), ["cli-null", "syscall-execve"]);
    assert_eq!(ProcessCreation::new(&s, &[]).field("CommandLine"), None);
    // The same process with argv read: an exec like any other.
    s.argv_missing = false;
    s.argv = vec![b"kworker".to_vec()];
    s.command_line = "kworker".into();
    let p = Payload::ProcessStart(s);
    assert_eq!(
        fired(&mut ev, T0, &p, &[]),
        ["cli-endswith", "execve-any", "syscall-execve"]
    );
}

#[test]
fn file_operations_map_to_file_event_and_audit_records() {
    let yaml = [
        rule("cron", FE, "  s: {TargetFilename|startswith: /etc/cron.d/}\n  condition: s"),
        rule("renamed-from-tmp", FE, "  s: {SourceFilename|startswith: /tmp/, TargetFilename|startswith: /etc/}\n  condition: s"),
        rule("path-create", AU, "  s: {type: PATH, nametype: CREATE, name|startswith: /etc/cron.d/}\n  condition: s"),
        rule("path-delete", AU, "  s: {type: PATH, nametype: DELETE, name|startswith: /etc/cron.d/}\n  condition: s"),
        rule("chmod", AU, "  s: {type: SYSCALL, SYSCALL: fchmodat, comm: chmod}\n  condition: s"),
    ]
    .concat();
    let set = rules(&yaml);
    let mut ev = Evaluator::new(set.clone(), EngineConfig::default());
    let vi = pref(50, "/usr/bin/vim.basic", "vi /etc/cron.d/x");
    let at = |op| file(op, "/etc/cron.d/x", &vi, "root");
    let cases: Vec<(Payload, Vec<&str>)> = vec![
        (at(FileOperation::Create), vec!["cron", "path-create"]),
        (at(FileOperation::Modify), vec!["cron"]),
        // The close ends a change its create or first write already reported.
        (at(FileOperation::CloseWrite), vec![]),
        (at(FileOperation::Open), vec![]),
        (at(FileOperation::Delete), vec!["path-delete"]),
        (at(FileOperation::Chown), vec![]),
        (at(FileOperation::Unspecified), vec![]),
        (
            file(
                FileOperation::Chmod,
                "/etc/cron.d/x",
                &pref(51, "/usr/bin/chmod", "chmod 600 /etc/cron.d/x"),
                "root",
            ),
            vec!["chmod"],
        ),
        (
            rename(
                "/tmp/x",
                "/etc/cron.d/x",
                &pref(52, "/usr/bin/mv", "mv /tmp/x /etc/cron.d/x"),
            ),
            vec!["cron", "path-create", "renamed-from-tmp"],
        ),
        (rename("/etc/cron.d/x", "/root/x", &vi), vec!["path-delete"]),
    ];
    for (p, want) in &cases {
        assert_eq!(&fired(&mut ev, T0, p, &[]), want, "{p:?}");
        assert_eq!(
            &fired_via_json(&set, T0, p, &[]),
            want,
            "JSON form of {p:?}"
        );
    }
}

#[test]
fn connections_made_and_accepted_reach_rules_listeners_do_not() {
    let yaml = [
        rule("out-4444", NC, "  s: {Initiated: 'true', DestinationPort: 4444, Protocol: tcp}\n  condition: s"),
        rule("out-yaml-bool", NC, "  s: {Initiated: true, DestinationIp: 203.0.113.9}\n  condition: s"),
        rule("ssh-in", NC, "  s: {Initiated: 'false', DestinationPort: 22, SourceIp|cidr: 198.51.100.0/24}\n  condition: s"),
        rule("bash-not-local", NC, "  s: {Image|endswith: /bash}\n  f: {DestinationIp: [127.0.0.1, 0.0.0.0]}\n  condition: s and not f"),
        rule("v6", NC, "  s: {DestinationIsIpv6: 'true', SourceIsIpv6: 'true'}\n  condition: s"),
    ]
    .concat();
    let set = rules(&yaml);
    let mut ev = Evaluator::new(set.clone(), EngineConfig::default());
    let sshd = pref(700, "/usr/sbin/sshd", "sshd: /usr/sbin/sshd -D");
    let bash = pref(800, "/usr/bin/bash", "bash");
    let cases: Vec<(Payload, Vec<&str>)> = vec![
        (
            outbound("/tmp/.x/agent", "203.0.113.9", 4444),
            vec!["out-4444", "out-yaml-bool"],
        ),
        (
            net(
                Direction::Inbound,
                TransportProtocol::Tcp,
                ("10.0.0.5", 22),
                ("198.51.100.7", 50022),
                &sshd,
            ),
            vec!["ssh-in"],
        ),
        // A shell listening on a port is no connection to anywhere.
        (
            net(
                Direction::Listen,
                TransportProtocol::Tcp,
                ("0.0.0.0", 9001),
                ("", 0),
                &bash,
            ),
            vec![],
        ),
        (
            net(
                Direction::Outbound,
                TransportProtocol::Tcp,
                ("10.0.0.5", 40000),
                ("198.51.100.7", 443),
                &bash,
            ),
            vec!["bash-not-local"],
        ),
        (
            net(
                Direction::Outbound,
                TransportProtocol::Udp,
                ("2001:db8::5", 40000),
                ("2001:db8::1", 53),
                &sshd,
            ),
            vec!["v6"],
        ),
    ];
    for (p, want) in &cases {
        assert_eq!(&fired(&mut ev, T0, p, &[]), want, "{p:?}");
        assert_eq!(
            &fired_via_json(&set, T0, p, &[]),
            want,
            "JSON form of {p:?}"
        );
    }
}

#[test]
fn a_rule_for_every_linux_source_fires_once_per_record() {
    let set = rules(&rule(
        "any-linux",
        "{product: linux}",
        "  k: [evil]\n  condition: k",
    ));
    let mut ev = Evaluator::new(set, EngineConfig::default());
    let p = start(
        5,
        "/tmp/evil",
        &["/tmp/evil", "--now"],
        "alice",
        &pref(1, "/usr/bin/bash", "bash"),
    );
    let mut events = 0;
    for_each_event(&p, &[], |_| events += 1);
    assert_eq!(events, 4, "process_creation, SYSCALL, EXECVE, PATH");
    assert_eq!(ev.evaluate(T0, &p, &[]).len(), 1);
}

#[test]
fn audit_records_of_an_exec_carry_what_auditd_writes() {
    let p = start(
        77,
        "/usr/bin/kmod",
        &["insmod", "/tmp/rk.ko"],
        "root",
        &pref(1, "/usr/bin/bash", "bash"),
    );
    let mut shapes = Vec::new();
    for_each_event(&p, &[], |e| {
        if e.source() == Source::Auditd {
            let fields: Vec<String> = e
                .fields()
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_text()))
                .collect();
            shapes.push(fields.join(" "));
        }
        if let SigmaEvent::AuditExecve(x) = e {
            assert_eq!(x.field("a9"), None);
        }
    });
    assert_eq!(
        shapes,
        [
            "type=SYSCALL SYSCALL=execve success=yes exe=/usr/bin/kmod comm=insmod pid=77 ppid=1 uid=0 euid=0 gid=0 egid=0 auid=1000 ses=3 tty=pts0 UID=root",
            "type=EXECVE argc=2 a0=insmod a1=/tmp/rk.ko",
            "type=PATH name=/usr/bin/kmod nametype=NORMAL",
        ]
    );
}

#[test]
fn json_lines_keep_vigil_data_beside_the_event_and_give_other_records_their_own_form() {
    let p = file(
        FileOperation::Create,
        "/etc/cron.d/x",
        &pref(50, "/usr/bin/vi", "vi x"),
        "root",
    );
    let Payload::File(mut f) = p else {
        unreachable!()
    };
    f.persistence = "cron".into();
    f.hashes = Some(vigil_proto::v1::Hashes {
        sha256: vec![0xab; 32],
        ..Default::default()
    });
    let rec = Record {
        sequence: 42,
        time_unix_ns: T0,
        payload: Some(Payload::File(f)),
        ..Default::default()
    };
    let lines = to_json_lines(&rec, &[]);
    // file_event, SYSCALL, PATH.
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["logsource"]["category"], "file_event");
    assert_eq!(first["time"], T0);
    assert_eq!(first["event"]["TargetFilename"], "/etc/cron.d/x");
    assert_eq!(first["vigil"]["sequence"], 42);
    assert_eq!(first["vigil"]["persistence"], "cron");
    assert_eq!(first["vigil"]["operation"], "create");
    assert_eq!(first["vigil"]["hashes"]["sha256"], "ab".repeat(32));
    assert_eq!(lines[1]["logsource"]["service"], "auditd");
    assert!(lines[1]["logsource"].get("category").is_none());
    let exit = Record {
        sequence: 43,
        time_unix_ns: T0,
        payload: Some(Payload::ProcessExit(Default::default())),
        ..Default::default()
    };
    let lines = to_json_lines(&exit, &[]);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].get("event").is_none());
    assert_eq!(lines[0]["vigil"]["record"], "process_exit");
    let health = Record {
        sequence: 44,
        time_unix_ns: T0,
        payload: Some(Payload::Health(vigil_proto::v1::SensorHealth {
            rules_loaded: 3,
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_eq!(to_json_lines(&health, &[])[0]["health"]["rules_loaded"], 3);
}

#[test]
fn a_file_hash_reaches_rules_as_sysmon_writes_it() {
    let by = pref(7, "/usr/bin/curl", "curl -o /tmp/x");
    let Payload::File(mut f) = file(FileOperation::Create, "/tmp/x", &by, "u") else {
        unreachable!()
    };
    let fe = vigil_evaluate::FileCreation { file: &f };
    assert_eq!(fe.field("Hashes"), None);
    f.hashes = Some(vigil_proto::v1::Hashes {
        sha256: vec![0xab, 0x01, 0xff],
        ..Default::default()
    });
    let fe = vigil_evaluate::FileCreation { file: &f };
    assert_eq!(
        fe.field("Hashes").map(|v| v.as_text().into_owned()),
        Some("SHA256=AB01FF".into())
    );
    let set = rules(&rule(
        "hash",
        FE,
        "  s: {Hashes|contains: 'sha256=ab01ff'}\n  condition: s",
    ));
    let mut ev = Evaluator::new(set, EngineConfig::default());
    assert_eq!(fired(&mut ev, T0, &Payload::File(f), &[]), ["hash"]);
}

#[test]
fn detections_carry_the_rules_author_and_references() {
    let yaml = "title: t\nid: t\nauthor: Vigil project\nreferences: [https://example.org/r]\n\
                logsource: {product: linux, category: file_event}\n\
                detection: {s: {TargetFilename: /tmp/x}, condition: s}\n";
    let mut ev = Evaluator::new(rules(yaml), EngineConfig::default());
    let by = pref(7, "/usr/bin/curl", "curl");
    let d = ev.evaluate(T0, &file(FileOperation::Create, "/tmp/x", &by, "u"), &[]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].author, "Vigil project");
    assert_eq!(d[0].references, ["https://example.org/r"]);
    assert!(d[0].devices.is_empty());
}
