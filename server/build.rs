//! Compiles `proto/*.proto` with `protox` (a pure-Rust protobuf compiler), so building inferd
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "grpc_service.proto",
        "model_config.proto",
        "inferd.proto",
        "vector.proto",
        "features.proto",
        "experiments.proto",
        "drift.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(f).display());
    }
    let descriptors = protox::compile(files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)?;
    Ok(())
}
