//! Vigil's wire schema (`proto/vigil/v1`), generated at build time.
//!
//! This crate is generated code and the encoded file descriptor set, nothing
//! more: no conversions, no logic. Everything else in Vigil depends on it for
//! the types that cross a process boundary.

#![allow(missing_docs, clippy::all)]

pub mod v1 {
    tonic::include_proto!("vigil.v1");

    /// The Ingest service once more, as the server implements it and as
    /// sensors call it: `Stream` carries each batch as a [`RawRecordBatch`]
    /// (the same wire format as `RecordBatch`, records left as bytes), so a
    /// record travels as the bytes the sensor spooled. Every message is `v1`'s.
    pub mod raw {
        include!(concat!(env!("OUT_DIR"), "/raw/vigil.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of the v1 schema, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));
