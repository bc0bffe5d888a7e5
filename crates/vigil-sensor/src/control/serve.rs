//! Serving the control socket: who may connect, and the answers to
//! `inspect` and `status`.

use super::frame::{self, Frame, FrameError, Notice, Request};
use super::{Context, MAX_CLIENTS, REQUEST_WAIT, Spooled, WRITE_STALL};
use std::sync::Arc;
use tokio::io::{AsyncWrite, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

/// Records read from the spool at a time for a listing, and about how many bytes.
const PAGE_RECORDS: usize = 256;
const PAGE_BYTES: usize = 1024 * 1024;
/// How long connections are given to end after the sensor says it stops.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a peer may talk to the sensor: root, or the sensor's own user.
pub(crate) fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == own_uid
}

/// Accepts connections until `stop`, serving at most [`MAX_CLIENTS`] at once.
pub(crate) async fn accept(listener: UnixListener, ctx: Context, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let own_uid = nix::unistd::geteuid().as_raw();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let stream = match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors, say: wait a little rather than spin.
                        tracing::warn!(error = %e, "Control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match stream.peer_cred() {
                    Ok(c) if peer_allowed(c.uid(), own_uid) => {}
                    Ok(c) => {
                        tracing::warn!(uid = c.uid(), pid = ?c.pid(), "Control socket: peer refused");
                        refuse(&stream, format!(
                            "refused: uid {} is neither root nor the sensor's user (uid {own_uid})",
                            c.uid()
                        ));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Control socket: peer credentials unreadable; refused");
                        continue;
                    }
                }
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refuse(&stream, format!("busy: {MAX_CLIENTS} clients are connected already"));
                    continue;
                };
                let (ctx, stop) = (ctx.clone(), stop.clone());
                conns.spawn(async move {
                    serve(stream, &ctx, stop).await;
                    drop(slot);
                });
                while conns.try_join_next().is_some() {}
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    // Followers send what the pipeline flushed last, then `end`.
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// Tells a peer why it is turned away, if its socket takes it at once.
fn refuse(stream: &UnixStream, message: String) {
    if let Some(b) = Frame::Notice(Notice::Error { message }).encode() {
        let _ = stream.try_write(&b);
    }
}

async fn serve(stream: UnixStream, ctx: &Context, stop: watch::Receiver<bool>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let request = match tokio::time::timeout(REQUEST_WAIT, Request::read(&mut rd)).await {
        Ok(Ok(r)) => r,
        Ok(Err(FrameError::NoRequest)) => return,
        Ok(Err(e)) => {
            let _ = send(&mut wr, &error(e.to_string())).await;
            return;
        }
        Err(_) => {
            let _ = send(&mut wr, &error("no request within 10 s".into())).await;
            return;
        }
    };
    let _ = match request {
        Request::Inspect { follow } => inspect(ctx, follow, &mut wr, stop).await,
        Request::Status {} => {
            let status = super::status::gather(ctx).await;
            send(&mut wr, &Frame::Notice(Notice::Status(Box::new(status)))).await
        }
    };
}

fn error(message: String) -> Frame {
    Frame::Notice(Notice::Error { message })
}

/// Writes a frame, giving the client [`WRITE_STALL`] to take it.
async fn send(w: &mut (impl AsyncWrite + Unpin), f: &Frame) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_STALL, frame::write(w, f)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

/// The spool's records with sequence in (`after`, `before`), in pages, each
/// sent as read; returns the last sequence sent and how many.
async fn list(
    spool: &Arc<vigil_spool::Spool>,
    mut after: u64,
    before: u64,
    w: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<(u64, u64)> {
    let mut sent = 0;
    loop {
        let sp = Arc::clone(spool);
        let page =
            tokio::task::spawn_blocking(move || sp.read_after(after, PAGE_RECORDS, PAGE_BYTES))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        if page.is_empty() {
            return Ok((after, sent));
        }
        for (sequence, bytes) in page {
            if sequence >= before {
                return Ok((after, sent));
            }
            send(w, &Frame::Record { sequence, bytes }).await?;
            after = sequence;
            sent += 1;
        }
    }
}

/// `inspect`: what the spool holds, then (`follow`) what is appended.
///
/// Exactly once each: the listing runs until the spool has nothing newer;
/// then the follower subscribes, reads the spool's next sequence number `n`
/// (every record below it committed before), lists what is still below `n`,
/// and from the broadcast takes only records from `n` on — all appended
/// after it subscribed, so none is missed unless it lags, and then it is told.
pub(crate) async fn inspect(
    ctx: &Context,
    follow: bool,
    w: &mut (impl AsyncWrite + Unpin),
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some((spool, _)) = &ctx.spool else {
        return send(
            w,
            &error(
                "this sensor runs standalone: it keeps no spool (its records go to its JSON lines output)"
                    .into(),
            ),
        )
        .await;
    };
    let (after, mut listed) = list(spool, 0, u64::MAX, w).await?;
    if !follow {
        return send(
            w,
            &Frame::Notice(Notice::Listed {
                records: listed,
                following: false,
            }),
        )
        .await;
    }
    let rx = ctx.hooks.subscribe();
    let sp = Arc::clone(spool);
    let next = tokio::task::spawn_blocking(move || sp.stats())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?
        .next_seq;
    listed += list(spool, after, next, w).await?.1;
    send(
        w,
        &Frame::Notice(Notice::Listed {
            records: listed,
            following: true,
        }),
    )
    .await?;
    follow_records(rx, next, w, stop).await
}

/// Sends every record from the broadcast with sequence ≥ `from` until the
/// sensor stops; a follower that lagged is told how much it missed, and cut off.
pub(crate) async fn follow_records(
    mut rx: broadcast::Receiver<Spooled>,
    from: u64,
    w: &mut (impl AsyncWrite + Unpin),
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            biased;
            r = rx.recv() => match r {
                Ok(rec) if rec.sequence >= from => {
                    send(w, &Frame::Record { sequence: rec.sequence, bytes: rec.bytes.to_vec() }).await?;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "Control socket: a follower fell behind and is cut off");
                    return send(w, &Frame::Notice(Notice::Lagged { missed })).await;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return send(w, &Frame::Notice(Notice::End { reason: "the sensor stopped".into() })).await;
                }
            },
            _ = stop.changed() => {
                // What the pipeline flushed before it stopped is already here.
                loop {
                    match rx.try_recv() {
                        Ok(rec) if rec.sequence >= from => {
                            send(w, &Frame::Record { sequence: rec.sequence, bytes: rec.bytes.to_vec() }).await?;
                        }
                        Ok(_) => {}
                        Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                            return send(w, &Frame::Notice(Notice::Lagged { missed })).await;
                        }
                        Err(_) => break,
                    }
                }
                return send(w, &Frame::Notice(Notice::End { reason: "the sensor is stopping".into() })).await;
            }
        }
    }
}
