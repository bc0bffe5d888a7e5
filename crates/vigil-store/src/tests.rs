#![allow(clippy::unwrap_used)]

use crate::*;
use std::sync::Arc;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

fn store(dir: &std::path::Path, clock: Arc<ManualClock>) -> ControlStore {
    let mut opts = StoreOptions::local(dir).unwrap();
    opts.clock = clock;
    opts.regions.push(Region {
        name: "eu".into(),
        dir: dir.join("eu"),
    });
    ControlStore::open(opts).unwrap()
}

fn local(dir: &std::path::Path) -> ControlStore {
    store(dir, Arc::new(ManualClock::now()))
}

#[test]
fn tokens_carry_role_and_tenant_expire_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    assert!(matches!(
        c.create_tenant(Some("a"), "A", "local", 90),
        Err(StoreError::TenantExists(_))
    ));
    assert!(matches!(
        c.create_tenant(Some("../x"), "X", "local", 90),
        Err(StoreError::BadIdentifier(_))
    ));
    assert!(matches!(
        c.create_tenant(None, "X", "local", 10),
        Err(StoreError::Invalid(_))
    ));
    let (secret, info) = c
        .create_api_token(Some("a"), Role::Analyst, "ann", 0, "test")
        .unwrap();
    assert_eq!(
        c.check_api_token(&secret).unwrap(),
        TokenCheck::Valid(info.clone())
    );
    assert_eq!(
        c.check_api_token("vgl_api_nope").unwrap(),
        TokenCheck::Unknown
    );
    // Only the digest is stored.
    drop(c);
    let raw = std::fs::read(dir.path().join("control.redb")).unwrap();
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let c = store(dir.path(), Arc::clone(&clock));
    // An operator token has no tenant; other roles need one.
    assert!(
        c.create_api_token(Some("a"), Role::Operator, "op", 0, "t")
            .is_err()
    );
    assert!(
        c.create_api_token(None, Role::Admin, "adm", 0, "t")
            .is_err()
    );
    let (op, _) = c
        .create_api_token(None, Role::Operator, "op", 0, "t")
        .unwrap();
    assert!(
        matches!(c.check_api_token(&op).unwrap(), TokenCheck::Valid(t) if t.tenant_id.is_none())
    );
    // Expiry by the injected clock.
    let soon = clock.now_unix_ns() + 1_000;
    let (exp, _) = c
        .create_api_token(Some("a"), Role::ReadOnly, "brief", soon, "t")
        .unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        c.check_api_token(&exp).unwrap(),
        TokenCheck::Expired(_)
    ));
    // Revocation is scoped by tenant.
    c.create_tenant(Some("b"), "B", "local", 90).unwrap();
    assert!(matches!(
        c.revoke_api_token(Some("b"), &info.id),
        Err(StoreError::NotFound(_))
    ));
    c.revoke_api_token(Some("a"), &info.id).unwrap();
    assert!(matches!(
        c.check_api_token(&secret).unwrap(),
        TokenCheck::Revoked(_)
    ));
    assert_eq!(c.api_tokens(Some("a")).unwrap().len(), 2);
    assert_eq!(c.api_tokens(None).unwrap().len(), 1);
}

#[test]
fn enrollment_tokens_expire_are_revoked_and_count_uses() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let (t, info) = c.create_enrollment_token("a", DAY, "adm").unwrap();
    assert_eq!(
        c.redeem_enrollment_token(&t).unwrap(),
        Redeemed::Tenant("a".into())
    );
    assert_eq!(
        c.redeem_enrollment_token("nope").unwrap(),
        Redeemed::Unknown
    );
    let (e, _) = c
        .create_enrollment_token("a", Duration::ZERO, "adm")
        .unwrap();
    assert_eq!(c.redeem_enrollment_token(&e).unwrap(), Redeemed::Expired);
    assert!(c.revoke_enrollment_token("b", &info.id).is_err());
    c.revoke_enrollment_token("a", &info.id).unwrap();
    assert_eq!(c.redeem_enrollment_token(&t).unwrap(), Redeemed::Revoked);
    let list = c.enrollment_tokens("a").unwrap();
    assert_eq!(list.iter().find(|x| x.id == info.id).unwrap().uses, 1);
}

#[test]
fn regions_fix_where_data_lives_and_unserved_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = local(dir.path());
        c.create_tenant(Some("e"), "E", "eu", 90).unwrap();
        assert!(matches!(
            c.create_tenant(Some("x"), "X", "mars", 90),
            Err(StoreError::RegionNotServed { .. })
        ));
        let t = c.open_tenant("e").unwrap();
        t.commit_batch("d", c.now(), &[(1, b"r".to_vec())], &[])
            .unwrap();
        assert!(dir.path().join("eu/tenants/e/data.redb").exists());
        assert!(!dir.path().join("tenants/e").exists());
    }
    // The same store opened by a server that serves only `local`.
    let opts = StoreOptions::local(dir.path()).unwrap();
    let c = ControlStore::open(opts).unwrap();
    let err = c.open_tenant("e").unwrap_err();
    assert!(matches!(err, StoreError::RegionNotServed { .. }), "{err}");
    assert!(err.to_string().contains("region `eu`"));
}

