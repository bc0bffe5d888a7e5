//! A record in one line, as people read it: `vigil hunt` prints it beside
//! each stored record and `vigil-sensor inspect` beside each spooled one.

use vigil_proto::v1::{Direction, NetworkConnection, Path as PbPath, Record, record::Payload};

/// Text from a record or another user, safe to print on a terminal: control
/// characters (newlines, escape sequences) escaped, so it can neither break
/// a table into more lines nor send the terminal commands.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn path(p: &Option<PbPath>) -> &str {
    p.as_ref().map_or("", |p| p.text.as_str())
}

/// What a record says, in one line: a process's command line (or
/// executable), a file operation and path, a connection, a rule title.
pub fn summary(r: &Record) -> String {
    match &r.payload {
        Some(Payload::ProcessStart(p)) => {
            if p.command_line.is_empty() {
                path(&p.executable).to_owned()
            } else {
                p.command_line.clone()
            }
        }
        Some(Payload::ProcessExit(e)) => {
            if e.exit_signal != 0 {
                format!("pid {} killed by signal {}", e.pid, e.exit_signal)
            } else {
                format!("pid {} exited {}", e.pid, e.exit_code)
            }
        }
        Some(Payload::File(f)) => {
            let op = short(f.operation().as_str_name(), "FILE_OPERATION_");
            let previous = path(&f.previous_path);
            let mut s = if previous.is_empty() {
                format!("{op} {}", path(&f.path))
            } else {
                format!("{op} {previous} → {}", path(&f.path))
            };
            if !f.persistence.is_empty() {
                s.push_str(&format!(" (persistence: {})", f.persistence));
            }
            s
        }
        Some(Payload::Registry(g)) => {
            let op = short(g.operation().as_str_name(), "REGISTRY_OPERATION_");
            let mut s = format!("{op} {}", g.key_path);
            if !g.value_name.is_empty() {
                s.push_str(&format!(" {}", g.value_name));
            }
            if !g.new_key_path.is_empty() {
                s.push_str(&format!(" → {}", g.new_key_path));
            }
            s
        }
        Some(Payload::Network(n)) => network(n),
        Some(Payload::Host(h)) => format!(
            "{} {} {}, kernel {}, sensor {}",
            h.hostname, h.os_name, h.os_version, h.kernel_version, h.sensor_version
        ),
        Some(Payload::Health(h)) => {
            let lost: u64 = h.dropped.values().sum();
            let state = if h.degraded.is_empty() {
                "ok".to_owned()
            } else {
                format!("degraded: {}", h.degraded.join(", "))
            };
            format!("{state}; lost {lost}; spool {} records", h.spool_records)
        }
        Some(Payload::Detection(d)) => d.rule_title.clone(),
        Some(Payload::Diagnostics(d)) => {
            let mut s = format!("diagnostics over {} s", d.interval_seconds);
            if let Some(c) = &d.crash {
                s.push_str(&format!("; crashed at {}: {}", c.location, c.message));
            }
            s
        }
        None => String::new(),
    }
}

/// `outbound tcp 10.0.0.5:43210→93.184.216.34:443`; a listening socket has no remote end.
fn network(n: &NetworkConnection) -> String {
    let direction = short(n.direction().as_str_name(), "DIRECTION_");
    let protocol = short(n.protocol().as_str_name(), "TRANSPORT_PROTOCOL_");
    let local = endpoint(&n.local_address, n.local_port);
    if n.direction() == Direction::Listen || n.remote_address.is_empty() {
        format!("{direction} {protocol} {local}")
    } else {
        let remote = endpoint(&n.remote_address, n.remote_port);
        format!("{direction} {protocol} {local}→{remote}")
    }
}

/// An address and port, IPv6 in brackets (`[::1]:22`).
fn endpoint(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// `FILE_OPERATION_CLOSE_WRITE` as `close_write`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}
