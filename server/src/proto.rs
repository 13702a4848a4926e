//! Generated protobuf and gRPC code for `proto/*.proto` (see `build.rs`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// inferd's own services (`proto/inferd.proto`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inferd {
    tonic::include_proto!("inferd.v1");
}