#[test]
fn resent_batches_store_once_and_data_is_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.open_tenant("a").unwrap();
    let marker = b"PLAINTEXT-MARKER-cat /etc/shadow".to_vec();
    let recs: Vec<(u64, Vec<u8>)> = (1..=3).map(|i| (i, marker.clone())).collect();
    let alerts = vec![(2, format!("{:020}-x", c.now()), marker.clone())];
    let first = t.commit_batch("d", c.now(), &recs, &alerts).unwrap();
    assert_eq!(
        (first.accepted, first.duplicates, first.stored_through),
        (3, 0, 3)
    );
    let again = t.commit_batch("d", c.now(), &recs, &alerts).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 3));
    assert_eq!(t.records("d", 1, 100).unwrap().len(), 2);
    assert_eq!(
        t.alerts(&AlertQuery::default(), 10, |_: &[u8]| true)
            .unwrap()
            .len(),
        1
    );
    drop(t);
    drop(c);
    for f in ["tenants/a/data.redb", "control.redb"] {
        let raw = std::fs::read(dir.path().join(f)).unwrap();
        assert!(
            !raw.windows(16).any(|w| w == &marker[..16]),
            "plaintext in {f}"
        );
    }
    let c = local(dir.path());
    assert_eq!(
        c.open_tenant("a")
            .unwrap()
            .records("d", 0, 10)
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn retention_removes_only_what_is_older_than_the_tenants_setting() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("short"), "S", "local", 30).unwrap();
    c.create_tenant(Some("long"), "L", "local", 180).unwrap();
    let t0 = clock.now_unix_ns();
    for id in ["short", "long"] {
        let t = c.open_tenant(id).unwrap();
        let recs: Vec<_> = (1..=5000).map(|i| (i, vec![1u8; 8])).collect();
        t.commit_batch("d", t0, &recs, &[(1, format!("{t0:020}-a"), vec![2])])
            .unwrap();
    }
    clock.advance(DAY * 31);
    let t1 = clock.now_unix_ns();
    for id in ["short", "long"] {
        c.open_tenant(id)
            .unwrap()
            .commit_batch(
                "d",
                t1,
                &[(5001, vec![3])],
                &[(5001, format!("{t1:020}-b"), vec![4])],
            )
            .unwrap();
    }
    let purged = c.enforce_retention().unwrap();
    let got = |id: &str| purged.iter().find(|p| p.0 == id).unwrap().1;
    assert_eq!(
        got("short"),
        Purged {
            records: 5000,
            alerts: 1
        }
    );
    assert_eq!(got("long"), Purged::default());
    let s = c.open_tenant("short").unwrap();
    assert_eq!(s.records("d", 0, 10).unwrap(), vec![(5001, vec![3])]);
    assert_eq!(
        s.alerts(&AlertQuery::default(), 10, |_: &[u8]| true)
            .unwrap()
            .len(),
        1
    );
    // A re-send of purged sequences is still a duplicate, not new data.
    let again = s.commit_batch("d", t1, &[(3, vec![9])], &[]).unwrap();
    assert_eq!(again.duplicates, 1);
    // Retention is the tenant admin's to change, within bounds.
    assert!(c.set_retention("long", 200).is_err());
    c.set_retention("long", 30).unwrap();
    let purged = c.enforce_retention().unwrap();
    assert_eq!(
        purged.iter().find(|p| p.0 == "long").unwrap().1.records,
        5000
    );
}

#[test]
fn deleting_a_tenant_destroys_its_keys_then_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    c.create_tenant(Some("b"), "B", "local", 90).unwrap();
    let (tok, _) = c
        .create_api_token(Some("a"), Role::Admin, "adm", 0, "t")
        .unwrap();
    let held = c.open_tenant("a").unwrap();
    held.commit_batch("d", c.now(), &[(1, b"x".to_vec())], &[])
        .unwrap();
    c.open_tenant("b")
        .unwrap()
        .commit_batch("d", c.now(), &[(1, b"y".to_vec())], &[])
        .unwrap();
    let old_master: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let bytes = c.delete_tenant("a").unwrap();
    assert!(bytes > 0);
    // A store opened before the deletion reads nothing any more.
    assert!(held.records("d", 0, 10).is_err());
    assert!(matches!(
        c.open_tenant("a"),
        Err(StoreError::UnknownTenant(_))
    ));
    assert_eq!(c.check_api_token(&tok).unwrap(), TokenCheck::Unknown);
    assert!(!dir.path().join("tenants/a").exists());
    // The master key its data key was wrapped under is gone too.
    let now_master: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(old_master.iter().all(|k| !now_master.contains(k)));
    // Others are untouched, across a restart; the id is never reused.
    drop(c);
    let c = local(dir.path());
    assert_eq!(
        c.open_tenant("b")
            .unwrap()
            .records("d", 0, 10)
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        c.create_tenant(Some("a"), "A2", "local", 90),
        Err(StoreError::TenantExists(_))
    ));
    assert!(c.deleted_tenant("a").unwrap().is_some());
}

#[test]
fn data_key_rotation_reseals_while_both_keys_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.open_tenant("a").unwrap();
    let recs: Vec<_> = (1..=5000u64)
        .map(|i| (i, i.to_le_bytes().to_vec()))
        .collect();
    let alerts: Vec<_> = (1..=10u64)
        .map(|i| (i, format!("{i:020}"), vec![i as u8]))
        .collect();
    t.commit_batch("d", c.now(), &recs, &alerts).unwrap();
    assert_eq!(c.rotate_data_key("a").unwrap(), 2);
    // New data under v2, old still readable under v1.
    t.commit_batch("d", c.now(), &[(5001, vec![7])], &[])
        .unwrap();
    assert_eq!(t.records("d", 0, 10_000).unwrap().len(), 5001);
    assert_eq!(
        c.tenant("a").unwrap().unwrap().data_key_versions(),
        vec![1, 2]
    );
    assert_eq!(c.tenants_mid_rotation().unwrap(), vec!["a".to_string()]);
    let n = c.finish_data_key_rotation("a").unwrap();
    assert_eq!(n, 5010);
    assert_eq!(c.tenant("a").unwrap().unwrap().data_key_versions(), vec![2]);
    let all = t.records("d", 0, 10_000).unwrap();
    assert_eq!(all[41].1, 42u64.to_le_bytes().to_vec());
    assert_eq!(
        t.alerts(&AlertQuery::default(), 100, |_: &[u8]| true)
            .unwrap()
            .len(),
        10
    );
    // After a restart only v2 exists and everything opens.
    drop(t);
    drop(c);
    let c = local(dir.path());
    assert_eq!(
        c.open_tenant("a")
            .unwrap()
            .records("d", 0, 10_000)
            .unwrap()
            .len(),
        5001
    );
}

#[test]
fn master_key_rotation_rewraps_every_key_and_retires_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    for id in ["a", "b"] {
        c.create_tenant(Some(id), id, "local", 90).unwrap();
        c.open_tenant(id)
            .unwrap()
            .commit_batch("d", c.now(), &[(1, vec![1])], &[])
            .unwrap();
    }
    let (_, dep_key) = c.deployment_audit().unwrap();
    let a_key = c.tenant_audit_key("a").unwrap();
    let (new, old, n) = c.rotate_master_key().unwrap();
    assert_ne!(new, old);
    assert_eq!(n, 2);
    drop(c);
    let c = local(dir.path());
    assert_eq!(
        std::fs::read_dir(dir.path().join("keys")).unwrap().count(),
        1
    );
    for id in ["a", "b"] {
        assert_eq!(
            c.open_tenant(id)
                .unwrap()
                .records("d", 0, 10)
                .unwrap()
                .len(),
            1
        );
    }
    assert_eq!(*c.deployment_audit().unwrap().1, *dep_key);
    assert_eq!(*c.tenant_audit_key("a").unwrap(), *a_key);
}

