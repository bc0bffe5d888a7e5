//! The Hunt service (issue 14, items 2, 3 and 6), over real mutual-TLS gRPC
//! against a running server, records sent by enrolled devices on the ingest
//! stream: search by device, time, kind and field conditions (streamed in
//! pages), process trees, file prevalence, devices with their host details
//! and health, live events with slow watchers cut off, alert evidence — each
//! confined to the caller's tenant and audited without the values searched.

#![allow(clippy::unwrap_used)]

mod support;

use support::tenants::{Device, Fixture, Tenant, req};
use tokio_stream::StreamExt;
use tonic::Code;
use vigil_proto::v1::{
    Detection, FieldCondition, FileEvent, FileOperation, FilePrevalenceRequest, GetAlertRequest,
    GetDeviceRequest, GetProcessTreeRequest, Hashes, HostInfo, ListAlertsRequest,
    ListHuntDevicesRequest, MatchOp, NetworkConnection, Path, ProcessExit, ProcessRef,
    ProcessStart, Record, SearchEventsRequest, SensorHealth, StoredRecord, record::Payload,
};

const CAT_SHA: [u8; 32] = [0xca; 32];
const SEC: i64 = 1_000_000_000;

fn path(p: &str) -> Option<Path> {
    Some(Path {
        text: p.into(),
        ..Default::default()
    })
}

