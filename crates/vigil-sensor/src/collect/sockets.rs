//! The listening sockets at start, with their owning processes: the network
//! inventory that the eBPF source's listen/close records then keep current.
//! Read from /proc/net/{tcp,tcp6,udp,udp6} and /proc/PID/fd.

use super::NetInfo;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use vigil_proto::v1::{Direction, TransportProtocol};

/// A socket line's local address ("0100007F:1F90" or its 32-hex-digit v6 form).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            // Four host-order 32-bit words.
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Listening sockets of one /proc/net table: (local address, inode).
fn listeners(table: &str, tcp: bool) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = parse_addr(f.get(1)?)?;
            let state = *f.get(3)?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            // TCP: LISTEN (0A). UDP: bound and unconnected (07, no remote port).
            let listening = if tcp {
                state == "0A"
            } else {
                state == "07" && f.get(2)?.ends_with(":0000") && local.port() != 0
            };
            (listening && inode != 0).then_some((local, inode))
        })
        .collect()
}

/// Socket inode → owning process, from every /proc/PID/fd.
fn socket_owners() -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
            {
                owners.entry(inode).or_insert(pid);
            }
        }
    }
    owners
}

/// Every listening TCP and UDP socket now, as network records of origin "inventory".
pub(crate) fn listening(now_ns: i64) -> Vec<NetInfo> {
    let owners = socket_owners();
    let mut out = Vec::new();
    for (file, tcp) in [
        ("/proc/net/tcp", true),
        ("/proc/net/tcp6", true),
        ("/proc/net/udp", false),
        ("/proc/net/udp6", false),
    ] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for (local, inode) in listeners(&table, tcp) {
            let pid = owners.get(&inode).copied().unwrap_or(0);
            let unspecified = if local.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            out.push(NetInfo {
                pid,
                unix_ns: now_ns,
                protocol: if tcp {
                    TransportProtocol::Tcp
                } else {
                    TransportProtocol::Udp
                },
                direction: Direction::Listen,
                local,
                remote: SocketAddr::new(unspecified, 0),
                state: "listening",
                process_uid: super::procfs::ids(pid).map_or(u32::MAX, |(uid, _)| uid.0),
                origin: "inventory",
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(
            listeners(tcp, true),
            vec![("127.0.0.1:8080".parse().unwrap(), 12345)]
        );
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0 0\n";
        assert_eq!(
            listeners(udp6, false),
            vec![("[::1]:53".parse().unwrap(), 777)]
        );
        assert!(listeners("header\ngarbage line\n", true).is_empty());
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = listening(0);
        assert!(
            found
                .iter()
                .any(|n| n.local.port() == port && n.pid == std::process::id()),
            "{found:?}"
        );
    }
}