#[test]
fn grants_need_an_admin_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    c.create_tenant(Some("b"), "B", "local", 90).unwrap();
    let (_, op) = c
        .create_api_token(None, Role::Operator, "op", 0, "t")
        .unwrap();
    let g = c.request_grant("a", &op, "ticket 42", 30).unwrap();
    assert_eq!(g.state_at(clock.now_unix_ns()), "pending");
    assert!(c.active_grant(&op.id, "a").unwrap().is_none());
    // Another tenant's admin cannot decide it.
    assert!(
        c.decide_grant("b", &g.id, Decision::Approve, "adm-b")
            .is_err()
    );
    let ok = c
        .decide_grant("a", &g.id, Decision::Approve, "adm-a")
        .unwrap();
    assert_eq!(ok.decided_by, "adm-a");
    assert!(c.active_grant(&op.id, "a").unwrap().is_some());
    assert!(c.active_grant(&op.id, "b").unwrap().is_none());
    assert!(
        c.decide_grant("a", &g.id, Decision::Approve, "adm-a")
            .is_err()
    );
    clock.advance(Duration::from_secs(31 * 60));
    assert!(c.active_grant(&op.id, "a").unwrap().is_none());
    assert_eq!(
        c.grants(Some("a"), None).unwrap()[0].state_at(clock.now_unix_ns()),
        "expired"
    );
    let g2 = c.request_grant("a", &op, "again", 30).unwrap();
    c.decide_grant("a", &g2.id, Decision::Approve, "adm-a")
        .unwrap();
    c.decide_grant("a", &g2.id, Decision::Revoke, "adm-a")
        .unwrap();
    assert!(c.active_grant(&op.id, "a").unwrap().is_none());
    assert!(
        c.request_grant("a", &op, "too long", MAX_GRANT_MINUTES + 1)
            .is_err()
    );
}

#[test]
fn devices_are_revoked_within_their_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    c.put_device(&DeviceRecord {
        device_id: "d1".into(),
        tenant_id: "a".into(),
        hostname: "h".into(),
        enrolled_unix_ns: 1,
        revoked: false,
        revoked_unix_ns: 0,
        public_key: Vec::new(),
    })
    .unwrap();
    // A device enrolled before public keys were kept gets one once; it never changes after.
    c.set_device_public_key("d1", &[4, 1, 2]).unwrap();
    c.set_device_public_key("d1", &[4, 9, 9]).unwrap();
    assert_eq!(c.device("d1").unwrap().unwrap().public_key, [4, 1, 2]);
    assert!(matches!(
        c.revoke_device("b", "d1"),
        Err(StoreError::NotFound(_))
    ));
    assert!(!c.device("d1").unwrap().unwrap().revoked);
    assert!(c.revoke_device("a", "d1").unwrap().revoked);
    assert_eq!(c.devices("a").unwrap().len(), 1);
}

#[test]
fn device_rows_without_a_public_key_still_read() {
    let old = br#"{"device_id":"d1","tenant_id":"a","hostname":"h","enrolled_unix_ns":1,"revoked":false}"#;
    let d: DeviceRecord = serde_json::from_slice(old).unwrap();
    assert!(d.public_key.is_empty());
    let d = DeviceRecord {
        public_key: vec![4, 0xab],
        ..d
    };
    let row = serde_json::to_string(&d).unwrap();
    assert!(row.contains(r#""public_key":"04ab""#), "{row}");
    assert_eq!(serde_json::from_str::<DeviceRecord>(&row).unwrap(), d);
}

/// Records of varied sizes (a few larger than a chunk), each naming its sequence.
fn varied(seqs: impl Iterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| {
        let len = match s % 97 {
            0 => 40_000,
            n => (n as usize * 37) % 1500,
        };
        let mut v = s.to_le_bytes().to_vec();
        v.resize(8 + len, (s % 251) as u8);
        (s, v)
    })
    .collect()
}

#[test]
fn chunked_records_read_back_from_any_point_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.open_tenant("a").unwrap();
    // Two devices; gaps in the sequences; several chunks per batch.
    let a1 = varied((1..=300).map(|i| i * 2));
    let b1 = varied(1..=50);
    let a2 = varied(601..=900);
    let out = t
        .commit_batches(
            &[
                NewBatch {
                    device: "a",
                    received_ns: c.now(),
                    records: &a1,
                    index: &[],
                    alerts: &[],
                },
                NewBatch {
                    device: "b",
                    received_ns: c.now(),
                    records: &b1,
                    index: &[],
                    alerts: &[],
                },
                // The same device again in the same transaction, partly a re-send.
                NewBatch {
                    device: "a",
                    received_ns: c.now(),
                    records: &[a1[299].clone(), a2[0].clone()],
                    index: &[],
                    alerts: &[],
                },
                NewBatch {
                    device: "a",
                    received_ns: c.now(),
                    records: &a2,
                    index: &[],
                    alerts: &[],
                },
            ],
            &crate::NoMerge,
        )
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|o| (o.accepted, o.duplicates, o.stored_through, o.previous_high))
            .collect::<Vec<_>>(),
        vec![
            (300, 0, 600, 0),
            (50, 0, 50, 0),
            (1, 1, 601, 600),
            (299, 1, 900, 601)
        ]
    );
    assert_eq!(t.record_count().unwrap(), 650);
    let all: Vec<(u64, Vec<u8>)> = a1.iter().chain(&a2).cloned().collect();
    assert_eq!(t.records("a", 0, usize::MAX).unwrap(), all);
    for after in [0, 1, 2, 3, 97, 194, 599, 600, 601, 777, 899, 900, 5000] {
        for limit in [0, 1, 7, 1000] {
            let want: Vec<_> = all
                .iter()
                .filter(|(s, _)| *s > after)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(
                t.records("a", after, limit).unwrap(),
                want,
                "after {after} limit {limit}"
            );
        }
    }
    assert_eq!(t.records("b", 0, 100).unwrap(), b1);
    assert!(t.records("c", 0, 100).unwrap().is_empty());
    // Survives a reopen.
    drop(t);
    drop(c);
    let c = local(dir.path());
    let t = c.open_tenant("a").unwrap();
    assert_eq!(t.records("a", 600, 1).unwrap(), vec![a2[0].clone()]);
    assert_eq!(t.record_count().unwrap(), 650);
}

