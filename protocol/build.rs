//! Compiles the `.proto` files with `protox` (pure Rust, no system `protoc`) into prost types and
//! their proto3 JSON mapping (pbjson).

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/lianxin/v1/media.proto",
    "proto/lianxin/v1/model.proto",
    "proto/lianxin/v1/board.proto",
    "proto/lianxin/v1/appraisal.proto",
    "proto/lianxin/v1/frames.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("lianxin_descriptor.bin"), &descriptor_bytes)?;

    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".lianxin"])?;
    Ok(())
}
