//! Process exec/exit notifications from the kernel's proc connector.
//!
//! Exits come from here (audit would need an exit_group rule, far noisier).
//! Execs from here are the fallback when audit is unavailable: the kernel says
//! only "pid X exec'd", and the rest is read from /proc, which a process that
//! exits within a millisecond can beat.

use super::CollectError;
use super::netlink::{self, NLMSG_DONE, Received};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_CONNECTOR};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `struct cn_msg` before its data.
const CN_MSG_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcEvent {
    Fork {
        parent_tgid: u32,
        child_tgid: u32,
    },
    Exec {
        tgid: u32,
        timestamp_ns: u64,
    },
    Exit {
        tgid: u32,
        exit_code: i32,
        exit_signal: i32,
        timestamp_ns: u64,
    },
}

/// Decodes one connector message payload (after the netlink header).
pub(crate) fn decode(payload: &[u8]) -> Option<ProcEvent> {
    let idx = netlink::u32_at(payload, 0)?;
    let val = netlink::u32_at(payload, 1)?;
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return None;
    }
    let ev = payload.get(CN_MSG_LEN..)?;
    let what = netlink::u32_at(ev, 0)?;
    let ts = u64::from_ne_bytes(ev.get(8..16)?.try_into().ok()?);
    let data = ev.get(16..)?;
    let w = |i| netlink::u32_at(data, i);
    match what {
        PROC_EVENT_FORK => {
            let (child_pid, child_tgid) = (w(2)?, w(3)?);
            // Threads share the tgid; only new processes matter.
            (child_pid == child_tgid).then_some(ProcEvent::Fork {
                parent_tgid: w(1)?,
                child_tgid,
            })
        }
        PROC_EVENT_EXEC => Some(ProcEvent::Exec {
            tgid: w(1)?,
            timestamp_ns: ts,
        }),
        PROC_EVENT_EXIT => {
            let (pid, tgid) = (w(0)?, w(1)?);
            if pid != tgid {
                return None;
            }
            // exit_code is a wait status: code in bits 8..16, signal in 0..7.
            let status = w(2)?;
            Some(ProcEvent::Exit {
                tgid,
                exit_code: ((status >> 8) & 0xff) as i32,
                exit_signal: (status & 0x7f) as i32,
                timestamp_ns: ts,
            })
        }
        _ => None,
    }
}

fn control(op: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(CN_MSG_LEN + 4);
    for x in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
        p.extend_from_slice(&x.to_ne_bytes());
    }
    p.extend_from_slice(&4u16.to_ne_bytes());
    p.extend_from_slice(&0u16.to_ne_bytes());
    p.extend_from_slice(&op.to_ne_bytes());
    netlink::message(NLMSG_DONE, 0, 0, &p)
}

pub(crate) struct ProcConnector {
    sock: Socket,
}

impl ProcConnector {
    /// Subscribes to process events (needs CAP_NET_ADMIN).
    pub(crate) fn start() -> Result<ProcConnector, CollectError> {
        let mut sock =
            Socket::new(NETLINK_CONNECTOR).map_err(|e| CollectError::os("connector socket", e))?;
        sock.bind(&SocketAddr::new(std::process::id(), CN_IDX_PROC))
            .or_else(|_| sock.bind(&SocketAddr::new(0, CN_IDX_PROC)))
            .map_err(|e| CollectError::os("connector bind", e))?;
        let _ = sock.set_rx_buf_sz(4 * 1024 * 1024);
        netlink::set_recv_timeout(&sock)?;
        sock.send(&control(PROC_CN_MCAST_LISTEN), 0)
            .map_err(|e| CollectError::os("connector listen (needs CAP_NET_ADMIN)", e))?;
        Ok(ProcConnector { sock })
    }

    pub(crate) fn run(
        self,
        stop: Arc<AtomicBool>,
        mut emit: impl FnMut(ProcEvent),
        mut lost: impl FnMut(),
    ) -> Result<(), CollectError> {
        let mut buf = Vec::with_capacity(1 << 16);
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            match netlink::recv(&self.sock, &mut buf) {
                Ok(Received::Data) => {
                    for m in netlink::messages(&buf) {
                        if let Some(ev) = decode(m.payload) {
                            emit(ev);
                        }
                    }
                }
                Ok(Received::Idle) => {}
                Ok(Received::Overflow) => lost(),
                Err(e) => break Err(CollectError::os("connector recv", e)),
            }
        };
        let _ = self.sock.send(&control(PROC_CN_MCAST_IGNORE), 0);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(what: u32, data: &[u32]) -> Vec<u8> {
        let mut p = Vec::new();
        for x in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            p.extend_from_slice(&x.to_ne_bytes());
        }
        p.extend_from_slice(&0u32.to_ne_bytes()); // len + flags
        p.extend_from_slice(&what.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&42u64.to_ne_bytes());
        for d in data {
            p.extend_from_slice(&d.to_ne_bytes());
        }
        p
    }

    #[test]
    fn decodes_exit_and_skips_threads() {
        let e = decode(&event(PROC_EVENT_EXIT, &[10, 10, 3 << 8, 17, 1, 1])).unwrap();
        assert_eq!(
            e,
            ProcEvent::Exit {
                tgid: 10,
                exit_code: 3,
                exit_signal: 0,
                timestamp_ns: 42
            }
        );
        assert_eq!(
            decode(&event(PROC_EVENT_EXIT, &[11, 10, 0, 17, 1, 1])),
            None
        );
        assert_eq!(
            decode(&event(PROC_EVENT_EXIT, &[10, 10, 9, 17, 1, 1])).map(|e| match e {
                ProcEvent::Exit { exit_signal, .. } => exit_signal,
                _ => -1,
            }),
            Some(9)
        );
        assert_eq!(
            decode(&event(PROC_EVENT_EXEC, &[5, 5])),
            Some(ProcEvent::Exec {
                tgid: 5,
                timestamp_ns: 42
            })
        );
        assert_eq!(
            decode(&event(PROC_EVENT_FORK, &[1, 1, 7, 7])),
            Some(ProcEvent::Fork {
                parent_tgid: 1,
                child_tgid: 7
            })
        );
        assert_eq!(decode(&event(PROC_EVENT_FORK, &[1, 1, 8, 7])), None);
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(decode(&event(PROC_EVENT_EXIT, &[10])), None);
    }
}