#[test]
fn a_file_with_per_record_rows_is_upgraded_to_chunks_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t0 = clock.now_unix_ns();
    let old_a = varied(1..=2500);
    let old_b = varied(1..=10);
    {
        let t = c.open_tenant("a").unwrap();
        t.write_legacy("a", t0, &old_a[..1200]).unwrap();
        t.write_legacy("b", t0, &old_b).unwrap();
        t.write_legacy("a", t0 + 1, &old_a[1200..]).unwrap();
    }
    drop(c);
    clock.advance(DAY * 31);
    let c = store(dir.path(), Arc::clone(&clock));
    let t = c.open_tenant("a").unwrap();
    assert_eq!(t.record_count().unwrap(), 2510);
    assert_eq!(t.records("a", 0, usize::MAX).unwrap(), old_a);
    assert_eq!(t.records("a", 1199, 2).unwrap(), old_a[1199..1201].to_vec());
    assert_eq!(t.records("b", 0, 100).unwrap(), old_b);
    // The high-water marks stand: a re-send is a duplicate.
    let again = t.commit_batch("a", c.now(), &old_a[..5], &[]).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 5));
    let new = varied(2501..=2510);
    assert_eq!(
        t.commit_batch("a", c.now(), &new, &[]).unwrap().accepted,
        10
    );
    // Retention finds the upgraded records by their received time.
    let purged = c.enforce_retention().unwrap();
    assert_eq!(purged.iter().find(|p| p.0 == "a").unwrap().1.records, 2510);
    assert_eq!(t.records("a", 0, usize::MAX).unwrap(), new);
    assert_eq!(t.record_count().unwrap(), 10);
    // The old tables are gone: nothing to upgrade at the next open.
    drop(t);
    drop(c);
    let c = store(dir.path(), clock);
    assert_eq!(c.open_tenant("a").unwrap().record_count().unwrap(), 10);
}

#[test]
fn a_reseal_of_more_chunks_than_one_transaction_copies_reseals_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.tenant_store("a").unwrap();
    // About 9 MB of chunks, one record each: more than one re-seal transaction takes.
    let recs: Vec<(u64, Vec<u8>)> = (1..=300u64).map(|i| (i, vec![i as u8; 30_000])).collect();
    t.commit_batch("d", c.now(), &recs, &[]).unwrap();
    c.rotate_data_key("a").unwrap();
    assert_eq!(c.finish_data_key_rotation("a").unwrap(), 300);
    assert_eq!(t.records("d", 0, usize::MAX).unwrap(), recs);
}

/// Grows a stored alert (a count byte, then the newest bytes) unless it starts with `closed`.
struct Counting;

impl AlertMerge for Counting {
    fn merge(&self, stored: &[u8], new: &[u8]) -> Option<Vec<u8>> {
        if stored.starts_with(b"closed") {
            return None;
        }
        let mut grown = vec![stored.first().copied().unwrap_or(0).wrapping_add(1)];
        grown.extend_from_slice(new);
        Some(grown)
    }
}

fn grouped(seq: u64, id: &str, bytes: &[u8], group: &[u8]) -> NewAlert {
    NewAlert {
        seq,
        id: id.into(),
        bytes: bytes.to_vec(),
        group: Some(group.to_vec()),
    }
}

fn commit_alerts(
    t: &TenantStore,
    now: i64,
    records: &[(u64, Vec<u8>)],
    alerts: &[NewAlert],
) -> BatchOutcome {
    commit_alerts_with(t, now, records, alerts, &Counting)
}

#[test]
fn repeats_of_a_group_grow_one_alert_exactly_once_and_the_index_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.open_tenant("a").unwrap();
    let marker = b"MARKER-rule-9f3a2c7e-/usr/bin/cat /etc/shadow";
    let now = c.now();
    let recs = |r: std::ops::RangeInclusive<u64>| r.map(|s| (s, vec![1u8])).collect::<Vec<_>>();
    let first = commit_alerts(
        &t,
        now,
        &recs(1..=2),
        &[
            grouped(1, "00000000000000000001-a", &[0], marker),
            grouped(2, "00000000000000000002-b", &[0], marker),
        ],
    );
    assert_eq!(first.alerts.len(), 2);
    assert!(!first.alerts[0].merged && first.alerts[1].merged);
    assert_eq!(first.alerts[1].id, "00000000000000000001-a");
    // A re-sent batch grows nothing.
    let again = commit_alerts(
        &t,
        now,
        &recs(1..=2),
        &[
            grouped(1, "00000000000000000001-a", &[0], marker),
            grouped(2, "00000000000000000002-b", &[0], marker),
        ],
    );
    assert!(again.alerts.is_empty());
    assert_eq!(t.alert("00000000000000000001-a").unwrap().unwrap()[0], 1);
    // Another group is another alert; a closed alert is not grown.
    let other = commit_alerts(
        &t,
        now,
        &recs(3..=3),
        &[grouped(3, "00000000000000000003-c", &[0], b"other")],
    );
    assert!(!other.alerts[0].merged);
    let t2 = t
        .update_alert(
            "00000000000000000001-a",
            &mut |_| Some(b"closed".to_vec()),
            &NoMerge,
        )
        .unwrap();
    assert_eq!(t2, AlertUpdate::Updated(b"closed".to_vec()));
    let after = commit_alerts(
        &t,
        now,
        &recs(4..=4),
        &[grouped(4, "00000000000000000004-d", &[0], marker)],
    );
    assert!(!after.alerts[0].merged);
    assert_eq!(
        t.alerts(&AlertQuery::default(), 10, |_: &[u8]| true)
            .unwrap()
            .len(),
        3
    );
    // The group's latest alert is found after a key rotation too.
    c.rotate_data_key("a").unwrap();
    let t = c.open_tenant("a").unwrap();
    let rotated = commit_alerts(
        &t,
        now,
        &recs(5..=5),
        &[grouped(5, "00000000000000000005-e", &[0], marker)],
    );
    assert_eq!(
        (rotated.alerts[0].merged, rotated.alerts[0].id.as_str()),
        (true, "00000000000000000004-d")
    );
    // Retention drops index entries with their alerts.
    assert_eq!(t.purge_before(i64::MAX).unwrap().alerts, 3);
    let fresh = commit_alerts(
        &t,
        now,
        &recs(6..=6),
        &[grouped(6, "00000000000000000006-f", &[0], marker)],
    );
    assert!(!fresh.alerts[0].merged);
    drop(t);
    drop(c);
    let raw = std::fs::read(dir.path().join("tenants/a/data.redb")).unwrap();
    assert!(
        !raw.windows(12).any(|w| w == &marker[..12]),
        "plaintext in the tenant file"
    );
}

