//! Privacy on the device: which level a record is, and the tenant's keyed
//! pseudonyms applied to every record before it is evaluated, spooled or sent.

use vigil_proto::v1::{DataLevel, record::Payload};

/// A record's data level: the sensor's own diagnostics beyond health are
/// optional, everything else is required security telemetry.
pub(crate) fn level_of(p: &Payload) -> DataLevel {
    match p {
        Payload::Diagnostics(_) => DataLevel::Optional,
        _ => DataLevel::Required,
    }
}
