#![allow(clippy::unwrap_used)]

use super::frame::{self, Frame, FrameError, Notice, Request};
use super::serve::{follow_records, peer_allowed};
use super::*;
use crate::pipeline::Output;
use crate::pipeline::tests::{Shared, pipeline};
use prost::Message;
use tokio::io::AsyncWriteExt;
use vigil_proto::v1::{HostInfo, Record, record::Payload};

/// Every frame a reader gets until the stream ends.
async fn frames(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = Frame::read(&mut r).await.unwrap() {
        out.push(f);
    }
    out
}

fn record(sequence: u64, n: usize) -> Frame {
    Frame::Record {
        sequence,
        bytes: vec![sequence as u8; n],
    }
}

#[tokio::test]
async fn frames_round_trip_and_end_cleanly() {
    let sent = vec![
        record(1, 0),
        record(u64::MAX, 300),
        Frame::Notice(Notice::Listed {
            records: 2,
            following: true,
        }),
        Frame::Notice(Notice::Lagged { missed: 17 }),
        Frame::Notice(Notice::End {
            reason: "stopping".into(),
        }),
    ];
    let mut wire = Vec::new();
    for f in &sent {
        frame::write(&mut wire, f).await.unwrap();
    }
    // The record frame: length (type + sequence + bytes), type 1, sequence, bytes.
    assert_eq!(&wire[..13], &[0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(frames(wire.as_slice()).await, sent);
    // Cut inside a frame (in its length, or its body): an error, not a clean end.
    for cut in [2, 7] {
        let err = Frame::read(&mut &wire[..cut]).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }
}

#[tokio::test]
async fn frame_sizes_are_bounded_at_the_limit() {
    // A record filling a frame exactly is sent; one byte more is announced as skipped.
    let fits = MAX_FRAME - 1 - 8;
    let at = record(5, fits).encode().unwrap();
    assert_eq!(at.len(), 4 + MAX_FRAME);
    assert!(record(5, fits + 1).encode().is_none());
    let mut wire = Vec::new();
    frame::write(&mut wire, &record(6, fits + 1)).await.unwrap();
    assert_eq!(
        frames(wire.as_slice()).await,
        [Frame::Notice(Notice::Skipped {
            sequence: 6,
            bytes: (fits + 1) as u64,
            why: format!("larger than a control frame ({MAX_FRAME} bytes)"),
        })]
    );
    // A reader takes a frame of the limit and refuses one byte more without reading it.
    assert_eq!(
        Frame::read(&mut at.as_slice()).await.unwrap(),
        Some(record(5, fits))
    );
    let over = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
    assert!(matches!(
        Frame::read(&mut over.as_slice()).await,
        Err(FrameError::TooLarge(n)) if n == MAX_FRAME as u64 + 1
    ));
    assert!(matches!(
        Frame::read(&mut [0u8, 0, 0, 0].as_slice()).await,
        Err(FrameError::Empty)
    ));
    assert!(matches!(
        Frame::decode(&[9, 1, 2]),
        Err(FrameError::UnknownType(9))
    ));
    assert!(matches!(
        Frame::decode(&[1, 0, 0, 0]),
        Err(FrameError::ShortRecord(4))
    ));
    assert!(matches!(
        Frame::decode(b"\x02{not json"),
        Err(FrameError::BadNotice(_))
    ));
}

#[tokio::test]
async fn requests_are_one_bounded_json_line() {
    let read = |b: Vec<u8>| async move { Request::read(&mut b.as_slice()).await };
    assert_eq!(
        read(br#"{"op":"inspect","follow":true}"#.to_vec().into_iter().chain(*b"\n").collect())
            .await
            .unwrap(),
        Request::Inspect { follow: true }
    );
    assert_eq!(
        read(Request::Status {}.line()).await.unwrap(),
        Request::Status {}
    );
    assert_eq!(
        read(Request::Inspect { follow: false }.line())
            .await
            .unwrap(),
        Request::Inspect { follow: false }
    );
    // A line of exactly the limit (newline included) is read; one byte more is refused.
    let line = |len: usize| {
        let head = br#"{"op":"status"}"#;
        let mut l = head.to_vec();
        l.resize(len - 1, b' ');
        l.push(b'\n');
        l
    };
    assert_eq!(read(line(MAX_REQUEST)).await.unwrap(), Request::Status {});
    assert!(matches!(
        read(line(MAX_REQUEST + 1)).await,
        Err(FrameError::RequestTooLong)
    ));
    assert!(matches!(
        read(b"{\"op\":\"status\"}".to_vec()).await,
        Err(FrameError::NoRequest)
    ));
    for bad in [
        &b"{\"op\":\"erase\"}\n"[..],
        b"{\"op\":\"status\",\"x\":1}\n",
        b"\xff\n",
    ] {
        assert!(
            matches!(read(bad.to_vec()).await, Err(FrameError::BadRequest(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn only_root_and_the_sensors_own_user_may_connect() {
    assert!(peer_allowed(0, 1000));
    assert!(peer_allowed(1000, 1000));
    assert!(peer_allowed(0, 0));
    assert!(!peer_allowed(1001, 1000));
    assert!(!peer_allowed(1000, 0));
}

fn spooled(sequence: u64) -> Spooled {
    Spooled {
        sequence,
        bytes: vec![sequence as u8; 3].into(),
    }
}

#[tokio::test]
async fn a_follower_that_lags_is_told_how_many_it_missed_and_cut_off() {
    let hooks = Hooks::with_buffer(4);
    let rx = hooks.subscribe();
    // The pipeline appends ten records while the follower reads nothing:
    // it never waits for it.
    let mut batch = hooks.tee_batch();
    for seq in 1..=10 {
        batch.keep(seq, &[seq as u8; 3]);
    }
    hooks.teed(batch);
    let (stop_tx, stop) = watch::channel(false);
    let (mut w, r) = tokio::io::duplex(1 << 16);
    follow_records(rx, 0, &mut w, stop).await.unwrap();
    drop((w, stop_tx));
    assert_eq!(
        frames(r).await,
        [Frame::Notice(Notice::Lagged { missed: 6 })],
        "six of ten fell out of a buffer of four; nothing after the cut"
    );
}

#[tokio::test]
async fn a_follower_gets_every_record_from_its_start_then_the_end() {
    let hooks = Hooks::with_buffer(16);
    let rx = hooks.subscribe();
    for seq in 3..=7 {
        let mut b = hooks.tee_batch();
        b.keep(seq, &[seq as u8; 3]);
        hooks.teed(b);
    }
    let (stop_tx, stop) = watch::channel(false);
    let (mut w, r) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(async move { follow_records(rx, 5, &mut w, stop).await });
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    let got = frames(r).await;
    let want: Vec<Frame> = (5..=7)
        .map(|s| Frame::Record {
            sequence: s,
            bytes: spooled(s).bytes.to_vec(),
        })
        .chain([Frame::Notice(Notice::End {
            reason: "the sensor is stopping".into(),
        })])
        .collect();
    assert_eq!(got, want, "records below the start were listed already");
}

#[test]
fn nothing_is_copied_without_a_follower() {
    let hooks = Hooks::with_buffer(4);
    let mut b = hooks.tee_batch();
    b.keep(1, b"abc");
    assert!(b.0.is_none());
    let _rx = hooks.subscribe();
    let mut b = hooks.tee_batch();
    b.keep(1, b"abc");
    assert_eq!(b.0.as_ref().map(Vec::len), Some(1));
}

fn host(name: &str) -> Payload {
    Payload::Host(HostInfo {
        hostname: name.into(),
        ..Default::default()
    })
}

#[test]
fn the_pipeline_tees_exactly_the_bytes_it_spooled_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool =
        Arc::new(vigil_spool::Spool::open(&dir.path().join("spool.redb"), 1 << 20).unwrap());
    let mut p = pipeline(Shared::default());
    p.output = Output::Spool {
        spool: Arc::clone(&spool),
        wake: Arc::new(Notify::new()),
    };
    let mut rx = p.hooks.subscribe();
    let pending = |time, name| crate::pipeline::Pending {
        time,
        payload: host(name),
        ancestry: Vec::new(),
        redactions: Vec::new(),
        pseudonymized: vec!["hostname".into()],
    };
    let mut pending = vec![pending(1, "a"), pending(2, "b")];
    p.flush(&mut pending);
    let stored = spool.read_after(0, 10, 1 << 20).unwrap();
    assert_eq!(stored.len(), 2);
    for (seq, bytes) in stored {
        let r = rx.try_recv().unwrap();
        assert_eq!((r.sequence, &r.bytes[..]), (seq, bytes.as_slice()));
        let r = Record::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (r.sequence, r.pseudonymized),
            (seq, vec!["hostname".to_owned()])
        );
    }
    assert!(rx.try_recv().is_err());
}

#[test]
fn status_reports_the_losses_health_reports() {
    let mut p = pipeline(Shared::default());
    p.dropped.insert("audit_lost".into(), 4);
    p.totals.insert("ebpf_file", (10, 3));
    p.enricher.redacted.insert("option_value".into(), 2);
    p.sources = vec!["process exec: audit".into()];
    p.degraded = vec!["eBPF unavailable: reasons".into()];
    p.host.rules_version = "abc".into();
    p.host.rules_loaded = 12;
    let s = snapshot(&p);
    let health: BTreeMap<String, u64> = p.health().dropped.into_iter().collect();
    assert_eq!(s.losses, health);
    assert_eq!(
        s.losses.keys().collect::<Vec<_>>(),
        ["audit_lost", "ebpf_file_ring_full"]
    );
    assert_eq!(s.redacted["option_value"], 2);
    assert_eq!((s.rules_version.as_str(), s.rules_loaded), ("abc", 12));
    assert_eq!(s.sources, p.sources);
    assert_eq!(s.degraded, p.degraded);
}

/// A served control socket over a real spool, the pipeline played by the test.
struct Served {
    dir: tempfile::TempDir,
    spool: Arc<vigil_spool::Spool>,
    hooks: Hooks,
    server: Server,
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let spool =
        Arc::new(vigil_spool::Spool::open(&dir.path().join("spool.redb"), 1 << 20).unwrap());
    let hooks = Hooks::default();
    let server = Server::start(Context {
        hooks: hooks.clone(),
        data_dir: dir.path().to_owned(),
        spool: Some((Arc::clone(&spool), 1 << 20)),
        uplink: None,
        endpoint: None,
        device: None,
        published: Arc::default(),
    })
    .unwrap();
    Served {
        dir,
        spool,
        hooks,
        server,
    }
}

impl Served {
    /// Appends like the pipeline does: spool, then followers.
    fn append(&self, n: usize) {
        let mut teed = self.hooks.tee_batch();
        self.spool
            .append(0..n, |seq, _| {
                let b = vec![seq as u8; 5];
                teed.keep(seq, &b);
                (b, vigil_spool::Priority::Bulk)
            })
            .unwrap();
        self.hooks.teed(teed);
    }
}

#[tokio::test]
async fn inspect_lists_the_spool_then_follows_appends_until_the_sensor_stops() {
    use std::os::unix::fs::PermissionsExt;
    let s = serve();
    let path = socket_path(s.dir.path());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.append(3);
    s.spool.ack_through(1).unwrap();
    // Without follow: what the spool holds, oldest first, then `listed`.
    let mut c = Client::request(s.dir.path(), &Request::Inspect { follow: false })
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(f) = c.next().await.unwrap() {
        got.push(f);
    }
    assert_eq!(
        got,
        [
            Frame::Record {
                sequence: 2,
                bytes: vec![2; 5]
            },
            Frame::Record {
                sequence: 3,
                bytes: vec![3; 5]
            },
            Frame::Notice(Notice::Listed {
                records: 2,
                following: false
            }),
        ]
    );
    // Following: the listing, then each append, then the end at stop.
    let mut c = Client::request(s.dir.path(), &Request::Inspect { follow: true })
        .await
        .unwrap();
    for want in [2, 3] {
        assert!(
            matches!(c.next().await.unwrap(), Some(Frame::Record { sequence, .. }) if sequence == want)
        );
    }
    assert_eq!(
        c.next().await.unwrap(),
        Some(Frame::Notice(Notice::Listed {
            records: 2,
            following: true
        }))
    );
    s.append(2);
    for want in [4, 5] {
        assert_eq!(
            c.next().await.unwrap(),
            Some(Frame::Record {
                sequence: want,
                bytes: vec![want as u8; 5]
            })
        );
    }
    s.server.shutdown().await;
    assert_eq!(
        c.next().await.unwrap(),
        Some(Frame::Notice(Notice::End {
            reason: "the sensor is stopping".into()
        }))
    );
    assert_eq!(c.next().await.unwrap(), None);
    assert!(!path.exists(), "the socket is removed at stop");
    assert!(matches!(
        Client::request(s.dir.path(), &Request::Status {}).await,
        Err(ClientError::NotRunning(_))
    ));
}

#[tokio::test]
async fn one_client_more_than_the_limit_is_turned_away_saying_why() {
    let s = serve();
    let path = socket_path(s.dir.path());
    // MAX_CLIENTS connections that have not asked anything yet hold every slot.
    let mut held = Vec::new();
    for _ in 0..MAX_CLIENTS {
        held.push(tokio::net::UnixStream::connect(&path).await.unwrap());
    }
    let busy = match Client::request(s.dir.path(), &Request::Status {}).await {
        Err(ClientError::Refused(m)) => m,
        Ok(mut c) => match c.next().await.unwrap() {
            Some(Frame::Notice(Notice::Error { message })) => message,
            other => panic!("{other:?}"),
        },
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        busy,
        format!("busy: {MAX_CLIENTS} clients are connected already")
    );
    // A held connection asks: it is served.
    let mut first = held.remove(0);
    first
        .write_all(&Request::Inspect { follow: false }.line())
        .await
        .unwrap();
    let (rd, _wr) = first.into_split();
    assert_eq!(
        frames(rd).await,
        [Frame::Notice(Notice::Listed {
            records: 0,
            following: false
        })]
    );
    drop(held);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_bad_request_is_answered_with_an_error() {
    let s = serve();
    let mut c = tokio::net::UnixStream::connect(socket_path(s.dir.path()))
        .await
        .unwrap();
    c.write_all(b"{\"op\":\"erase\"}\n").await.unwrap();
    let got = frames(c).await;
    assert!(
        matches!(&got[..], [Frame::Notice(Notice::Error { message })] if message.starts_with("not a request")),
        "{got:?}"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn status_comes_from_the_pipeline_the_spool_and_the_uplink() {
    let s = serve();
    s.append(2);
    let (uplink_tx, uplink) = watch::channel(crate::uplink::UplinkStatus {
        sessions_opened: 2,
        connected: true,
        last_error: Some("connect refused".into()),
        last_ack_unix_ns: 1_700_000_000_000_000_000,
        acked_through: 9,
    });
    let ctx = Context {
        hooks: s.hooks.clone(),
        data_dir: s.dir.path().to_owned(),
        spool: Some((Arc::clone(&s.spool), 1 << 20)),
        uplink: Some(uplink),
        endpoint: Some("https://server:4443".into()),
        device: Some(("dev1".into(), "acme".into())),
        published: Arc::new(crate::published::Running::default()),
    };
    ctx.published.set(3);
    // The pipeline thread, answering between two events.
    let done = Arc::new(AtomicBool::new(false));
    let thread = {
        let (hooks, done) = (s.hooks.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut p = pipeline(Shared::default());
            p.dropped.insert("audit_lost".into(), 4);
            p.sources = vec!["process exec: audit".into()];
            p.host.rules_version = "abc".into();
            p.host.rules_loaded = 12;
            p.enricher.redacted.insert("option_value".into(), 1);
            while !done.load(Ordering::Relaxed) {
                hooks.offer(&p);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let st = status::gather(&ctx).await;
    done.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    drop(uplink_tx);
    assert!(st.running && !st.pipeline_stale);
    assert_eq!(st.mode, "connected");
    assert_eq!(st.sources, ["process exec: audit"]);
    assert_eq!(
        st.rules,
        RulesStatus {
            version: "abc".into(),
            count: 12,
            published_version: 3
        }
    );
    assert_eq!(
        st.spool,
        Some(SpoolStatus {
            records: 2,
            bytes: 10,
            capacity_bytes: 1 << 20,
            evicted: 0
        })
    );
    assert_eq!(st.losses.get("audit_lost"), Some(&4));
    assert_eq!(st.redacted.get("option_value"), Some(&1));
    let c = st.connection.clone().unwrap();
    assert_eq!(
        (
            c.state.as_str(),
            c.endpoint.as_str(),
            c.device_id.as_str(),
            c.acked_through
        ),
        ("connected", "https://server:4443", "dev1", 9)
    );
    assert!(st.rss_bytes > 0);
    let text = st.human();
    for want in [
        "Server      https://server:4443: connected (2 sessions opened since start)",
        "last acknowledgement 2023-11-14T22:13:20Z (records through 9)",
        "last error: connect refused",
        "Rules       12 rules and correlations, version abc (published version 3 from the server)",
        "Spool       2 records, 10 B of 1.0 MiB",
        "Losses      audit_lost 4",
        "Redactions  option_value 1",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // The same through the socket, as JSON and back.
    let json = serde_json::to_string(&st).unwrap();
    assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), st);
    s.server.shutdown().await;
}
