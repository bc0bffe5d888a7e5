//! `network_connection`: a connection as Sysmon's event 3 shows it.

use crate::{int, known, path, text, values_of};
use std::borrow::Cow;
use vigil_proto::v1::{Direction, NetworkConnection, TransportProtocol};
use vigil_rules::{Event, FieldValue};

pub(crate) const FIELDS: &[&str] = &[
    "Initiated",
    "Protocol",
    "SourceIp",
    "SourcePort",
    "SourceIsIpv6",
    "DestinationIp",
    "DestinationPort",
    "DestinationIsIpv6",
    "Image",
    "ProcessId",
    "ProcessGuid",
    "CommandLine",
    "User",
];

/// Whether `network_connection` rules see this connection. Sysmon logs
/// connections made and accepted, never a socket that only listens: a
/// listener has no destination, and rules such as "bash connects anywhere
/// but 127.0.0.1" (`selection and not filter` on `DestinationIp`) would fire
/// on every shell that opens a port.
pub(crate) fn is_connection(c: &NetworkConnection) -> bool {
    matches!(c.direction(), Direction::Outbound | Direction::Inbound)
}

/// A connection as Sigma's `network_connection` category sees it. Source is
/// the side that initiated: the local end for an outbound connection, the
/// remote end for an inbound one (whose destination port is then the local
/// listening port, as in Sysmon's `Initiated: 'false'` events).
pub struct NetworkEvent<'a> {
    pub connection: &'a NetworkConnection,
}

impl NetworkEvent<'_> {
    fn outbound(&self) -> bool {
        self.connection.direction() == Direction::Outbound
    }

    fn ends(&self) -> ((&str, u32), (&str, u32)) {
        let c = self.connection;
        let local = (c.local_address.as_str(), c.local_port);
        let remote = (c.remote_address.as_str(), c.remote_port);
        if self.outbound() {
            (local, remote)
        } else {
            (remote, local)
        }
    }
}

fn is_v6(addr: &str) -> Option<FieldValue<'static>> {
    (!addr.is_empty()).then(|| FieldValue::Str(Cow::Borrowed(bool_text(addr.contains(':')))))
}

fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl Event for NetworkEvent<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        let c = self.connection;
        let proc = c.process.as_ref();
        let ((src, sport), (dst, dport)) = self.ends();
        match name {
            // Text, as Sysmon writes it; the engine also matches YAML `true`.
            "Initiated" => text(bool_text(self.outbound())),
            "Protocol" => match c.protocol() {
                TransportProtocol::Tcp => text("tcp"),
                TransportProtocol::Udp => text("udp"),
                TransportProtocol::Unspecified => None,
            },
            "SourceIp" => known(src),
            "SourcePort" => int(sport),
            "SourceIsIpv6" => is_v6(src),
            "DestinationIp" => known(dst),
            "DestinationPort" => int(dport),
            "DestinationIsIpv6" => is_v6(dst),
            "Image" => text(path(&proc?.executable)?),
            "ProcessId" => int(proc?.pid),
            "ProcessGuid" => known(&proc?.guid),
            "CommandLine" => known(&proc?.command_line),
            "User" => known(&c.user_name),
            _ => None,
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        values_of(self, FIELDS.iter().map(|n| Cow::Borrowed(*n)))
    }
}