#[test]
fn update_alert_changes_in_one_transaction_refuses_and_misses() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = Arc::new(c.open_tenant("a").unwrap());
    let id = "00000000000000000001-a";
    t.commit_batch("d", c.now(), &[(1, vec![1])], &[(1, id.into(), Vec::new())])
        .unwrap();
    assert_eq!(
        t.update_alert("nope", &mut |_| Some(vec![]), &NoMerge)
            .unwrap(),
        AlertUpdate::Missing
    );
    assert_eq!(
        t.update_alert(id, &mut |_| None, &NoMerge).unwrap(),
        AlertUpdate::Refused
    );
    // Eight threads append a byte each, 25 times: none is lost.
    let threads: Vec<_> = (0..8u8)
        .map(|n| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    t.update_alert(
                        id,
                        &mut |old| {
                            let mut v = old.to_vec();
                            v.push(n);
                            Some(v)
                        },
                        &NoMerge,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(t.alert(id).unwrap().unwrap().len(), 200);
}

/// A record and its index entry: found under `guid:<g>`, counted under `hash:<h>`.
fn indexed(seq: u64, time: i64, kind: u8, guid: &str, hash: &str) -> ((u64, Vec<u8>), RecordIndex) {
    let mut body = format!("record {seq} of {guid} hash {hash} t {time} k {kind} ").into_bytes();
    body.resize(900, b'.');
    (
        (seq, body),
        RecordIndex {
            time_ns: time,
            kind,
            terms: vec![format!("guid\0{guid}").into_bytes()],
            sightings: vec![format!("hash\0{hash}").into_bytes()],
            latest: kind == 5,
            optional: kind == 8,
        },
    )
}

/// What the server's record view would say of a record made by [`indexed`].
fn derive(bytes: &[u8]) -> Option<RecordIndex> {
    let text = std::str::from_utf8(bytes).ok()?;
    let w: Vec<&str> = text.split(' ').collect();
    let (guid, hash) = (w.get(3)?, w.get(5)?);
    let kind: u8 = w.get(9)?.parse().ok()?;
    Some(RecordIndex {
        time_ns: w.get(7)?.parse().ok()?,
        kind,
        terms: vec![format!("guid\0{guid}").into_bytes()],
        sightings: vec![format!("hash\0{hash}").into_bytes()],
        latest: kind == 5,
        optional: kind == 8,
    })
}

fn commit_indexed(
    t: &TenantStore,
    device: &str,
    now: i64,
    rows: &[((u64, Vec<u8>), RecordIndex)],
) -> BatchOutcome {
    let records: Vec<(u64, Vec<u8>)> = rows.iter().map(|r| r.0.clone()).collect();
    let index: Vec<RecordIndex> = rows.iter().map(|r| r.1.clone()).collect();
    let b = NewBatch {
        device,
        received_ns: now,
        records: &records,
        index: &index,
        alerts: &[],
    };
    t.commit_batches(std::slice::from_ref(&b), &NoMerge)
        .unwrap()
        .pop()
        .unwrap()
}

/// The records of the chunks a lookup of `material` opens.
fn by_term(t: &TenantStore, material: &[u8], device: Option<&str>) -> Vec<(String, u64)> {
    scanned(
        t,
        &Scan {
            term: Some(material),
            device,
            ..Scan::default()
        },
    )
    .0
}

fn scanned(t: &TenantStore, q: &Scan<'_>) -> (Vec<(String, u64)>, ScanStats) {
    let mut seen = Vec::new();
    let stats = t
        .scan(q, &mut |d, s, _| {
            seen.push((d.to_owned(), s));
            true
        })
        .unwrap();
    (seen, stats)
}

#[test]
fn the_index_finds_records_by_value_time_and_kind_and_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t = c.open_tenant("a").unwrap();
    let now = c.now();
    // Device a: 200 records over 200 seconds (about 35 per chunk), a rare
    // process in records 150..=151; device b: the same hash once.
    let a: Vec<_> = (1..=200u64)
        .map(|s| {
            let guid = if (150..=151).contains(&s) {
                "rare-guid-SECRET"
            } else {
                "common"
            };
            indexed(
                s,
                s as i64 * 1_000_000_000,
                (s % 3) as u8,
                guid,
                if s == 7 { "h7" } else { "h" },
            )
        })
        .collect();
    commit_indexed(&t, "a", now, &a);
    commit_indexed(
        &t,
        "b",
        now,
        &[indexed(1, 500_000_000_000, 5, "b-guid", "h7")],
    );
    // Before the indexer ran, lookups open the chunks it has not reached.
    let rare = b"guid\0rare-guid-SECRET".to_vec();
    let before = scanned(
        &t,
        &Scan {
            term: Some(&rare),
            ..Scan::default()
        },
    );
    assert!(before.0.contains(&("a".into(), 150)));
    assert_eq!(t.sightings(b"hash\0h7", &derive).unwrap().len(), 2);
    // The indexer, in steps; then lookups cross generations (small in tests).
    assert_eq!(t.index_pending(&derive, 3).unwrap(), 3);
    while t.index_pending(&derive, 2).unwrap() > 0 {}
    assert!(t.index_generation() > 3, "{}", t.index_generation());

    // By value: only the chunks holding it are opened; every record of them is visited.
    let rare = b"guid\0rare-guid-SECRET".to_vec();
    let (seen, stats) = scanned(
        &t,
        &Scan {
            term: Some(&rare),
            ..Scan::default()
        },
    );
    assert_eq!(stats.chunks, 1, "one chunk holds both records");
    assert!(seen.contains(&("a".into(), 150)) && seen.contains(&("a".into(), 151)));
    assert!(seen.len() < 60);
    let (seen, _) = scanned(
        &t,
        &Scan {
            term: Some(b"guid\0nobody"),
            ..Scan::default()
        },
    );
    assert!(seen.is_empty());
    // A term restricted to a device.
    let bg = b"guid\0b-guid".to_vec();
    assert_eq!(by_term(&t, &bg, Some("a")).len(), 0);
    assert_eq!(by_term(&t, &bg, Some("b")), vec![("b".into(), 1)]);

    // By time: chunks outside the bounds stay closed.
    let all = scanned(
        &t,
        &Scan {
            device: Some("a"),
            ..Scan::default()
        },
    );
    assert_eq!(all.0.len(), 200);
    let window = scanned(
        &t,
        &Scan {
            device: Some("a"),
            since_ns: Some(100_000_000_000),
            until_ns: Some(110_000_000_000),
            ..Scan::default()
        },
    );
    assert!(window.0.contains(&("a".into(), 100)) && window.0.contains(&("a".into(), 110)));
    assert!(
        window.1.chunks < all.1.chunks && window.1.chunks <= 2,
        "{:?} of {:?}",
        window.1,
        all.1
    );
    // By kind: device b holds only kind 5.
    assert_eq!(
        scanned(
            &t,
            &Scan {
                kinds: 1 << 5,
                ..Scan::default()
            }
        )
        .0,
        vec![("b".into(), 1)]
    );
    // Stopping.
    let mut n = 0;
    let st = t
        .scan(&Scan::default(), &mut |_, _, _| {
            n += 1;
            n < 3
        })
        .unwrap();
    assert!(st.stopped && n == 3);

    // Sightings: per device, first and last event time, count; a re-send counts nothing.
    let s = t.sightings(b"hash\0h7", &derive).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (
            s[0].device.as_str(),
            s[0].first_ns,
            s[0].last_ns,
            s[0].count
        ),
        ("a", 7_000_000_000, 7_000_000_000, 1)
    );
    assert_eq!(s[1].device, "b");
    let again = commit_indexed(&t, "a", now, &a[..10]);
    assert_eq!(again.duplicates, 10);
    assert_eq!(t.sightings(b"hash\0h7", &derive).unwrap()[0].count, 1);
    assert_eq!(t.sightings(b"hash\0h", &derive).unwrap()[0].count, 199);

    // Latest: the newest by event time wins, whatever order it arrives in.
    let (time, bytes) = t.latest("b", 5).unwrap().unwrap();
    assert_eq!(time, 500_000_000_000);
    assert!(bytes.starts_with(b"record 1 of b-guid"));
    commit_indexed(&t, "b", now, &[indexed(2, 100, 5, "older", "x")]);
    assert_eq!(t.latest("b", 5).unwrap().unwrap().0, 500_000_000_000);
    commit_indexed(
        &t,
        "b",
        now,
        &[indexed(3, 600_000_000_000, 5, "newer", "x")],
    );
    assert!(
        t.latest("b", 5)
            .unwrap()
            .unwrap()
            .1
            .starts_with(b"record 3 of newer")
    );
    assert!(t.latest("a", 5).unwrap().is_none());

    // No value reaches the file in plaintext (terms, sightings, latest).
    drop(t);
    let mut raw = Vec::new();
    for e in walk(dir.path()) {
        raw.extend(std::fs::read(e).unwrap());
    }
    for needle in [
        &b"rare-guid-SECRET"[..],
        b"b-guid",
        b"hash\0h7",
        b"record 3 of",
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn retention_removes_index_entries_with_their_chunks_and_rotation_keeps_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t = c.open_tenant("a").unwrap();
    let old_time = c.now();
    commit_indexed(&t, "d", c.now(), &[indexed(1, old_time, 0, "old", "ho")]);
    t.index_pending(&derive, usize::MAX).unwrap();
    // A data key rotation: entries made under the old key are still found.
    c.rotate_data_key("a").unwrap();
    clock.advance(DAY * 20);
    commit_indexed(&t, "d", c.now(), &[indexed(2, c.now(), 0, "new", "hn")]);
    t.index_pending(&derive, usize::MAX).unwrap();
    assert_eq!(by_term(&t, b"guid\0old", None).len(), 1);
    assert_eq!(by_term(&t, b"guid\0new", None).len(), 1);
    assert_eq!(t.sightings(b"hash\0ho", &derive).unwrap().len(), 1);
    // The rotation finished: the record index rebuilt under the new key (the
    // server does it first), everything re-sealed, the old key destroyed:
    // old values are still found.
    assert_eq!(t.rebuild_index(&derive).unwrap(), 2);
    c.finish_data_key_rotation("a").unwrap();
    let found = |m: &[u8]| by_term(&t, m, None).len();
    assert_eq!(found(b"guid\0old"), 1);
    let s = t.sightings(b"hash\0ho", &derive).unwrap();
    assert_eq!((s.len(), s[0].count), (1, 1));
    // A sighting of the same value after the rotation adds to the same row.
    commit_indexed(&t, "d", c.now(), &[indexed(3, c.now(), 0, "new", "ho")]);
    t.index_pending(&derive, usize::MAX).unwrap();
    assert_eq!(t.sightings(b"hash\0ho", &derive).unwrap()[0].count, 2);
    clock.advance(DAY * 15);
    let purged = c.enforce_retention().unwrap();
    assert_eq!(purged.iter().find(|p| p.0 == "a").unwrap().1.records, 1);
    assert_eq!(found(b"guid\0old"), 0);
    assert_eq!(found(b"guid\0new"), 2);
    // Last seen after the cutoff: the sighting stays.
    assert_eq!(t.sightings(b"hash\0ho", &derive).unwrap().len(), 1);
    assert_eq!(
        scanned(&t, &Scan::default()).0,
        vec![("d".into(), 2), ("d".into(), 3)]
    );
    assert_eq!(t.sightings(b"hash\0hn", &derive).unwrap().len(), 1);
}

