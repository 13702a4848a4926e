//! End-to-end tests against the real `inferd` binary, real ONNX Runtime and the fixture
//! models. One test binary (modules below) keeps link time down on small machines.
//!
//! Needs the ONNX Runtime shared library: `scripts/test.sh` (or `. scripts/env.sh`) sets it up.

mod auth;
mod bad_input;
mod batching;
mod collections;
mod common;
mod deploy;
mod drift;
mod embeddings;
mod experiments;
mod features;
mod fuzz;
mod grpc;
mod jwt;
mod limits;
mod logs;
mod overload;
mod quickstart;
mod registry;
mod routes;
mod semantic_search;
mod shutdown;
mod tls;
