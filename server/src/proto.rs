//! Generated protobuf and gRPC code for `proto/*.proto` (see `build.rs`).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inference {
    tonic::include_proto!("inference");
}
