//! Generated protobuf and gRPC code for `proto/*.proto` (see `build.rs`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// inferd's own services (`proto/inferd.proto`, and `vector.proto`, `features.proto`,
/// `experiments.proto` and `drift.proto`, which share its package `inferd.v1` and so are generated into the
/// same module).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inferd {
    tonic::include_proto!("inferd.v1");
}

include!(concat!(env!("OUT_DIR"), "/grpc_methods.rs"));
