//! Compiles proto/imclust/v1 with protox (pure Rust, no protoc needed) and generates the tonic
//! client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("imclust/v1/coordinator.proto");
    println!("cargo::rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
