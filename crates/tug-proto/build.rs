//! Generates the tug.v1 messages and service stubs with `protox`, a protobuf compiler written in
//! Rust, so building tug never needs a system `protoc`.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &["proto/tug/v1/tug.proto", "proto/tug/v1/release.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    // Reflection serves these exact bytes; writing them ourselves keeps them identical to what the
    // code was generated from.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tug_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