/// Alerts are "<tag>,<tag>,…"; each tag is a term.
struct Tagged;

impl AlertMerge for Tagged {
    fn merge(&self, _: &[u8], _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn terms(&self, alert: &[u8]) -> Vec<Vec<u8>> {
        alert.split(|b| *b == b',').map(<[u8]>::to_vec).collect()
    }
}

#[test]
fn alert_postings_find_alerts_by_value_newest_first_and_follow_updates_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::now());
    let c = store(dir.path(), Arc::clone(&clock));
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t = c.open_tenant("a").unwrap();
    let base = c.now();
    // 300 alerts: every third is "red", every fifth "big"; all "sev-1".
    let mut alerts = Vec::new();
    for i in 1..=300u64 {
        let mut tags = vec!["sev-1".to_string()];
        if i % 3 == 0 {
            tags.push("red".into());
        }
        if i % 5 == 0 {
            tags.push("big".into());
        }
        alerts.push(NewAlert {
            seq: i,
            id: format!("{:020}-{i:04}", base + i as i64),
            bytes: tags.join(",").into_bytes(),
            group: None,
        });
    }
    let records = varied(1..=300);
    let b = NewBatch {
        device: "d",
        received_ns: base,
        records: &records,
        index: &[],
        alerts: &alerts,
    };
    t.commit_batches(std::slice::from_ref(&b), &Tagged).unwrap();
    let ids = |q: &AlertQuery<'_>, limit| -> Vec<u64> {
        t.alerts(q, limit, |_| true)
            .unwrap()
            .iter()
            .map(|(id, _)| id[21..].parse().unwrap())
            .collect()
    };
    let red = vec![b"red".to_vec()];
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&red),
                ..Default::default()
            },
            3
        ),
        [300, 297, 294]
    );
    // Pages continue below the token.
    let tok = format!("{:020}-{:04}", base + 294, 294);
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&red),
                before: Some(&tok),
                ..Default::default()
            },
            2
        ),
        [291, 288]
    );
    // Several values: merged newest first, each alert once.
    let either = vec![b"red".to_vec(), b"big".to_vec()];
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&either),
                ..Default::default()
            },
            5
        ),
        [300, 297, 295, 294, 291]
    );
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&either),
                ..Default::default()
            },
            1000
        )
        .len(),
        140
    );
    // Both (a conjunction): red and big, i.e. multiples of 15.
    let both = vec![vec![b"red".to_vec()], vec![b"big".to_vec()]];
    let q = AlertQuery {
        all_of: &both,
        ..Default::default()
    };
    assert_eq!(ids(&q, 3), [300, 285, 270]);
    assert_eq!(ids(&q, 1000).len(), 20);
    // Received-since stops the walk.
    let q = AlertQuery {
        all_of: std::slice::from_ref(&red),
        received_since_ns: Some(base + 290),
        ..Default::default()
    };
    assert_eq!(ids(&q, 100), [300, 297, 294, 291]);
    // An update re-indexes: 300 is no longer red, and is green.
    let id300 = format!("{:020}-0300", base + 300);
    t.update_alert(&id300, &mut |_| Some(b"sev-1,green".to_vec()), &Tagged)
        .unwrap();
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&red),
                ..Default::default()
            },
            1
        ),
        [297]
    );
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: &[vec![b"green".to_vec()]],
                ..Default::default()
            },
            10
        ),
        [300]
    );
    assert!(
        ids(
            &AlertQuery {
                all_of: &[vec![b"none".to_vec()]],
                ..Default::default()
            },
            10
        )
        .is_empty()
    );
    // A data key rotation re-keys the postings before the old key goes.
    c.rotate_data_key("a").unwrap();
    c.finish_data_key_rotation("a").unwrap();
    let red_after = ids(
        &AlertQuery {
            all_of: std::slice::from_ref(&red),
            ..Default::default()
        },
        2,
    );
    assert_eq!(red_after, [297, 294]);
    let green = vec![b"green".to_vec()];
    assert_eq!(
        ids(
            &AlertQuery {
                all_of: std::slice::from_ref(&green),
                ..Default::default()
            },
            10
        ),
        [300]
    );
    // Retention takes the postings with the alerts.
    clock.advance(DAY * 31);
    c.enforce_retention().unwrap();
    assert!(
        ids(
            &AlertQuery {
                all_of: &[vec![b"sev-1".to_vec()]],
                ..Default::default()
            },
            10
        )
        .is_empty()
    );
    drop(t);
    let raw: Vec<u8> = walk(dir.path())
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(!raw.windows(5).any(|w| w == b"green"));
}

