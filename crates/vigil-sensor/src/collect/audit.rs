//! Process execution from the kernel's audit subsystem (netlink).
//!
//! Why audit: the kernel writes argv, exe, cwd and credentials into the event
//! at exec time, so a process that exits within a millisecond is still seen in
//! full. (The proc connector only says "pid X exec'd"; reading /proc afterwards
//! races with the process.)
//!
//! What it does to the host: it enables audit, installs two exit-filter rules
//! for execve/execveat (64- and 32-bit, key `vigil`), and — when no audit
//! daemon is registered — registers itself as the audit daemon, so records come
//! to it by unicast instead of flooding the kernel log. When auditd already
//! runs, it reads the read-only multicast group instead and leaves auditd be.
//! On stop it removes its rules and unregisters.

use super::CollectError;
use super::audit_parse::{Assembler, ExecRecord};
use super::netlink::{self, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, Received};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_AUDIT};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_ADD_RULE: u16 = 1011;
const AUDIT_DEL_RULE: u16 = 1012;
/// Messages from userspace (AUDIT_FIRST_USER_MSG..=AUDIT_LAST_USER_MSG and the
/// *_MSG2 range): not kernel records, never parsed as such.
const USER_MSGS: [std::ops::RangeInclusive<u16>; 2] = [1100..=1199, 2100..=2999];

const STATUS_ENABLED: u32 = 0x1;
const STATUS_PID: u32 = 0x4;
const STATUS_BACKLOG_LIMIT: u32 = 0x10;

const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_FILTER_EXIT: u32 = 0x04;
const AUDIT_ALWAYS: u32 = 2;
const AUDIT_ARCH: u32 = 11;
const AUDIT_FILTERKEY: u32 = 210;
const AUDIT_EQUAL: u32 = 0x4000_0000;
const AUDIT_MAX_FIELDS: usize = 64;
const AUDIT_BITMASK_SIZE: usize = 64;

const ARCH_X86_64: u32 = 0xc000_003e;
const ARCH_I386: u32 = 0x4000_0003;
const ARCH_AARCH64: u32 = 0xc000_00b7;
const ARCH_ARM: u32 = 0x4000_0028;

/// The kernel's queue for the audit daemon; the default (64) drops records
/// under a burst of execs.
const BACKLOG_LIMIT: u32 = 16_384;
const RULE_KEY: &[u8] = b"vigil";

/// (arch, syscall numbers of execve and execveat) for this build's target.
fn exec_syscalls() -> &'static [(u32, [u32; 2])] {
    if cfg!(target_arch = "x86_64") {
        &[(ARCH_X86_64, [59, 322]), (ARCH_I386, [11, 358])]
    } else if cfg!(target_arch = "aarch64") {
        &[(ARCH_AARCH64, [221, 281]), (ARCH_ARM, [11, 387])]
    } else {
        &[]
    }
}

/// The kernel's `struct audit_status`, the fields used here.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Status {
    pub(crate) enabled: u32,
    pub(crate) pid: u32,
    pub(crate) backlog_limit: u32,
    pub(crate) lost: u32,
}

fn status_payload(mask: u32, enabled: u32, pid: u32, backlog_limit: u32) -> Vec<u8> {
    let mut v = [0u32; 11];
    v[0] = mask;
    v[1] = enabled;
    v[3] = pid;
    v[5] = backlog_limit;
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn rule_payload(arch: u32, syscalls: &[u32]) -> Vec<u8> {
    let mut mask = [0u32; AUDIT_BITMASK_SIZE];
    for &s in syscalls {
        mask[(s / 32) as usize] |= 1 << (s % 32);
    }
    let mut fields = [0u32; AUDIT_MAX_FIELDS];
    let mut values = [0u32; AUDIT_MAX_FIELDS];
    let mut flags = [0u32; AUDIT_MAX_FIELDS];
    fields[0] = AUDIT_ARCH;
    values[0] = arch;
    flags[0] = AUDIT_EQUAL;
    fields[1] = AUDIT_FILTERKEY;
    values[1] = RULE_KEY.len() as u32;
    flags[1] = AUDIT_EQUAL;
    let mut out = Vec::with_capacity(1040 + RULE_KEY.len());
    for x in [AUDIT_FILTER_EXIT, AUDIT_ALWAYS, 2] {
        out.extend_from_slice(&x.to_ne_bytes());
    }
    for arr in [&mask[..], &fields[..], &values[..], &flags[..]] {
        for x in arr {
            out.extend_from_slice(&x.to_ne_bytes());
        }
    }
    out.extend_from_slice(&(RULE_KEY.len() as u32).to_ne_bytes());
    out.extend_from_slice(RULE_KEY);
    out
}

/// How records reach this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    /// Registered as the audit daemon: unicast, kernel-buffered.
    Daemon,
    /// Another audit daemon runs; reading the multicast copy.
    Multicast,
}

