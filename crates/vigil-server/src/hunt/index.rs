//! What the record index keeps of each record (`vigil_store::RecordIndex`):
//! its kind and time, the values it is found by, the values counted for
//! prevalence, and whether it is a device's latest state. Materials are
//! `name NUL value`; the store keeps only keyed digests of them.

use vigil_proto::v1::{Hashes, Path as PbPath, ProcessRef, Record, record::Payload};
use vigil_store::RecordIndex;

/// Record kinds by number (the payload's field number − 10), as the index
/// and `SearchEventsRequest.kind` name them.
pub(crate) use vigil_evaluate::RECORD_KINDS as KINDS;
pub(crate) const HOST: u8 = 5;
pub(crate) const HEALTH: u8 = 6;

pub(crate) fn kind_of(p: &Payload) -> u8 {
    match p {
        Payload::ProcessStart(_) => 0,
        Payload::ProcessExit(_) => 1,
        Payload::File(_) => 2,
        Payload::Registry(_) => 3,
        Payload::Network(_) => 4,
        Payload::Host(_) => HOST,
        Payload::Health(_) => HEALTH,
        Payload::Detection(_) => 7,
        Payload::Diagnostics(_) => 8,
    }
}

pub(crate) fn kind_named(name: &str) -> Option<u8> {
    KINDS.iter().position(|k| *k == name).map(|i| i as u8)
}

/// What a term is about. The names are part of the stored digests: never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Term {
    /// A process GUID: the process started or ended, or the one that acted.
    Guid,
    /// A started process's parent GUID.
    Parent,
    /// An executable or file path (text form).
    Path,
    Sha256,
    Blake3,
    User,
    /// A local or remote address of a connection.
    Ip,
}