#[test]
fn alerts_stored_before_postings_get_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t = c.open_tenant("a").unwrap();
    let now = c.now();
    let alerts: Vec<NewAlert> = (1..=5u64)
        .map(|i| NewAlert {
            seq: i,
            id: format!("{:020}-{i}", now),
            bytes: if i % 2 == 0 {
                b"even".to_vec()
            } else {
                b"odd".to_vec()
            },
            group: None,
        })
        .collect();
    // Stored without terms, as before postings existed.
    commit_alerts_with(&t, now, &varied(1..=5), &alerts, &NoMerge);
    let even = vec![b"even".to_vec()];
    let q = AlertQuery {
        all_of: std::slice::from_ref(&even),
        ..Default::default()
    };
    assert!(t.alerts(&q, 10, |_| true).unwrap().is_empty());
    assert_eq!(t.index_unindexed_alerts(&Tagged).unwrap(), 5);
    assert_eq!(t.alerts(&q, 10, |_| true).unwrap().len(), 2);
    assert_eq!(t.index_unindexed_alerts(&Tagged).unwrap(), 0, "once");
}

fn commit_alerts_with(
    t: &TenantStore,
    now: i64,
    records: &[(u64, Vec<u8>)],
    alerts: &[NewAlert],
    merge: &dyn AlertMerge,
) -> BatchOutcome {
    let b = NewBatch {
        device: "d",
        received_ns: now,
        records,
        index: &[],
        alerts,
    };
    t.commit_batches(std::slice::from_ref(&b), merge)
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn an_alert_put_outside_a_batch_is_stored_sealed_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.tenant_store("a").unwrap();
    let id = "00000000000000000001-abc";
    t.put_alert(id, b"first", &Tagged).unwrap();
    let first = vec![b"first".to_vec()];
    let q = AlertQuery {
        all_of: std::slice::from_ref(&first),
        ..Default::default()
    };
    assert_eq!(t.alerts(&q, 10, &mut |_| true).unwrap().len(), 1, "indexed");
    assert!(matches!(
        t.put_alert(id, b"second", &Tagged),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(t.alert(id).unwrap().as_deref(), Some(&b"first"[..]));
    let listed = t.alerts(&AlertQuery::default(), 10, &mut |_| true).unwrap();
    assert_eq!(listed, [(id.to_owned(), b"first".to_vec())]);
}

#[test]
fn level_counts_follow_commits_resends_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    let t = c.open_tenant("a").unwrap();
    let now = c.now();
    // Kind 8 is optional (diagnostics) in `indexed`; each record is 900 bytes.
    let rows: Vec<_> = (1..=10)
        .map(|s| indexed(s, now, if s % 5 == 0 { 8 } else { 0 }, "g", "h"))
        .collect();
    commit_indexed(&t, "d1", now, &rows);
    let want = LevelCounts {
        required_records: 8,
        required_bytes: 8 * 900,
        optional_records: 2,
        optional_bytes: 2 * 900,
    };
    assert_eq!(t.level_counts().unwrap(), want);
    // A re-send counts nothing twice.
    let out = commit_indexed(&t, "d1", now, &rows);
    assert_eq!(out.duplicates, 10);
    assert_eq!(t.level_counts().unwrap(), want);
    // Another device's optional record.
    commit_indexed(&t, "d2", now, &[indexed(1, now, 8, "g", "h")]);
    assert_eq!(t.level_counts().unwrap().optional_records, 3);
    // Retention takes off what it drops.
    t.purge_before(i64::MAX).unwrap();
    assert_eq!(t.level_counts().unwrap(), LevelCounts::default());
}

#[test]
fn privacy_policy_versions_and_one_pseudonym_key_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let c = local(dir.path());
    c.create_tenant(Some("a"), "A", "local", 90).unwrap();
    c.create_tenant(Some("b"), "B", "local", 90).unwrap();
    assert_eq!(
        c.tenant("a").unwrap().unwrap().privacy,
        PrivacyPolicy::default()
    );
    let p = PrivacyPolicy {
        version: 99,
        optional_data: true,
        pseudonymize: true,
        redact: vec![("ticket".into(), "TKT-(?P<secret>[0-9]+)".into())],
    };
    let rec = c.set_privacy("a", p.clone()).unwrap();
    // The version is the store's to set: it only ever increases.
    assert_eq!(rec.privacy.version, 1);
    assert_eq!(rec.privacy.redact, p.redact);
    assert_eq!(c.set_privacy("a", p).unwrap().privacy.version, 2);
    assert!(matches!(
        c.set_privacy("zz", PrivacyPolicy::default()),
        Err(StoreError::UnknownTenant(_))
    ));
    // The key is made once and kept (across a master key rotation too);
    // another tenant's differs.
    let ka = c.tenant_pseudonym_key("a").unwrap();
    assert_eq!(*ka, *c.tenant_pseudonym_key("a").unwrap());
    assert_ne!(*ka, *c.tenant_pseudonym_key("b").unwrap());
    c.rotate_master_key().unwrap();
    assert_eq!(*ka, *c.tenant_pseudonym_key("a").unwrap());
    // Not in the control file in the clear.
    let control = std::fs::read(dir.path().join("control.redb")).unwrap();
    assert!(!control.windows(32).any(|w| w == ka.as_ref()));
}

