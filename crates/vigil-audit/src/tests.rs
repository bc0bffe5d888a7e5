#![allow(clippy::unwrap_used)]

use super::*;
use crate::head::head_path;
use crate::lines::{Line, read_line};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const KEY: [u8; 32] = [0x42; 32];
const OTHER_KEY: [u8; 32] = [0x17; 32];

fn call(i: u64) -> NewEntry {
    NewEntry {
        time_unix_ns: 1_700_000_000_000_000_000 + i as i64,
        actor: format!("analyst-{i}"),
        actor_id: format!("tok-{i}"),
        role: "analyst".into(),
        tenant_id: "acme".into(),
        method: "vigil.v1.Alerts/ListAlerts".into(),
        // Control characters and non-ASCII, so escapes are part of what is checked.
        summary: format!("limit=10 query=\"a\tb\u{1f}é\" n={i}"),
        result: "ok".into(),
        peer: "127.0.0.1:5000".into(),
    }
}

fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit").join("acme.log")
}

/// A flushed, closed log of `n` entries.
fn written(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path, &KEY).unwrap();
    for i in 1..=n {
        log.append(call(i)).unwrap();
    }
    log.flush().unwrap();
    (dir, path)
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    lines.retain(|l| !l.is_empty());
    lines
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    fs::write(path, lines.concat()).unwrap();
}

#[track_caller]
fn assert_bad(report: &VerifyReport, line: u64, words: &str) {
    assert!(!report.ok, "verify passed, expected line {line}: {words}");
    assert_eq!(report.first_bad_line, line, "{}", report.reason);
    assert!(
        report.reason.contains(words),
        "reason {:?} lacks {words:?}",
        report.reason
    );
    assert!(
        report.reason.starts_with(&format!("line {line}:")) || !report.reason.starts_with("line "),
        "{}",
        report.reason
    );
}

#[test]
fn append_list_and_reopen_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head(), (0, ZERO_MAC.to_owned()));
    let first: Vec<Entry> = (1..=5).map(|i| log.append(call(i)).unwrap()).collect();
    assert_eq!(first[0].prev, ZERO_MAC);
    for w in first.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
        assert_eq!(w[1].prev, w[0].mac);
    }
    assert_eq!(log.list(0, 100, |_| true).unwrap(), first);
    assert_eq!(log.head(), (5, first[4].mac.clone()));
    drop(log);

    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head(), (5, first[4].mac.clone()));
    let sixth = log.append(call(6)).unwrap();
    assert_eq!((sixth.seq, sixth.prev.as_str()), (6, first[4].mac.as_str()));
    let report = log.verify().unwrap();
    assert!(report.ok, "{}", report.reason);
    assert_eq!((report.entries, report.first_bad_line), (6, 0));
    drop(log);
    let report = verify_file(&path, &KEY).unwrap();
    assert!(report.ok && report.entries == 6, "{report:?}");
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = written(1);
    for p in [path.clone(), head_path(&path)] {
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    let d = fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(d.permissions().mode() & 0o777, 0o700);
}

#[test]
fn list_pages_filters_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&log_path(&dir), &KEY).unwrap();
    for i in 1..=20 {
        log.append(call(i)).unwrap();
    }
    let seqs = |v: Vec<Entry>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.list(0, 3, |_| true).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(log.list(3, 3, |_| true).unwrap()), [4, 5, 6]);
    assert_eq!(seqs(log.list(18, 10, |_| true).unwrap()), [19, 20]);
    assert_eq!(seqs(log.list(20, 10, |_| true).unwrap()), Vec::<u64>::new());
    assert_eq!(seqs(log.list(0, 0, |_| true).unwrap()), Vec::<u64>::new());
    assert_eq!(
        seqs(log.list(4, 3, |e| e.seq % 5 == 0).unwrap()),
        [5, 10, 15]
    );
}

#[test]
fn long_fields_are_cut_on_a_char_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&log_path(&dir), &KEY).unwrap();
    let e = log
        .append(NewEntry {
            summary: "é".repeat(2000),
            actor: "x".repeat(300),
            peer: "p".repeat(MAX_FIELD_BYTES),
            ..call(1)
        })
        .unwrap();
    assert!(e.summary.len() <= MAX_SUMMARY_BYTES && e.summary.ends_with('…'));
    assert!(e.summary.len() > MAX_SUMMARY_BYTES - 5);
    assert_eq!(e.actor.len(), MAX_FIELD_BYTES);
    assert!(e.actor.ends_with('…'));
    assert_eq!(
        e.peer,
        "p".repeat(MAX_FIELD_BYTES),
        "a field at the bound is kept whole"
    );
    assert_eq!(log.list(0, 1, |_| true).unwrap(), vec![e]);
    assert!(log.verify().unwrap().ok);
}

