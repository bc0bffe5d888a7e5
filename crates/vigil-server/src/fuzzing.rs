//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the replay
//! of their corpora and regressions in `cargo test` (`tests/fuzz_regressions.rs`).
//! Public only so that they can reach `wire` and `hunt::index`, which stay
//! crate-private; not an API.

use prost::Message;
use vigil_proto::v1::{Detection, Record, record::Payload};

/// One encoded record as ingest reads it: its top-level fields walked
/// (`wire::record_head`), decoded by prost, indexed. `record_head` accepts
/// every record prost decodes and reads the same sequence, time, level and
/// payload; what it accepts and prost refuses is refused deeper (a payload
/// that does not decode), never at the top level.
pub fn record(bytes: &[u8]) {
    let head = crate::wire::record_head(bytes);
    match (head, Record::decode(bytes)) {
        (Some(h), Ok(r)) => {
            assert_eq!(h.sequence, r.sequence);
            assert_eq!(h.time, r.time_unix_ns);
            assert_eq!(h.level as i32, r.level);
            assert_eq!(h.payload == 0, r.payload.is_none());
            assert_eq!(
                h.detection,
                matches!(r.payload, Some(Payload::Detection(_)))
            );
            let ix = crate::hunt::index::head_index(h.time, h.payload);
            let full = crate::hunt::index::record_index(&r);
            assert_eq!(
                (ix.time_ns, ix.kind, ix.latest),
                (full.time_ns, full.kind, full.latest)
            );
        }
        (None, Ok(r)) => panic!("record_head refuses a record prost decodes: {r:?}"),
        (Some(_), Err(_)) | (None, Err(_)) => {}
    }
    if let Ok(d) = Detection::decode(bytes) {
        // What ingest makes of a detection: re-encoded, it decodes to the
        // same detection. (Not to the same bytes: prost writes a map's
        // entries in its HashMap's order, which differs between two decodes;
        // fuzz/regressions/server_record/crash-a799….)
        let again = Detection::decode(d.encode_to_vec().as_slice());
        assert_eq!(again.ok().as_ref(), Some(&d));
    }
}