/// A tmpfs of `mib` MiB on a new directory, unmounted when dropped; `None`,
/// with the reason printed, where mounting is not allowed (not root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                eprintln!(
                    "skipped: no tmpfs could be mounted (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: `mount` did not run: {e}");
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no room left.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xA5u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

/// Issue 16, item 1(d): redb refuses every call on a database whose write
/// failed until it is opened again. The store reopens its files in place:
/// on a full disk commits are refused with `DiskFull` and nothing panics;
/// once space returns the same `TenantStore` (records and index) and
/// `ControlStore` write again, and what was committed before is intact.
#[test]
fn a_full_disk_refuses_cleanly_and_the_same_store_writes_again_once_space_returns() {
    let Some(disk) = Tmpfs::mount(16) else {
        return;
    };
    let c = local(disk.path());
    c.create_tenant(Some("a"), "A", "local", 30).unwrap();
    let t = c.open_tenant("a").unwrap();
    let now = c.now();
    let rows = |from: u64| -> Vec<_> {
        (from..from + 50)
            .map(|s| indexed(s, now, 1, &format!("g{s}"), "h"))
            .collect()
    };
    let commit = |from: u64| {
        let rows = rows(from);
        let records: Vec<(u64, Vec<u8>)> = rows.iter().map(|r| r.0.clone()).collect();
        let index: Vec<RecordIndex> = rows.iter().map(|r| r.1.clone()).collect();
        let b = NewBatch {
            device: "d",
            received_ns: now,
            records: &records,
            index: &index,
            alerts: &[],
        };
        t.commit_batches(std::slice::from_ref(&b), &NoMerge)
            .map(|mut o| o.pop().unwrap())
    };
    commit(1).unwrap();
    t.index_pending(&derive, 100).unwrap();
    // Chunks the indexer has yet to reach when the disk fills.
    let mut next = 51;
    while next < 4_001 {
        commit(next).unwrap();
        next += 50;
    }

    let filler = disk.path().join("filler");
    fill(&filler);
    let indexing = t.index_pending(&derive, 1_000);
    assert!(
        matches!(indexing, Err(StoreError::DiskFull(_))),
        "{indexing:?}"
    );
    // Until the store's own slack in its file is used up too.
    let refused = loop {
        match commit(next) {
            Ok(o) => {
                assert_eq!(o.accepted, 50);
                next += 50;
                assert!(next < 100_000, "the full disk never refused a batch");
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(refused, StoreError::DiskFull(_)), "{refused}");
    // While the disk stays full, every call answers or fails cleanly (the
    // file is reopened and fails again), and nothing is stored.
    for _ in 0..3 {
        match commit(next) {
            Err(StoreError::DiskFull(_) | StoreError::Db(_)) => {}
            other => panic!("a commit on a full disk: {other:?}"),
        }
    }
    if let Ok(h) = t.high_water("d") {
        assert_eq!(h, next - 1);
    }
    let _ = t.index_pending(&derive, 1_000);
    let _ = t.records("d", 0, 10);
    let _ = c.create_api_token(Some("a"), Role::Analyst, "ann", 0, "full");

    // Space returns: the same stores write again, without being reopened by
    // their caller.
    std::fs::remove_file(&filler).unwrap();
    let again = commit(next).unwrap();
    assert_eq!((again.accepted, again.stored_through), (50, next + 49));
    assert_eq!(commit(next).unwrap().duplicates, 50, "stored once");
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let part = t.records("d", after, 1_000).unwrap();
        let Some(&(l, _)) = part.last() else { break };
        seqs.extend(part.iter().map(|r| r.0));
        after = l;
    }
    assert_eq!(seqs, (1..next + 50).collect::<Vec<_>>());
    while t.index_pending(&derive, 100).unwrap() > 0 {}
    assert_eq!(t.index_backlog().unwrap(), 0);
    assert!(by_term(&t, b"guid\0g1", None).contains(&("d".into(), 1)));
    assert!(by_term(&t, format!("guid\0g{next}").as_bytes(), None).contains(&("d".into(), next)));
    c.create_api_token(Some("a"), Role::Analyst, "ann", 0, "after")
        .unwrap();
    drop(t);
    drop(c);
}