#[test]
fn every_changed_byte_of_an_entry_is_found() {
    let (_dir, path) = written(9);
    let original = lines_of(&path);
    let target = 5; // 1-based
    let line = &original[target - 1];
    for pos in 0..line.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut lines = original.clone();
            lines[target - 1][pos] ^= flip;
            write_lines(&path, &lines);
            let report = verify_file(&path, &KEY).unwrap();
            assert!(!report.ok, "byte {pos} ^ {flip:#x} not detected");
            assert_eq!(
                report.first_bad_line, target as u64,
                "byte {pos} ^ {flip:#x}: {}",
                report.reason
            );
            assert_eq!(report.entries, target as u64 - 1);
        }
    }
    // The MAC names the change when the line still parses.
    let mut lines = original.clone();
    let text = String::from_utf8(lines[target - 1].clone()).unwrap();
    lines[target - 1] = text
        .replace("\"result\":\"ok\"", "\"result\":\"no\"")
        .into_bytes();
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        5,
        "MAC mismatch: entry changed",
    );
    write_lines(&path, &original);
    assert!(verify_file(&path, &KEY).unwrap().ok);
}

#[test]
fn a_removed_middle_line_is_found() {
    let (_dir, path) = written(10);
    let mut lines = lines_of(&path);
    lines.remove(6); // seq 7, line 7
    write_lines(&path, &lines);
    let r = verify_file(&path, &KEY).unwrap();
    assert_bad(&r, 7, "seq 8 follows 6: entries removed");
    assert_eq!(r.entries, 6);
}

#[test]
fn a_removed_first_line_is_found() {
    let (_dir, path) = written(4);
    let mut lines = lines_of(&path);
    lines.remove(0);
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        1,
        "seq 2 but the log starts at seq 1: entries removed",
    );
}

#[test]
fn swapped_lines_are_found() {
    let (_dir, path) = written(10);
    let mut lines = lines_of(&path);
    lines.swap(2, 3);
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        3,
        "seq 4 follows 2: entries reordered",
    );

    let mut lines = lines_of(&path);
    lines.swap(2, 3); // back in order
    lines.swap(1, 7);
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        2,
        "seq 8 follows 1: entries reordered",
    );
}

#[test]
fn a_repeated_line_is_found() {
    let (_dir, path) = written(5);
    let mut lines = lines_of(&path);
    let dup = lines[2].clone();
    lines.insert(3, dup);
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        4,
        "seq 3 follows 3: entries reordered or repeated",
    );
}

#[test]
fn entries_cut_off_the_end_are_found() {
    for n in [1usize, 3, 10] {
        let (_dir, path) = written(10);
        let lines = lines_of(&path);
        write_lines(&path, &lines[..10 - n]);
        let r = verify_file(&path, &KEY).unwrap();
        let kept = 10 - n as u64;
        assert_bad(
            &r,
            kept + 1,
            &format!(
                "log ends at seq {kept} but its head checkpoint says 10: entries removed from the end"
            ),
        );
        assert_eq!(r.entries, kept);
    }
}

#[test]
fn a_missing_or_changed_head_is_found() {
    let (_dir, path) = written(4);
    let head = head_path(&path);
    let original = fs::read(&head).unwrap();

    fs::remove_file(&head).unwrap();
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        5,
        "head checkpoint is missing",
    );

    // A checkpoint that claims an earlier end, with its numbers edited.
    let text = String::from_utf8(original.clone()).unwrap();
    fs::write(&head, text.replace("\"seq\":4", "\"seq\":3")).unwrap();
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        5,
        "head checkpoint was changed: its MAC does not match",
    );

    for pos in 0..original.len() {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x20;
        fs::write(&head, &bytes).unwrap();
        let r = verify_file(&path, &KEY).unwrap();
        assert!(!r.ok, "head byte {pos} changed unnoticed");
        assert_eq!(r.first_bad_line, 5, "{}", r.reason);
    }
    fs::write(&head, &original).unwrap();
    assert!(verify_file(&path, &KEY).unwrap().ok);

    // A checkpoint written under the key for another log ending at the same seq.
    let other_dir = tempfile::tempdir().unwrap();
    let other = log_path(&other_dir);
    let other_log = AuditLog::open(&other, &KEY).unwrap();
    for i in 1..=3 {
        other_log.append(call(100 + i)).unwrap();
    }
    other_log.flush().unwrap();
    fs::copy(head_path(&other), &head).unwrap();
    let mut lines = lines_of(&path);
    lines.truncate(3);
    write_lines(&path, &lines);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        3,
        "the head checkpoint names seq 3 with another MAC",
    );
}