fn start(seq: u64, time: i64, guid: &str, parent: &str, exe: &str, cmd: &str) -> Record {
    Record {
        sequence: seq,
        time_unix_ns: time,
        payload: Some(Payload::ProcessStart(ProcessStart {
            guid: guid.into(),
            parent_guid: parent.into(),
            pid: seq as u32,
            executable: path(exe),
            command_line: cmd.into(),
            user_name: "root".into(),
            executable_hashes: (exe == "/usr/bin/cat").then(|| Hashes {
                sha256: CAT_SHA.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn pref(guid: &str, exe: &str) -> Option<ProcessRef> {
    Some(ProcessRef {
        guid: guid.into(),
        executable: path(exe),
        ..Default::default()
    })
}

/// A shell tree on device 1 around `t0`: init-1 → bash-1 → cat-1, cat-2;
/// cat-1 opens /etc/shadow and exits, bash-1 connects out; host details and
/// health; then 2,000 unrelated process starts, one a second, after it.
fn tree_records(t0: i64) -> Vec<Record> {
    let mut r = vec![
        start(1, t0, "init-1", "", "/sbin/init", "/sbin/init"),
        start(2, t0 + SEC, "bash-1", "init-1", "/bin/bash", "bash"),
        start(
            3,
            t0 + 2 * SEC,
            "cat-1",
            "bash-1",
            "/usr/bin/cat",
            "cat /etc/SHADOW",
        ),
        Record {
            sequence: 4,
            time_unix_ns: t0 + 3 * SEC,
            payload: Some(Payload::File(FileEvent {
                operation: FileOperation::Open as i32,
                path: path("/etc/shadow"),
                process: pref("cat-1", "/usr/bin/cat"),
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 5,
            time_unix_ns: t0 + 4 * SEC,
            payload: Some(Payload::ProcessExit(ProcessExit {
                guid: "cat-1".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
        start(
            6,
            t0 + 5 * SEC,
            "cat-2",
            "bash-1",
            "/usr/bin/cat",
            "cat notes",
        ),
        Record {
            sequence: 7,
            time_unix_ns: t0 + 6 * SEC,
            payload: Some(Payload::Network(NetworkConnection {
                remote_address: "198.51.100.9".into(),
                remote_port: 443,
                local_address: "10.0.0.2".into(),
                process: pref("bash-1", "/bin/bash"),
                direction: 1,
                protocol: 1,
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 8,
            time_unix_ns: t0 + 7 * SEC,
            payload: Some(Payload::Host(HostInfo {
                hostname: "web-01".into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "13".into(),
                sensor_version: "0.1.0".into(),
                ..Default::default()
            })),
            ..Default::default()
        },
        Record {
            sequence: 9,
            time_unix_ns: t0 + 8 * SEC,
            payload: Some(Payload::Health(SensorHealth {
                dropped: [("spool_full".to_string(), 3u64), ("kernel_lost".into(), 4)].into(),
                spool_records: 12,
                ..Default::default()
            })),
            ..Default::default()
        },
    ];
    for i in 0..2000u64 {
        r.push(start(
            10 + i,
            t0 + 100 * SEC + i as i64 * SEC,
            &format!("filler-{i}"),
            "init-1",
            "/usr/bin/sleep",
            &format!("sleep {i} padding padding padding padding padding padding padding"),
        ));
    }
    r
}

async fn search(
    f: &Fixture,
    token: &str,
    r: SearchEventsRequest,
) -> Result<(Vec<StoredRecord>, usize, u64), tonic::Status> {
    let mut s = f
        .hunt()
        .search_events(req(r, token, None))
        .await?
        .into_inner();
    let (mut out, mut pages, mut chunks) = (Vec::new(), 0, 0);
    while let Some(page) = s.next().await {
        let page = page?;
        pages += 1;
        chunks = chunks.max(page.chunks_scanned);
        out.extend(page.records);
    }
    Ok((out, pages, chunks))
}

/// Every record matching `conditions`, whatever its device, time or kind.
async fn matching(f: &Fixture, token: &str, conditions: Vec<FieldCondition>) -> Vec<StoredRecord> {
    let r = SearchEventsRequest {
        conditions,
        ..Default::default()
    };
    search(f, token, r).await.unwrap().0
}

async fn process_tree(
    f: &Fixture,
    token: &str,
    guid: &str,
) -> Result<vigil_proto::v1::ProcessTree, tonic::Status> {
    let r = GetProcessTreeRequest {
        guid: guid.into(),
        max_events: 0,
    };
    Ok(f.hunt()
        .get_process_tree(req(r, token, None))
        .await?
        .into_inner())
}

fn cond(field: &str, op: MatchOp, value: &str) -> FieldCondition {
    FieldCondition {
        field: field.into(),
        op: op as i32,
        value: value.into(),
    }
}

fn guid_of(r: &StoredRecord) -> String {
    match r.record.as_ref().unwrap().payload.as_ref().unwrap() {
        Payload::ProcessStart(s) => s.guid.clone(),
        other => format!("{other:?}"),
    }
}

struct World {
    f: Fixture,
    acme: Tenant,
    d1: Device,
    d2: Device,
    other: Tenant,
    t0: i64,
}

async fn world() -> World {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let other = f.tenant("Other").await;
    let d1 = f.device(&acme).await;
    let d2 = f.device(&acme).await;
    let o1 = f.device(&other).await;
    let t0 = f.server.control.now();
    let ack = f.send_records(&d1, tree_records(t0)).await;
    assert_eq!(ack.stored_through, 2009);
    f.send_records(
        &d2,
        vec![start(
            1,
            t0 + 50 * SEC,
            "cat-d2",
            "",
            "/usr/bin/cat",
            "cat /etc/hosts",
        )],
    )
    .await;
    // The other tenant runs the same binary: never counted for Acme.
    f.send_records(
        &o1,
        vec![start(1, t0, "cat-o", "", "/usr/bin/cat", "cat x")],
    )
    .await;
    World {
        f,
        acme,
        d1,
        d2,
        other,
        t0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_by_field_device_time_and_kind_and_streams_pages() {
    let World {
        f,
        acme,
        d1,
        d2,
        other,
        t0,
    } = world().await;
    let tok = &acme.admin;
    // Equality on an indexed field: both devices' cats, not the other tenant's.
    // Right after ingest the indexer may not have caught up: what it has not
    // reached is opened too (same answer, more chunks), for a moment.
    let cats = SearchEventsRequest {
        kind: "process_start".into(),
        conditions: vec![cond("Image", MatchOp::Equals, "/usr/bin/cat")],
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (got, chunks) = loop {
        let (got, _, chunks) = search(&f, tok, cats.clone()).await.unwrap();
        let mut guids: Vec<String> = got.iter().map(guid_of).collect();
        guids.sort();
        assert_eq!(guids, ["cat-1", "cat-2", "cat-d2"]);
        if chunks <= 3 || std::time::Instant::now() > deadline {
            break (got, chunks);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut guids: Vec<String> = got.iter().map(guid_of).collect();
    guids.sort();
    assert_eq!(guids, ["cat-1", "cat-2", "cat-d2"]);
    assert!(
        chunks <= 3,
        "an indexed lookup opens only the chunks holding the value: {chunks}"
    );
    assert!(got.iter().any(|r| r.device_id == d2.id));
    // Contains is case-insensitive; prefix is not.
    let got = matching(
        &f,
        tok,
        vec![cond("CommandLine", MatchOp::Contains, "etc/shadow")],
    )
    .await;
    assert_eq!(got.iter().map(guid_of).collect::<Vec<_>>(), ["cat-1"]);
    let got = matching(
        &f,
        tok,
        vec![
            cond("CommandLine", MatchOp::Prefix, "cat "),
            cond("DeviceId", MatchOp::Equals, &d1.id),
        ],
    )
    .await;
    assert_eq!(got.len(), 2);
    // A condition on ProcessGuid finds every record the process is in, of every kind.
    let got = matching(&f, tok, vec![cond("ProcessGuid", MatchOp::Equals, "cat-1")]).await;
    assert_eq!(
        got.iter()
            .map(|r| r.record.as_ref().unwrap().sequence)
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );
    // Device and one minute of time: the window only, and fewer chunks opened than all.
    let (all, pages, all_chunks) = search(
        &f,
        tok,
        SearchEventsRequest {
            device_id: d1.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 2009);
    assert!(pages >= 5, "a large result arrives in pages: {pages}");
    let (window, _, chunks) = search(
        &f,
        tok,
        SearchEventsRequest {
            device_id: d1.id.clone(),
            since_unix_ns: t0 + 600 * SEC,
            until_unix_ns: t0 + 659 * SEC,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(window.len(), 60);
    assert!(window.iter().all(|r| {
        let t = r.record.as_ref().unwrap().time_unix_ns;
        (t0 + 600 * SEC..=t0 + 659 * SEC).contains(&t)
    }));
    assert!(chunks * 4 < all_chunks, "{chunks} of {all_chunks} chunks");
    // Kind, and a limit.
    let (hosts, _, _) = search(
        &f,
        tok,
        SearchEventsRequest {
            kind: "host".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].device_id, d1.id);
    let (five, _, _) = search(
        &f,
        tok,
        SearchEventsRequest {
            conditions: vec![cond("Image", MatchOp::Equals, "/usr/bin/sleep")],
            limit: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(five.len(), 5);
    // Bad requests name the problem.
    for (r, needle) in [
        (
            SearchEventsRequest {
                conditions: vec![cond("Imaeg", MatchOp::Equals, "x")],
                ..Default::default()
            },
            "unknown field",
        ),
        (
            SearchEventsRequest {
                kind: "proc".into(),
                ..Default::default()
            },
            "unknown kind",
        ),
    ] {
        let e = search(&f, tok, r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(needle), "{}", e.message());
    }
    // The other tenant sees only its own.
    let (theirs, _, _) = search(&f, &other.admin, SearchEventsRequest::default())
        .await
        .unwrap();
    assert_eq!(theirs.iter().map(guid_of).collect::<Vec<_>>(), ["cat-o"]);
    let (theirs, _, _) = search(
        &f,
        &other.admin,
        SearchEventsRequest {
            device_id: d1.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(theirs.is_empty());
    // Audited, without the values searched for.
    let entries = f.audit_entries(tok).await;
    let s: Vec<_> = entries
        .iter()
        .filter(|e| e.method == "Hunt/SearchEvents")
        .collect();
    assert!(s.len() >= 9);
    assert!(
        s.iter()
            .all(|e| !e.summary.contains("/usr/bin/cat") && !e.summary.contains("shadow")),
        "{s:?}"
    );
    assert!(s.iter().any(|e| e.summary.contains("Image:1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_trees_prevalence_devices_and_alert_evidence() {
    let World {
        f,
        acme,
        d1,
        d2,
        other,
        t0,
    } = world().await;
    let tok = &acme.admin;
    let tree = process_tree(&f, tok, "bash-1").await.unwrap();
    assert_eq!(tree.device_id, d1.id);
    let me = tree.process.unwrap();
    assert!(me.start.is_some());
    assert_eq!(me.events.len(), 1, "its connection");
    assert_eq!(
        tree.ancestors
            .iter()
            .map(|a| a.guid.as_str())
            .collect::<Vec<_>>(),
        ["init-1"]
    );
    assert_eq!(
        tree.children
            .iter()
            .map(|c| c.guid.as_str())
            .collect::<Vec<_>>(),
        ["cat-1", "cat-2"]
    );
    let cat1 = &tree.children[0];
    assert!(cat1.exit.is_some());
    assert_eq!(cat1.events.len(), 1, "the open of /etc/shadow");
    // Event caps.
    let init = process_tree(&f, tok, "init-1").await.unwrap();
    assert_eq!(init.children.len(), 1000, "bash and the first 999 sleeps");
    assert!(init.children_truncated);
    assert_eq!(init.children[0].guid, "bash-1");
    assert!(init.children[1].exit.is_none() && init.children[999].start.is_some());
    for (guid, code) in [("nobody", Code::NotFound), ("", Code::InvalidArgument)] {
        let e = process_tree(&f, tok, guid).await.unwrap_err();
        assert_eq!(e.code(), code);
    }
    // Another tenant's process is not found.
    let e = process_tree(&f, &other.admin, "bash-1").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Prevalence by hash (upper or lower case) and by path: Acme's two devices only.
    let hex: String = CAT_SHA.iter().map(|b| format!("{b:02X}")).collect();
    for q in [hex.clone(), "/usr/bin/cat".into()] {
        let p = f
            .hunt()
            .file_prevalence(req(
                FilePrevalenceRequest {
                    hash_or_path: q.clone(),
                },
                tok,
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut devs: Vec<(String, u64)> = p
            .devices
            .iter()
            .map(|d| (d.device_id.clone(), d.count))
            .collect();
        devs.sort();
        let mut want = vec![(d1.id.clone(), 2), (d2.id.clone(), 1)];
        want.sort();
        assert_eq!(devs, want, "{q}");
        let on1 = p.devices.iter().find(|d| d.device_id == d1.id).unwrap();
        assert_eq!(
            (on1.first_seen_unix_ns, on1.last_seen_unix_ns),
            (t0 + 2 * SEC, t0 + 5 * SEC)
        );
        assert_eq!(
            p.matched_as,
            if q.starts_with('/') { "path" } else { "sha256" }
        );
    }
    let none = f
        .hunt()
        .file_prevalence(req(
            FilePrevalenceRequest {
                hash_or_path: "0".repeat(64),
            },
            tok,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.devices.is_empty());
    let e = f
        .hunt()
        .file_prevalence(req(
            FilePrevalenceRequest {
                hash_or_path: "cat".into(),
            },
            tok,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Devices: host details and health from their latest records.
    let devs = f
        .hunt()
        .list_devices(req(ListHuntDevicesRequest {}, tok, None))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devs.len(), 2);
    let one = f
        .hunt()
        .get_device(req(
            GetDeviceRequest {
                device_id: d1.id.clone(),
            },
            tok,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let host = one.host.unwrap();
    assert_eq!(
        (host.hostname.as_str(), host.os_name.as_str()),
        ("web-01", "Debian GNU/Linux")
    );
    assert_eq!(one.lost, 7);
    assert_eq!(one.health.unwrap().spool_records, 12);
    assert_eq!(one.info.unwrap().stored_through, 2009);
    let e = f
        .hunt()
        .get_device(req(
            GetDeviceRequest {
                device_id: d1.id.clone(),
            },
            &other.admin,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // An alert on cat-1 carries the tree, the device and the rule.
    let det = Record {
        sequence: 3000,
        time_unix_ns: t0 + 3 * SEC,
        payload: Some(Payload::Detection(Detection {
            rule_id: "r-shadow".into(),
            rule_title: "Shadow read".into(),
            level: "high".into(),
            tags: vec!["attack.credential_access".into(), "attack.t1003.008".into()],
            author: "Vigil".into(),
            references: vec!["https://attack.mitre.org/techniques/T1003/008/".into()],
            process: pref("cat-1", "/usr/bin/cat"),
            ..Default::default()
        })),
        ..Default::default()
    };
    f.send_records(&d1, vec![det]).await;
    let id = f
        .alerts()
        .list_alerts(req(ListAlertsRequest::default(), tok, None))
        .await
        .unwrap()
        .into_inner()
        .alerts[0]
        .id
        .clone();
    let a = f
        .alerts()
        .get_alert(req(GetAlertRequest { id }, tok, None))
        .await
        .unwrap()
        .into_inner();
    let ev = a.evidence.unwrap();
    let t = ev.process_tree.unwrap();
    assert_eq!(
        t.ancestors
            .iter()
            .map(|a| a.guid.as_str())
            .collect::<Vec<_>>(),
        ["bash-1", "init-1"]
    );
    assert!(t.process.unwrap().start.is_some());
    let rule = ev.rule.unwrap();
    assert_eq!(rule.author, "Vigil");
    assert_eq!(rule.attack, ["TA0006", "T1003.008"]);
    assert_eq!(rule.references.len(), 1);
    assert_eq!(ev.device.unwrap().host.unwrap().hostname, "web-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_match_the_filters_and_a_slow_watcher_is_cut_off_without_slowing_ingest() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let other = f.tenant("Other").await;
    let d = f.device(&acme).await;
    let o = f.device(&other).await;
    let t0 = f.server.control.now();
    let mut cats = f
        .hunt()
        .watch_events(req(
            SearchEventsRequest {
                conditions: vec![cond("Image", MatchOp::Equals, "/usr/bin/cat")],
                ..Default::default()
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let slow = f
        .hunt()
        .watch_events(req(SearchEventsRequest::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    f.send_records(&o, vec![start(1, t0, "o-cat", "", "/usr/bin/cat", "cat")])
        .await;
    let first = vec![
        start(1, t0, "a", "", "/bin/ls", "ls"),
        start(2, t0, "b", "", "/usr/bin/cat", "cat one"),
    ];
    f.send_records(&d, first.clone()).await;
    // A re-send of the same records is stored once and shown once.
    f.send_records(&d, first).await;
    f.send_records(&d, vec![start(3, t0, "c", "", "/usr/bin/cat", "cat two")])
        .await;
    let got: Vec<String> = vec![
        guid_of(&cats.next().await.unwrap().unwrap()),
        guid_of(&cats.next().await.unwrap().unwrap()),
    ];
    assert_eq!(got, ["b", "c"]);
    // 20,000 records while `slow` reads nothing: every batch is acknowledged
    // (ingest never waits for a watcher)...
    let many: Vec<Record> = (4..20_004u64)
        .map(|s| start(s, t0, &format!("p{s}"), "", "/bin/true", &"x".repeat(200)))
        .collect();
    let ack = f.send_records(&d, many).await;
    assert_eq!(ack.stored_through, 20_003);
    // ...and the watcher, once it reads, finds itself cut off with a clear status.
    let mut slow = slow;
    let mut n = 0;
    let end = loop {
        match slow.next().await {
            Some(Ok(_)) => n += 1,
            Some(Err(s)) => break s,
            None => panic!("the stream ended without a status after {n} records"),
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(end.message().contains("behind"), "{}", end.message());
    assert!(n < 20_003, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_tells_open_streams_to_reconnect_and_stops_promptly() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let mut events = f
        .hunt()
        .watch_events(req(SearchEventsRequest::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    let mut alerts = f
        .alerts()
        .watch_alerts(req(Default::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(10), f.server.stop())
        .await
        .expect("a graceful stop does not wait for watchers");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    for end in [
        events.next().await.unwrap().unwrap_err(),
        alerts.next().await.unwrap().unwrap_err(),
    ] {
        assert_eq!(end.code(), Code::Unavailable, "{end:?}");
        assert!(end.message().contains("shutting down"), "{}", end.message());
    }
}
