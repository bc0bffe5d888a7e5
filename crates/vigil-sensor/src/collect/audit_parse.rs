//! Parsing of Linux audit text records (`type=SYSCALL`, `EXECVE`, `CWD`, ...)
//! into one exec event. Pure functions over untrusted bytes: every malformed
//! input is an error or a skipped field, never a panic.

use std::collections::HashMap;

/// Audit record types used here (linux/audit.h).
pub(crate) const AUDIT_SYSCALL: u16 = 1300;
#[cfg(test)]
pub(crate) const AUDIT_PATH: u16 = 1302;
pub(crate) const AUDIT_CWD: u16 = 1307;
pub(crate) const AUDIT_EXECVE: u16 = 1309;
pub(crate) const AUDIT_EOE: u16 = 1320;
#[cfg(test)]
pub(crate) const AUDIT_PROCTITLE: u16 = 1327;

/// Largest argv the sensor keeps (bytes, all arguments together); the rest is cut
/// and the cut is marked.
pub(crate) const MAX_ARGV_BYTES: usize = 128 * 1024;
/// Most records gathered for one event before it is closed regardless.
pub(crate) const MAX_RECORDS_PER_EVENT: usize = 4096;

/// The header of every record: `audit(1700000000.123:456): `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) unix_ms: i64,
    pub(crate) serial: u64,
}

pub(crate) fn split_header(text: &[u8]) -> Option<(Stamp, &[u8])> {
    let rest = text.strip_prefix(b"audit(")?;
    let close = rest.iter().position(|&b| b == b')')?;
    let inner = std::str::from_utf8(&rest[..close]).ok()?;
    let (time, serial) = inner.split_once(':')?;
    let (sec, ms) = time.split_once('.')?;
    let unix_ms = sec
        .parse::<i64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(ms.parse::<i64>().ok()?)?;
    let body = rest[close + 1..]
        .strip_prefix(b":")
        .unwrap_or(&rest[close + 1..]);
    Some((
        Stamp {
            unix_ms,
            serial: serial.parse().ok()?,
        },
        body,
    ))
}