#[test]
fn a_line_forged_without_the_key_is_found() {
    let (_dir, path) = written(6);
    let log = AuditLog::open(&path, &KEY).unwrap();
    let (seq, mac) = log.head();
    drop(log);
    let forged = Entry::seal(&OTHER_KEY, seq + 1, &mac, call(99));
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&forged.to_line().unwrap()).unwrap();
    drop(f);
    assert_bad(&verify_file(&path, &KEY).unwrap(), 7, "MAC mismatch");
    assert!(!verify_file(&path, &OTHER_KEY).unwrap().ok);
}

#[test]
fn a_torn_last_line_is_removed_on_open() {
    let (_dir, path) = written(5);
    let next = {
        let log = AuditLog::open(&path, &KEY).unwrap();
        let (seq, mac) = log.head();
        Entry::seal(&KEY, seq + 1, &mac, call(6))
    };
    let line = next.to_line().unwrap();
    let intact = fs::read(&path).unwrap();
    for cut in [1, 10, line.len() / 2, line.len() - 2] {
        let mut bytes = intact.clone();
        bytes.extend_from_slice(&line[..cut]);
        fs::write(&path, &bytes).unwrap();
        assert_bad(
            &verify_file(&path, &KEY).unwrap(),
            6,
            "the last line has no newline",
        );
        let log = AuditLog::open(&path, &KEY).unwrap();
        assert_eq!(fs::read(&path).unwrap(), intact, "cut at {cut}");
        assert_eq!(log.head().0, 5);
        drop(log);
    }
    // A whole entry missing only its newline is kept.
    let mut bytes = intact.clone();
    bytes.extend_from_slice(&line[..line.len() - 1]);
    fs::write(&path, &bytes).unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head(), (6, next.mac.clone()));
    assert_eq!(log.append(call(7)).unwrap().seq, 7);
    let r = log.verify().unwrap();
    assert!(r.ok && r.entries == 7, "{r:?}");
}

#[test]
fn a_torn_only_line_leaves_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    drop(AuditLog::open(&path, &KEY).unwrap());
    fs::write(&path, b"{\"seq\":1,\"time_unix").unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(log.append(call(1)).unwrap().seq, 1);
    assert!(log.verify().unwrap().ok);
}

#[test]
fn concurrent_appends_make_one_gap_free_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(&log_path(&dir), &KEY).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..250 {
                    log.append(call(t * 1000 + i)).unwrap();
                    if i % 50 == 0 {
                        log.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = log.list(0, usize::MAX, |_| true).unwrap();
    assert_eq!(all.len(), 2000);
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    let r = log.verify().unwrap();
    assert!(r.ok && r.entries == 2000, "{r:?}");
}

#[test]
fn verify_and_list_see_only_whole_lines_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(&log_path(&dir), &KEY).unwrap());
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..2000 {
                log.append(call(i)).unwrap();
            }
        })
    };
    for _ in 0..20 {
        let r = log.verify().unwrap();
        assert!(r.ok, "{r:?}");
        log.list(0, usize::MAX, |_| true).unwrap();
    }
    writer.join().unwrap();
    assert!(log.verify().unwrap().ok);
}

#[test]
fn truncation_stays_reported_after_reopening_and_flushing() {
    let (_dir, path) = written(10);
    let lines = lines_of(&path);
    write_lines(&path, &lines[..7]);
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head().0, 10, "the chain goes on from the checkpoint");
    let e = log.append(call(11)).unwrap();
    assert_eq!(e.seq, 11);
    log.flush().unwrap();
    assert_bad(
        &log.verify().unwrap(),
        8,
        "seq 11 follows 7: entries removed",
    );
    drop(log);
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        8,
        "seq 11 follows 7: entries removed",
    );
}

#[test]
fn a_deleted_head_stays_reported_after_reopening_and_flushing() {
    let (_dir, path) = written(5);
    fs::remove_file(head_path(&path)).unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    let e = log.append(call(6)).unwrap();
    assert_eq!((e.seq, e.prev.as_str()), (6, ZERO_MAC));
    log.flush().unwrap();
    assert_bad(&log.verify().unwrap(), 6, "the chain restarts here");
    // And the entries after the restart are still chained and checked.
    log.append(call(7)).unwrap();
    assert_bad(&log.verify().unwrap(), 6, "the chain restarts here");
}

