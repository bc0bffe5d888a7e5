//! What ingest reads of an encoded `Record` without decoding it: the server
//! stores each record as the bytes the sensor sent (`RawRecordBatch`), so it
//! only walks the record's top-level fields — each tag, varint and length
//! well formed and inside the bytes, the known fields with their wire types —
//! and takes the sequence, the time, and which payload it carries (a
//! detection is then decoded in full, to become an alert).

/// The parts of a record ingest needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHead {
    /// `Record.sequence` (0 when absent, as protobuf reads it).
    pub(crate) sequence: u64,
    /// The payload (the last of the oneof's fields present) is a `Detection`.
    pub(crate) detection: bool,
    /// `Record.time_unix_ns` (0 when absent).
    pub(crate) time: i64,
    /// The payload's field number (10..=18; 0: none).
    pub(crate) payload: u64,
    /// `Record.level` as sent (0: unspecified, read as required).
    pub(crate) level: u64,
}

/// `Record` field numbers (records.proto).
const SEQUENCE: u64 = 1;
const TIME: u64 = 2;
const LEVEL: u64 = 3;
const PAYLOADS: std::ops::RangeInclusive<u64> = 10..=18;
const DETECTION: u64 = 17;

/// Reads one varint (at most 10 bytes, no overflow), as protobuf does.
fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `Record`'s fields below the payloads: 1 to 5 (records.proto).
const LAST_PLAIN: u64 = 5;

/// How deep prost skips nested groups (its recursion limit).
const GROUP_DEPTH: usize = 100;

/// Skips an unknown field sent as a group, as prost does: every field inside
/// skipped up to the end of the same field number, groups nested at most
/// [`GROUP_DEPTH`] deep. `None` when prost would refuse it.
fn skip_group(b: &mut &[u8], field: u64) -> Option<()> {
    let mut open = vec![field];
    while let Some(&top) = open.last() {
        let key = varint(b)?;
        let (inner, wire) = (key >> 3, key & 7);
        if inner == 0 || inner > (1 << 29) - 1 {
            return None;
        }
        if wire == 4 {
            if inner != top {
                return None;
            }
            open.pop();
            continue;
        }
        if open.len() >= GROUP_DEPTH {
            return None;
        }
        match wire {
            0 => {
                varint(b)?;
            }
            1 => *b = b.get(8..)?,
            5 => *b = b.get(4..)?,
            2 => {
                let len = usize::try_from(varint(b)?).ok()?;
                *b = b.get(len..)?;
            }
            3 => open.push(inner),
            _ => return None,
        }
    }
    Some(())
}