/// Splits `k=v k2="v 2"` into pairs. Quoted values are literal; unquoted ones
/// are returned as they stand (the caller decodes hex where audit uses it).
pub(crate) fn fields(body: &[u8]) -> Vec<(&[u8], Value<'_>)> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = body.len();
    while i < n {
        while i < n && body[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < n && body[i] != b'=' && body[i] != b' ' {
            i += 1;
        }
        if i >= n || body[i] != b'=' {
            // A bare word ("msg='...'" payloads from userspace are not parsed here).
            continue;
        }
        let key = &body[ks..i];
        i += 1;
        if i < n && body[i] == b'"' {
            let vs = i + 1;
            let ve = body[vs..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(n, |p| vs + p);
            out.push((key, Value::Quoted(&body[vs..ve])));
            i = (ve + 1).min(n);
        } else {
            let vs = i;
            while i < n && body[i] != b' ' {
                i += 1;
            }
            out.push((key, Value::Bare(&body[vs..i])));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Quoted(&'a [u8]),
    Bare(&'a [u8]),
}

impl<'a> Value<'a> {
    /// An "untrusted string" field: quoted is literal, bare is hex (or `(null)`).
    pub(crate) fn untrusted(self) -> Option<Vec<u8>> {
        match self {
            Value::Quoted(b) => Some(b.to_vec()),
            Value::Bare(b"(null)") => None,
            Value::Bare(b) => decode_hex(b),
        }
    }

    pub(crate) fn number<T: std::str::FromStr>(self) -> Option<T> {
        match self {
            Value::Bare(b) | Value::Quoted(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        }
    }

    pub(crate) fn text(self) -> &'a [u8] {
        match self {
            Value::Bare(b) | Value::Quoted(b) => b,
        }
    }
}

pub(crate) fn decode_hex(b: &[u8]) -> Option<Vec<u8>> {
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|c| {
            let h = (c[0] as char).to_digit(16)?;
            let l = (c[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

/// One completed exec, as the kernel reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecRecord {
    pub(crate) unix_ms: i64,
    pub(crate) serial: u64,
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    pub(crate) uid: u32,
    pub(crate) euid: u32,
    pub(crate) gid: u32,
    pub(crate) egid: u32,
    pub(crate) auid: u32,
    pub(crate) ses: u32,
    pub(crate) tty: String,
    pub(crate) exe: Vec<u8>,
    pub(crate) cwd: Vec<u8>,
    pub(crate) argv: Vec<Vec<u8>>,
    pub(crate) argv_truncated: bool,
    pub(crate) success: bool,
}

/// Gathers the records of one audit event (same serial) until `EOE`.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    pending: HashMap<u64, Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    rec: ExecRecord,
    saw_syscall: bool,
    argc: usize,
    /// Argument pieces by index; long arguments arrive as `aN[k]` chunks.
    args: HashMap<usize, Vec<u8>>,
    arg_bytes: usize,
    records: usize,
}

/// Bound on events open at once (records whose EOE never came).
const MAX_PENDING: usize = 1024;

impl Assembler {
    /// Feeds one netlink message (type, text). Returns a finished exec when
    /// this message closes one.
    pub(crate) fn push(&mut self, kind: u16, text: &[u8]) -> Option<ExecRecord> {
        let (stamp, body) = split_header(text)?;
        if kind == AUDIT_EOE {
            return self.pending.remove(&stamp.serial).and_then(Pending::finish);
        }
        if !matches!(kind, AUDIT_SYSCALL | AUDIT_EXECVE | AUDIT_CWD) {
            return None;
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&stamp.serial) {
            // Oldest serials are the ones whose EOE was lost.
            if let Some(&oldest) = self.pending.keys().min() {
                self.pending.remove(&oldest);
            }
        }
        let p = self.pending.entry(stamp.serial).or_default();
        p.rec.unix_ms = stamp.unix_ms;
        p.rec.serial = stamp.serial;
        p.records += 1;
        if p.records > MAX_RECORDS_PER_EVENT {
            return self.pending.remove(&stamp.serial).and_then(Pending::finish);
        }
        let f = fields(body);
        match kind {
            AUDIT_SYSCALL => p.syscall(&f),
            AUDIT_EXECVE => p.execve(&f),
            AUDIT_CWD => {
                if let Some((_, v)) = f.iter().find(|(k, _)| *k == b"cwd") {
                    p.rec.cwd = v.untrusted().unwrap_or_default();
                }
            }
            _ => {}
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl Pending {
    fn syscall(&mut self, f: &[(&[u8], Value<'_>)]) {
        self.saw_syscall = true;
        for (k, v) in f {
            let r = &mut self.rec;
            match *k {
                b"success" => r.success = v.text() == b"yes",
                b"pid" => r.pid = v.number().unwrap_or(0),
                b"ppid" => r.ppid = v.number().unwrap_or(0),
                b"uid" => r.uid = v.number().unwrap_or(0),
                b"euid" => r.euid = v.number().unwrap_or(0),
                b"gid" => r.gid = v.number().unwrap_or(0),
                b"egid" => r.egid = v.number().unwrap_or(0),
                b"auid" => r.auid = v.number().unwrap_or(u32::MAX),
                b"ses" => r.ses = v.number().unwrap_or(u32::MAX),
                b"tty" => r.tty = String::from_utf8_lossy(v.text()).into_owned(),
                b"exe" => r.exe = v.untrusted().unwrap_or_default(),
                _ => {}
            }
        }
    }

    fn execve(&mut self, f: &[(&[u8], Value<'_>)]) {
        for (k, v) in f {
            if *k == b"argc" {
                self.argc = v.number().unwrap_or(0);
                continue;
            }
            let Some(rest) = k.strip_prefix(b"a") else {
                continue;
            };
            let key = std::str::from_utf8(rest).unwrap_or_default();
            // `aN_len=...` announces a split argument; its chunks follow as `aN[k]`.
            if key.ends_with("_len") {
                continue;
            }
            let idx = key.split('[').next().and_then(|n| n.parse::<usize>().ok());
            let Some(idx) = idx else { continue };
            if idx >= 1 << 16 {
                continue;
            }
            let Some(bytes) = v.untrusted() else { continue };
            if self.arg_bytes + bytes.len() > MAX_ARGV_BYTES {
                self.rec.argv_truncated = true;
                continue;
            }
            self.arg_bytes += bytes.len();
            self.args.entry(idx).or_default().extend_from_slice(&bytes);
        }
    }

    fn finish(mut self) -> Option<ExecRecord> {
        if !self.saw_syscall {
            return None;
        }
        let n = self.argc.max(self.args.keys().max().map_or(0, |m| m + 1));
        let mut argv = Vec::with_capacity(n.min(4096));
        for i in 0..n.min(1 << 16) {
            match self.args.remove(&i) {
                Some(a) => argv.push(a),
                None => {
                    self.rec.argv_truncated = true;
                    break;
                }
            }
        }
        self.rec.argv = argv;
        Some(self.rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &str = r#"audit(1732233600.123:77): arch=c000003e syscall=59 success=yes exit=0 a0=55d0 a1=55d1 a2=55d2 a3=0 items=2 ppid=100 pid=4242 auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" key="vigil""#;

    #[test]
    fn assembles_an_exec() {
        let mut a = Assembler::default();
        assert!(a.push(AUDIT_SYSCALL, SYSCALL.as_bytes()).is_none());
        assert!(a.push(AUDIT_EXECVE, br#"audit(1732233600.123:77): argc=3 a0="cat" a1=2F746D702F6120622063 a2="/etc/shadow""#).is_none());
        assert!(
            a.push(AUDIT_CWD, br#"audit(1732233600.123:77): cwd="/root""#)
                .is_none()
        );
        assert!(
            a.push(
                AUDIT_PROCTITLE,
                b"audit(1732233600.123:77): proctitle=636174"
            )
            .is_none()
        );
        let e = a.push(AUDIT_EOE, b"audit(1732233600.123:77): ").unwrap();
        assert_eq!(e.pid, 4242);
        assert_eq!(e.ppid, 100);
        assert_eq!(e.auid, 1000);
        assert_eq!(e.unix_ms, 1_732_233_600_123);
        assert_eq!(e.exe, b"/usr/bin/cat");
        assert_eq!(e.cwd, b"/root");
        assert_eq!(
            e.argv,
            vec![
                b"cat".to_vec(),
                b"/tmp/a b c".to_vec(),
                b"/etc/shadow".to_vec()
            ]
        );
        assert!(e.success && !e.argv_truncated);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn split_arguments_join() {
        let mut a = Assembler::default();
        a.push(AUDIT_SYSCALL, SYSCALL.as_bytes());
        a.push(
            AUDIT_EXECVE,
            br#"audit(1732233600.123:77): argc=2 a0="x" a1_len=6 a1[0]=616263"#,
        );
        a.push(AUDIT_EXECVE, br#"audit(1732233600.123:77): a1[1]=646566"#);
        let e = a.push(AUDIT_EOE, b"audit(1732233600.123:77): ").unwrap();
        assert_eq!(e.argv, vec![b"x".to_vec(), b"abcdef".to_vec()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut a = Assembler::default();
        for junk in [
            &b""[..],
            b"audit(",
            b"audit(x:y): a",
            b"audit(1.2:3): =\"",
            b"audit(1.2:3): a0=ZZ a1=\"",
            b"audit(99999999999999999999.1:1): ",
        ] {
            for kind in [
                AUDIT_SYSCALL,
                AUDIT_EXECVE,
                AUDIT_CWD,
                AUDIT_EOE,
                AUDIT_PATH,
            ] {
                let _ = a.push(kind, junk);
            }
        }
        // An EOE without a SYSCALL yields nothing.
        a.push(AUDIT_EXECVE, b"audit(5.0:9): argc=1 a0=\"x\"");
        assert!(a.push(AUDIT_EOE, b"audit(5.0:9): ").is_none());
        assert_eq!(decode_hex(b"4"), None);
        assert_eq!(decode_hex(b"zz"), None);
    }

    #[test]
    fn pending_is_bounded() {
        let mut a = Assembler::default();
        for serial in 0..(MAX_PENDING as u64 + 50) {
            a.push(
                AUDIT_CWD,
                format!("audit(1.0:{serial}): cwd=\"/\"").as_bytes(),
            );
        }
        assert_eq!(a.pending(), MAX_PENDING);
    }
}