pub(crate) struct AuditControl {
    sock: Socket,
    seq: u32,
    mode: AuditMode,
}

impl AuditControl {
    /// Sends a request and waits for its answer. AUDIT_GET is answered by a
    /// reply message that the kernel sends from a worker thread, so it can
    /// overtake an ACK: GET asks for no ACK and waits for the reply; other
    /// requests wait for the ACK (or error).
    fn request(&mut self, kind: u16, payload: &[u8]) -> Result<Option<Vec<u8>>, CollectError> {
        self.seq = self.seq.wrapping_add(1);
        let wants_reply = kind == AUDIT_GET;
        let flags = if wants_reply {
            NLM_F_REQUEST
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let msg = netlink::message(kind, flags, self.seq, payload);
        self.sock
            .send(&msg, 0)
            .map_err(|e| CollectError::os("audit netlink send", e))?;
        // Skip event records that interleave on a daemon socket; give up after
        // a bounded number of datagrams or timeouts.
        let mut buf = Vec::with_capacity(65536);
        for _ in 0..256 {
            match netlink::recv(&self.sock, &mut buf) {
                Ok(Received::Data) => {}
                Ok(Received::Idle | Received::Overflow) => continue,
                Err(e) => return Err(CollectError::os("audit netlink recv", e)),
            }
            for m in netlink::messages(&buf) {
                if m.seq != self.seq {
                    continue;
                }
                if m.kind == NLMSG_ERROR {
                    match netlink::error_code(m.payload) {
                        Some(0) if !wants_reply => return Ok(None),
                        Some(0) => {}
                        Some(e) => {
                            return Err(CollectError::Kernel {
                                what: kind_name(kind),
                                errno: -e,
                            });
                        }
                        None => return Err(CollectError::Malformed("short netlink error")),
                    }
                } else if m.kind == kind && wants_reply {
                    return Ok(Some(m.payload.to_vec()));
                }
            }
        }
        Err(CollectError::Malformed("no answer from audit"))
    }

    pub(crate) fn status(&mut self) -> Result<Status, CollectError> {
        let p = self
            .request(AUDIT_GET, &[])?
            .ok_or(CollectError::Malformed("no audit status"))?;
        let f = |i| netlink::u32_at(&p, i).ok_or(CollectError::Malformed("short audit status"));
        Ok(Status {
            enabled: f(1)?,
            pid: f(3)?,
            backlog_limit: f(5)?,
            lost: f(6)?,
        })
    }

    fn rules(&mut self, add: bool) -> Result<(), CollectError> {
        for (arch, calls) in exec_syscalls() {
            let p = rule_payload(*arch, calls);
            match self.request(if add { AUDIT_ADD_RULE } else { AUDIT_DEL_RULE }, &p) {
                Ok(_) => {}
                // EEXIST: left by a sensor that did not stop cleanly; ENOENT on delete: already gone.
                Err(CollectError::Kernel {
                    errno: libc::EEXIST,
                    ..
                }) if add => {}
                Err(CollectError::Kernel {
                    errno: libc::ENOENT,
                    ..
                }) if !add => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn kind_name(kind: u16) -> &'static str {
    match kind {
        AUDIT_GET => "AUDIT_GET",
        AUDIT_SET => "AUDIT_SET",
        AUDIT_ADD_RULE => "AUDIT_ADD_RULE",
        AUDIT_DEL_RULE => "AUDIT_DEL_RULE",
        _ => "audit request",
    }
}

/// A running audit exec source.
pub(crate) struct AuditSource {
    control: AuditControl,
    events: Option<Socket>,
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl AuditSource {
    /// Connects to audit, picks daemon or multicast mode, installs the exec rules.
    pub(crate) fn start() -> Result<AuditSource, CollectError> {
        let mut sock =
            Socket::new(NETLINK_AUDIT).map_err(|e| CollectError::os("audit netlink socket", e))?;
        sock.bind_auto()
            .map_err(|e| CollectError::os("audit netlink bind", e))?;
        netlink::set_recv_timeout(&sock)?;
        let _ = sock.set_rx_buf_sz(8 * 1024 * 1024);
        let mut control = AuditControl {
            sock,
            seq: 0,
            mode: AuditMode::Daemon,
        };
        let status = control.status()?;
        if status.enabled == 2 {
            return Err(CollectError::Unavailable(
                "audit configuration is locked (enabled=2, `auditctl -e 2`): rules cannot be added until reboot".into(),
            ));
        }
        let me = std::process::id();
        let mut events = None;
        if status.pid != 0 && status.pid != me && pid_alive(status.pid) {
            // An audit daemon (auditd) owns the unicast stream; read the multicast copy.
            let mut ev = Socket::new(NETLINK_AUDIT)
                .map_err(|e| CollectError::os("audit netlink socket", e))?;
            ev.bind(&SocketAddr::new(0, 1 << (AUDIT_NLGRP_READLOG - 1)))
                .map_err(|e| CollectError::os("audit multicast join (needs CAP_AUDIT_READ)", e))?;
            netlink::set_recv_timeout(&ev)?;
            let _ = ev.set_rx_buf_sz(8 * 1024 * 1024);
            events = Some(ev);
            control.mode = AuditMode::Multicast;
            control.request(AUDIT_SET, &status_payload(STATUS_ENABLED, 1, 0, 0))?;
        } else {
            let limit = status.backlog_limit.max(BACKLOG_LIMIT);
            control.request(
                AUDIT_SET,
                &status_payload(
                    STATUS_ENABLED | STATUS_PID | STATUS_BACKLOG_LIMIT,
                    1,
                    me,
                    limit,
                ),
            )?;
        }
        control.rules(true)?;
        tracing::info!(mode = ?control.mode, "Audit exec source started");
        Ok(AuditSource { control, events })
    }

    pub(crate) fn mode(&self) -> AuditMode {
        self.control.mode
    }

    /// Reads records until `stop` is set, handing each finished exec to `emit`
    /// and each kernel-reported loss count to `lost`.
    pub(crate) fn run(
        mut self,
        stop: Arc<AtomicBool>,
        mut emit: impl FnMut(ExecRecord),
        mut lost: impl FnMut(u32),
    ) -> Result<(), CollectError> {
        let mut asm = Assembler::default();
        let mut buf = Vec::with_capacity(1 << 16);
        let mut last_lost = None;
        let mut last_check = std::time::Instant::now();
        let result = loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            let sock = self.events.as_ref().unwrap_or(&self.control.sock);
            match netlink::recv(sock, &mut buf) {
                Ok(Received::Data) => {
                    let Some(m) = netlink::audit_record(&buf) else {
                        continue;
                    };
                    tracing::trace!(kind = m.kind, len = m.payload.len(), "Audit record");
                    if USER_MSGS.iter().any(|r| r.contains(&m.kind)) || m.kind < AUDIT_GET {
                        continue;
                    }
                    if let Some(e) = asm.push(m.kind, m.payload)
                        && e.success
                    {
                        emit(e);
                    }
                }
                Ok(Received::Idle) => {}
                // The socket buffer overflowed: records were lost in the kernel.
                Ok(Received::Overflow) => lost(0),
                Err(e) => break Err(CollectError::os("audit netlink recv", e)),
            }
            if last_check.elapsed() > Duration::from_secs(5)
                && self.control.mode == AuditMode::Multicast
            {
                last_check = std::time::Instant::now();
                if let Ok(s) = self.control.status() {
                    if let Some(prev) = last_lost
                        && s.lost > prev
                    {
                        lost(s.lost - prev);
                    }
                    last_lost = Some(s.lost);
                }
            }
        };
        self.stop();
        result
    }

    fn stop(&mut self) {
        if let Err(e) = self.control.rules(false) {
            tracing::warn!(error = %e, "Could not remove audit rules");
        }
        if self.control.mode == AuditMode::Daemon
            && let Err(e) = self
                .control
                .request(AUDIT_SET, &status_payload(STATUS_PID, 0, 0, 0))
        {
            tracing::warn!(error = %e, "Could not unregister as audit daemon");
        }
        tracing::info!("Audit exec source stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_layout_matches_kernel_struct() {
        let p = rule_payload(ARCH_X86_64, &[59, 322]);
        assert_eq!(p.len(), 1040 + RULE_KEY.len());
        assert_eq!(netlink::u32_at(&p, 0), Some(AUDIT_FILTER_EXIT));
        assert_eq!(netlink::u32_at(&p, 2), Some(2));
        // mask word 1 holds syscall 59 (bit 27); word 10 holds 322 (bit 2).
        assert_eq!(netlink::u32_at(&p, 3 + 1), Some(1 << 27));
        assert_eq!(netlink::u32_at(&p, 3 + 10), Some(1 << 2));
        assert_eq!(netlink::u32_at(&p, 3 + 64), Some(AUDIT_ARCH));
        assert_eq!(netlink::u32_at(&p, 3 + 128), Some(ARCH_X86_64));
        assert_eq!(&p[1040..], RULE_KEY);
    }
}
