//! Vigil's wire schema (`proto/vigil/v1`), generated at build time.
//!
//! This crate is generated code and the encoded file descriptor set, nothing
//! more: no conversions, no logic. Everything else in Vigil depends on it for
//! the types that cross a process boundary.

#![allow(missing_docs, clippy::all)]

pub mod v1 {
    tonic::include_proto!("vigil.v1");
}

/// Encoded `FileDescriptorSet` of the v1 schema, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));
