//! Services for operators and their tools rather than for sensors or analysts.
//!
//! gRPC server reflection (v1): `grpcurl` and similar tools list the services
//! and describe their messages without a copy of `proto/`. It serves the
//! schema only, which is public; every call it describes still needs its own
//! credentials.

use crate::ServerError;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};

/// The reflection service, describing every service the server registers:
/// Vigil's v1 schema, gRPC health, and reflection itself.
pub(crate) fn reflection() -> Result<ServerReflectionServer<impl ServerReflection>, ServerError> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET)
        // Health's descriptors are not in ours; without them grpcurl cannot
        // describe grpc.health.v1.Health although it answers.
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Transport(format!("reflection service: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_descriptor_sets_build_a_reflection_service() {
        assert!(super::reflection().is_ok());
    }
}
