//! Compiles `proto/*.proto` with `protox` (a pure-Rust protobuf compiler), so building inferd
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a build script binary
    // reused for another checkout of the same revision must find that checkout's protos.
    let proto_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        "grpc_service.proto",
        "model_config.proto",
        "inferd.proto",
        "vector.proto",
        "features.proto",
        "experiments.proto",
        "drift.proto",
        "keys.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(f).display());
    }
    let descriptors = protox::compile(files, [&proto_dir])?;
    // Every gRPC method the protos define, for the route list (`GET /api/routes`) and the
    // test that walks every method against every scope.
    let mut methods = String::from(
        "/// Every gRPC method of the compiled protos: (path, client streaming, server streaming).\npub const GRPC_METHODS: &[(&str, bool, bool)] = &[\n",
    );
    for file in &descriptors.file {
        for service in &file.service {
            for m in &service.method {
                methods.push_str(&format!(
                    "    (\"/{}.{}/{}\", {}, {}),\n",
                    file.package(),
                    service.name(),
                    m.name(),
                    m.client_streaming(),
                    m.server_streaming()
                ));
            }
        }
    }
    methods.push_str("];\n");
    std::fs::write(
        std::path::Path::new(&std::env::var("OUT_DIR")?).join("grpc_methods.rs"),
        methods,
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)?;
    Ok(())
}