/// Walks the top-level fields of an encoded `Record`; `None` when they are not
/// well formed (anything `prost` would refuse at this level).
pub(crate) fn record_head(mut b: &[u8]) -> Option<RecordHead> {
    let mut head = RecordHead {
        sequence: 0,
        detection: false,
        time: 0,
        payload: 0,
        level: 0,
    };
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 || field > (1 << 29) - 1 {
            return None;
        }
        match wire {
            0 => {
                let v = varint(&mut b)?;
                if PAYLOADS.contains(&field) {
                    return None;
                }
                if field == SEQUENCE {
                    head.sequence = v;
                }
                if field == TIME {
                    // int64 on the wire: two's complement in a varint.
                    head.time = v as i64;
                }
                if field == LEVEL {
                    head.level = v;
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                b = b.get(len..)?;
                if field == SEQUENCE || field == TIME {
                    return None;
                }
                // A packed repeated enum is legal on the wire; prost reads its last value.
                if field == LEVEL {
                    return None;
                }
                if PAYLOADS.contains(&field) {
                    head.detection = field == DETECTION;
                    head.payload = field;
                }
            }
            1 | 5 => {
                if field == SEQUENCE || field == TIME || field == LEVEL || PAYLOADS.contains(&field)
                {
                    return None;
                }
                b = b.get(if wire == 1 { 8 } else { 4 }..)?;
            }
            // Groups are not in proto3, but prost skips an unknown field sent
            // as one (and refuses a known field sent as one, and a stray end).
            3 => {
                if field <= LAST_PLAIN || PAYLOADS.contains(&field) {
                    return None;
                }
                skip_group(&mut b, field)?;
            }
            // 4 ends a group never started; 6 and 7 are not wire types.
            _ => return None,
        }
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message;
    use vigil_proto::v1::{Detection, ProcessExit, Record, record::Payload};

    fn rec(seq: u64, payload: Option<Payload>) -> Vec<u8> {
        Record {
            sequence: seq,
            time_unix_ns: -5,
            payload,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn reads_what_prost_reads() {
        let exit = Some(Payload::ProcessExit(ProcessExit {
            guid: "g".into(),
            pid: 7,
            ..Default::default()
        }));
        let det = Some(Payload::Detection(Detection {
            rule_id: "r".into(),
            ..Default::default()
        }));
        for (seq, payload, detection) in [
            (1, exit.clone(), false),
            (u64::MAX, det.clone(), true),
            (0, None, false),
            (300, det, true),
        ] {
            let b = rec(seq, payload);
            let head = record_head(&b).unwrap();
            assert_eq!(
                (head.sequence, head.detection, head.time),
                (seq, detection, -5)
            );
            let r = Record::decode(b.as_slice()).unwrap();
            assert_eq!(head.payload == 0, r.payload.is_none());
            assert_eq!(Record::decode(b.as_slice()).unwrap().sequence, seq);
        }
        // The level, as prost reads it.
        let optional = Record {
            sequence: 9,
            level: vigil_proto::v1::DataLevel::Optional as i32,
            payload: Some(Payload::Diagnostics(Default::default())),
            ..Default::default()
        }
        .encode_to_vec();
        let head = record_head(&optional).unwrap();
        assert_eq!((head.level, head.payload), (2, 18));
        assert_eq!(record_head(&rec(1, None)).unwrap().level, 0);
        // Repeated scalar: the last wins; oneof: the last payload wins.
        let mut b = rec(5, Some(Payload::Detection(Detection::default())));
        b.extend(rec(9, exit));
        let head = record_head(&b).unwrap();
        let r = Record::decode(b.as_slice()).unwrap();
        assert_eq!(head.sequence, r.sequence);
        assert_eq!(
            head.detection,
            matches!(r.payload, Some(Payload::Detection(_)))
        );
        assert!(!head.detection);
        // Unknown fields of every wire type are skipped, as prost skips them.
        let mut b = rec(3, None);
        b.extend([0xa0, 0x06, 0x01]); // field 100, varint
        b.extend([0xa9, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // field 101, fixed64
        b.extend([0xb5, 0x06, 1, 2, 3, 4]); // field 102, fixed32
        b.extend([0xba, 0x06, 2, 9, 9]); // field 103, bytes
        assert_eq!(record_head(&b).unwrap().sequence, 3);
        assert!(Record::decode(b.as_slice()).is_ok());
    }

    /// Found by the fuzzer (fuzz/regressions/server_record): prost skips an
    /// unknown field sent as a group; ingest refused the whole record.
    #[test]
    fn skips_unknown_groups_as_prost_does() {
        let crash = [
            0x08, 0x03, 0x62, 0x00, 0x08, 0x00, 0x10, 0x2c, 0x80, 0x3b, 0x30, 0x30, 0x30, 0x30,
            0x30, 0x30, 0xd4, 0x30, 0x30, 0x30, 0x33, 0x39, 0x36, 0x35, 0xa4, 0x39, 0x35, 0x33,
            0x30, 0x36, 0x2d, 0x67, 0x79, 0x79, 0x79, 0x79, 0x79, 0x36, 0x38, 0x34, 0x37, 0x34,
            0x39, 0x31, 0x34, 0x31, 0xdf, 0x08, 0x03, 0x62, 0xd4, 0x00, 0xff, 0xdf,
        ];
        let r = Record::decode(crash.as_slice());
        let head = record_head(&crash);
        assert_eq!(head.is_some(), r.is_ok());
        // Field 100 as a group holding a varint, a nested group, bytes, fixed64 and fixed32.
        let mut b = rec(7, None);
        b.extend([
            0xa3, 0x06, 0x08, 0x01, 0xab, 0x06, 0xac, 0x06, 0x12, 0x01, 0x00,
        ]);
        b.extend([0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4, 0xa4, 0x06]);
        assert!(Record::decode(b.as_slice()).is_ok());
        assert_eq!(record_head(&b).unwrap().sequence, 7);
        // Nested as deep as prost goes, and one deeper.
        for depth in [99, 100, 101] {
            let mut b = rec(7, None);
            b.extend(std::iter::repeat_n([0xa3, 0x06], depth).flatten());
            b.extend(std::iter::repeat_n([0xa4, 0x06], depth).flatten());
            assert_eq!(
                record_head(&b).is_some(),
                Record::decode(b.as_slice()).is_ok(),
                "{depth}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_well_formed() {
        let good = rec(42, Some(Payload::Detection(Detection::default())));
        // Every cut inside a field is refused, by us and by prost.
        for cut in 1..good.len() {
            let ours = record_head(&good[..cut]);
            let theirs = Record::decode(&good[..cut]);
            assert_eq!(ours.is_some(), theirs.is_ok(), "cut at {cut}");
        }
        for bad in [
            vec![0x08], // sequence without its value
            vec![
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // overlong varint
            vec![0x0a, 0x00], // sequence as bytes
            vec![0x1a, 0x01, 0x02], // level as bytes
            vec![0x50, 0x01], // process_start (10) as a varint
            vec![0x52, 0x05, 0x01], // process_start longer than the record
            vec![0x00, 0x01], // field 0
            vec![0x0b], // a group
            vec![0x1b, 0x1c], // level as a group
            vec![0xa3, 0x06], // an unknown group never ended
            vec![0xa3, 0x06, 0xac, 0x06], // ended by another field's end
            vec![0xa4, 0x06], // an end never started
            vec![0x0e], // wire type 6
        ] {
            assert_eq!(record_head(&bad), None, "{bad:?}");
            assert!(Record::decode(bad.as_slice()).is_err(), "{bad:?}");
        }
    }
}