#[test]
fn an_emptied_log_with_its_head_is_reported() {
    let (_dir, path) = written(3);
    fs::write(&path, b"").unwrap();
    assert_bad(
        &verify_file(&path, &KEY).unwrap(),
        1,
        "log ends at seq 0 but its head checkpoint says 3",
    );
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.append(call(4)).unwrap().seq, 4);
    assert_bad(
        &log.verify().unwrap(),
        1,
        "seq 4 but the log starts at seq 1: entries removed",
    );
}

#[test]
fn a_forged_last_line_is_kept_and_the_chain_goes_on_from_the_last_intact_entry() {
    let (_dir, path) = written(4);
    let forged = Entry::seal(&OTHER_KEY, 1_000, ZERO_MAC, call(9));
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&forged.to_line().unwrap()).unwrap();
    drop(f);
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head().0, 4);
    assert_eq!(log.append(call(5)).unwrap().seq, 5);
    assert_bad(&log.verify().unwrap(), 5, "MAC mismatch");
}

#[test]
fn an_overlong_line_is_corrupt_not_allocated() {
    let (_dir, path) = written(3);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
    bytes.push(b'\n');
    fs::write(&path, &bytes).unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head().0, 3);
    match log.list(0, 100, |_| true) {
        Err(AuditError::Corrupt {
            line: 4, reason, ..
        }) => assert!(reason.contains("longer than")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        log.list(0, 3, |_| true).unwrap().len(),
        3,
        "lines before it still list"
    );
    log.append(call(4)).unwrap();
    assert_bad(&log.verify().unwrap(), 4, "longer than 65536 bytes");
}

#[test]
fn an_overlong_unterminated_tail_is_kept_on_a_line_of_its_own() {
    let (_dir, path) = written(2);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE_BYTES));
    fs::write(&path, &bytes).unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert_eq!(log.head().0, 2);
    log.append(call(3)).unwrap();
    assert_eq!(lines_of(&path).len(), 4);
    assert_bad(&log.verify().unwrap(), 3, "longer than");
}

#[test]
fn garbage_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let samples: Vec<Vec<u8>> = vec![
        b"\n".to_vec(),
        b"\n\n\n".to_vec(),
        b"null\n".to_vec(),
        b"{\"seq\":18446744073709551615}\n".to_vec(),
        vec![0u8; 5000],
        vec![0xff; 100],
        b"{}\n{\"seq\":1}".to_vec(),
    ];
    for (i, bytes) in samples.iter().enumerate() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::write(head_path(&path), &bytes[..bytes.len().min(50)]).unwrap();
        let r = verify_file(&path, &KEY).unwrap();
        assert!(!r.ok, "sample {i}");
        let log = AuditLog::open(&path, &KEY).unwrap();
        let _ = log.list(0, 10, |_| true);
        log.append(call(1)).unwrap();
        // A file that was one torn line is empty after open: emptying a log and
        // its checkpoint both is no more visible than deleting both.
        let emptied = !bytes.contains(&b'\n');
        assert_eq!(log.verify().unwrap().ok, emptied, "sample {i}");
    }
}

#[test]
fn a_maximal_seq_from_disk_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    drop(AuditLog::open(&path, &KEY).unwrap());
    let last = Entry::seal(&KEY, u64::MAX, ZERO_MAC, call(1));
    fs::write(&path, last.to_line().unwrap()).unwrap();
    crate::head::write(&head_path(&path), &KEY, u64::MAX, &last.mac).unwrap();
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert!(matches!(
        log.append(call(2)),
        Err(AuditError::SeqExhausted { .. })
    ));
}

#[test]
fn a_log_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = AuditLog::open(&path, &KEY).unwrap();
    assert!(matches!(
        AuditLog::open(&path, &KEY),
        Err(AuditError::Locked { .. })
    ));
    drop(log);
    AuditLog::open(&path, &KEY).unwrap();
}