impl Term {
    fn name(self) -> &'static str {
        match self {
            Term::Guid => "guid",
            Term::Parent => "parent",
            Term::Path => "path",
            Term::Sha256 => "sha256",
            Term::Blake3 => "blake3",
            Term::User => "user",
            Term::Ip => "ip",
        }
    }

    pub(crate) fn material(self, value: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.name().len() + 1 + value.len());
        m.extend_from_slice(self.name().as_bytes());
        m.push(0);
        m.extend_from_slice(value.as_bytes());
        m
    }

    /// The term that finds every record whose Sigma field `field` equals a
    /// value (sound: each record that has the field is indexed under it).
    pub(crate) fn for_field(field: &str) -> Option<Term> {
        Some(match field {
            "ProcessGuid" => Term::Guid,
            "ParentProcessGuid" => Term::Parent,
            "Image" | "TargetFilename" | "SourceFilename" => Term::Path,
            "sha256" => Term::Sha256,
            "blake3" => Term::Blake3,
            "User" => Term::User,
            "SourceIp" | "DestinationIp" => Term::Ip,
            _ => return None,
        })
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn path_text(p: &Option<PbPath>) -> Option<&str> {
    p.as_ref()
        .map(|p| p.text.as_str())
        .filter(|t| !t.is_empty())
}

struct Builder {
    ix: RecordIndex,
}

impl Builder {
    fn term(&mut self, t: Term, v: &str) {
        if !v.is_empty() {
            self.ix.terms.push(t.material(v));
        }
    }

    fn seen(&mut self, t: Term, v: &str) {
        if !v.is_empty() {
            let m = t.material(v);
            self.ix.terms.push(m.clone());
            self.ix.sightings.push(m);
        }
    }

    fn hashes(&mut self, h: &Option<Hashes>) {
        if let Some(h) = h {
            if !h.sha256.is_empty() {
                self.seen(Term::Sha256, &hex(&h.sha256));
            }
            if !h.blake3.is_empty() {
                self.seen(Term::Blake3, &hex(&h.blake3));
            }
        }
    }

    fn process(&mut self, p: &Option<ProcessRef>) {
        if let Some(p) = p {
            self.term(Term::Guid, &p.guid);
            if let Some(exe) = path_text(&p.executable) {
                self.term(Term::Path, exe);
            }
        }
    }
}

/// What ingest keeps of a record it did not decode (from its top-level
/// fields: time and payload field number): its chunk's time bounds and
/// kinds, and whether it is a device's latest state. Its values are indexed
/// later, from the stored bytes ([`record_index`]).
pub(crate) fn head_index(time_ns: i64, payload_field: u64) -> RecordIndex {
    let kind = match payload_field {
        10..=18 => (payload_field - 10) as u8,
        // No payload: no kind filter picks it.
        _ => 31,
    };
    RecordIndex {
        time_ns,
        kind,
        latest: kind == HOST || kind == HEALTH,
        ..RecordIndex::default()
    }
}

/// The index entry of one record.
pub(crate) fn record_index(r: &Record) -> RecordIndex {
    let mut b = Builder {
        ix: RecordIndex {
            time_ns: r.time_unix_ns,
            optional: r.level == vigil_proto::v1::DataLevel::Optional as i32,
            ..RecordIndex::default()
        },
    };
    let Some(p) = &r.payload else {
        // Kind bit 31: no kind filter picks a record without payload.
        b.ix.kind = 31;
        return b.ix;
    };
    b.ix.kind = kind_of(p);
    match p {
        Payload::ProcessStart(s) => {
            b.term(Term::Guid, &s.guid);
            b.term(Term::Parent, &s.parent_guid);
            if let Some(exe) = path_text(&s.executable) {
                b.seen(Term::Path, exe);
            }
            b.hashes(&s.executable_hashes);
            b.term(Term::User, &s.user_name);
        }
        Payload::ProcessExit(e) => b.term(Term::Guid, &e.guid),
        Payload::File(f) => {
            b.process(&f.process);
            if let Some(path) = path_text(&f.path) {
                b.seen(Term::Path, path);
            }
            if let Some(prev) = path_text(&f.previous_path) {
                b.term(Term::Path, prev);
            }
            b.hashes(&f.hashes);
            b.term(Term::User, &f.user_name);
        }
        Payload::Registry(g) => b.process(&g.process),
        Payload::Network(n) => {
            b.process(&n.process);
            b.term(Term::Ip, &n.local_address);
            b.term(Term::Ip, &n.remote_address);
            b.term(Term::User, &n.user_name);
        }
        Payload::Detection(d) => b.process(&d.process),
        Payload::Host(_) | Payload::Health(_) => b.ix.latest = true,
        Payload::Diagnostics(_) => {}
    }
    b.ix
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vigil_proto::v1::{FileEvent, ProcessStart, SensorHealth};

    #[test]
    fn a_process_start_is_found_by_its_guid_parent_path_and_hashes() {
        let r = Record {
            sequence: 1,
            time_unix_ns: 42,
            payload: Some(Payload::ProcessStart(ProcessStart {
                guid: "g1".into(),
                parent_guid: "g0".into(),
                executable: Some(PbPath {
                    text: "/usr/bin/cat".into(),
                    ..Default::default()
                }),
                executable_hashes: Some(Hashes {
                    sha256: vec![0xab; 32],
                    ..Default::default()
                }),
                user_name: "root".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let ix = record_index(&r);
        assert_eq!((ix.time_ns, ix.kind, ix.latest), (42, 0, false));
        for m in [
            Term::Guid.material("g1"),
            Term::Parent.material("g0"),
            Term::Path.material("/usr/bin/cat"),
            Term::Sha256.material(&"ab".repeat(32)),
            Term::User.material("root"),
        ] {
            assert!(ix.terms.contains(&m), "{m:?}");
        }
        assert_eq!(
            ix.sightings,
            vec![
                Term::Path.material("/usr/bin/cat"),
                Term::Sha256.material(&"ab".repeat(32))
            ]
        );
        // No empty value becomes a term (blake3 was missing).
        assert!(!ix.terms.iter().any(|t| t.starts_with(b"blake3")));
    }

    #[test]
    fn a_file_event_is_found_by_its_process_and_paths_and_health_is_latest() {
        let f = Record {
            payload: Some(Payload::File(FileEvent {
                path: Some(PbPath {
                    text: "/tmp/x".into(),
                    ..Default::default()
                }),
                process: Some(ProcessRef {
                    guid: "p".into(),
                    executable: Some(PbPath {
                        text: "/bin/sh".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let ix = record_index(&f);
        assert_eq!(ix.kind, kind_named("file").unwrap());
        assert!(ix.terms.contains(&Term::Guid.material("p")));
        assert!(ix.terms.contains(&Term::Path.material("/bin/sh")));
        assert_eq!(ix.sightings, vec![Term::Path.material("/tmp/x")]);
        let h = record_index(&Record {
            payload: Some(Payload::Health(SensorHealth::default())),
            ..Default::default()
        });
        assert!(h.latest && h.terms.is_empty());
        assert_eq!(h.kind, HEALTH);
        // The numbering names kinds as the JSON form does, and ingest's
        // reading of the top-level fields agrees with it.
        for (p, field) in [
            (Payload::ProcessStart(ProcessStart::default()), 10),
            (Payload::File(FileEvent::default()), 12),
            (Payload::Health(SensorHealth::default()), 16),
        ] {
            let k = kind_of(&p);
            assert_eq!(KINDS[k as usize], vigil_evaluate::record_kind(&p));
            assert_eq!(head_index(7, field).kind, k);
        }
        assert_eq!(head_index(7, 0).kind, 31);
        assert!(head_index(7, 15).latest && !head_index(7, 10).latest);
    }
}