#[test]
fn the_flusher_checkpoints_and_flushes_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let log = Arc::new(AuditLog::open(&path, &KEY).unwrap());
    let flusher = spawn_flusher(Arc::clone(&log), Duration::from_millis(20)).unwrap();
    log.append(call(1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while verify_file(&path, &KEY).unwrap().entries == 0 || !verify_file(&path, &KEY).unwrap().ok {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Long interval: only the drop can write this one's checkpoint.
    drop(flusher);
    let flusher = spawn_flusher(Arc::clone(&log), Duration::from_secs(3600)).unwrap();
    log.append(call(2)).unwrap();
    drop(flusher);
    let r = verify_file(&path, &KEY).unwrap();
    assert!(r.ok && r.entries == 2, "{r:?}");
    let head = fs::read_to_string(head_path(&path)).unwrap();
    assert!(head.starts_with("{\"seq\":2,"), "{head}");
}

#[test]
fn a_new_log_has_a_checkpoint_before_its_first_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(&dir);
    let _log = AuditLog::open(&path, &KEY).unwrap();
    assert!(head_path(&path).exists());
    let r = verify_file(&path, &KEY).unwrap();
    assert!(r.ok && r.entries == 0, "{r:?}");
}

#[test]
fn canonical_bytes_are_as_documented() {
    let e = Entry::seal(
        &KEY,
        3,
        ZERO_MAC,
        NewEntry {
            actor: "al".into(),
            time_unix_ns: -1,
            ..Default::default()
        },
    );
    let b = e.canonical_bytes();
    let mut want = b"vigil-audit v1 entry\n".to_vec();
    want.extend_from_slice(&3u64.to_be_bytes());
    want.extend_from_slice(&(-1i64).to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 2, b'a', b'l']);
    for _ in 0..7 {
        want.extend_from_slice(&[0, 0, 0, 0]);
    }
    want.extend_from_slice(&[0, 0, 0, 64]);
    want.extend_from_slice(ZERO_MAC.as_bytes());
    assert_eq!(b, want);
    // Moving bytes between fields changes the MAC.
    let moved = Entry::seal(
        &KEY,
        3,
        ZERO_MAC,
        NewEntry {
            actor: "a".into(),
            actor_id: "l".into(),
            time_unix_ns: -1,
            ..Default::default()
        },
    );
    assert_ne!(e.mac, moved.mac);
}

#[test]
fn lines_are_bounded_at_the_edge() {
    for (len, expect) in [
        (MAX_LINE_BYTES - 1, Line::Text { terminated: true }),
        (MAX_LINE_BYTES, Line::Text { terminated: true }),
        (MAX_LINE_BYTES + 1, Line::TooLong { terminated: true }),
    ] {
        let mut input = vec![b'a'; len];
        input.extend_from_slice(b"\nnext\n");
        // A small buffer, so lines span many fills.
        let mut r = std::io::BufReader::with_capacity(1000, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, MAX_LINE_BYTES).unwrap(),
            expect,
            "len {len}"
        );
        assert!(buf.len() <= MAX_LINE_BYTES);
        assert_eq!(
            read_line(&mut r, &mut buf, MAX_LINE_BYTES).unwrap(),
            Line::Text { terminated: true }
        );
        assert_eq!(buf, b"next");
        assert_eq!(
            read_line(&mut r, &mut buf, MAX_LINE_BYTES).unwrap(),
            Line::Eof
        );
    }
}

#[test]
fn the_log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();
    assert_send_sync::<FlusherHandle>();
}

#[test]
fn a_borrowed_append_writes_what_an_owned_one_does() {
    let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
    let entries: Vec<NewEntry> = (1..=20u64)
        .map(|i| {
            let mut e = call(i);
            if i % 3 == 0 {
                // Over the bounds, cut inside multi-byte characters.
                e.summary = long('é', MAX_SUMMARY_BYTES);
                e.actor = long('€', MAX_FIELD_BYTES);
                e.peer = long('x', MAX_FIELD_BYTES + 1);
            }
            e
        })
        .collect();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (log_path(&a), log_path(&b));
    let owned = AuditLog::open(&pa, &KEY).unwrap();
    let borrowed = AuditLog::open(&pb, &KEY).unwrap();
    for e in &entries {
        let got = owned.append(e.clone()).unwrap();
        assert_eq!(borrowed.append_ref(&e.as_ref()).unwrap(), got.seq);
        assert_eq!(borrowed.head(), (got.seq, got.mac.clone()));
        // The Entry append returns is the line it wrote.
        assert_eq!(
            lines_of(&pa).last().unwrap(),
            &got.to_line().unwrap(),
            "entry {}",
            got.seq
        );
        assert_eq!(got, Entry::seal(&KEY, got.seq, &got.prev, e.clone()));
    }
    owned.flush().unwrap();
    borrowed.flush().unwrap();
    assert_eq!(fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
    let report = borrowed.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, 20);
}
