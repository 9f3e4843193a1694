//! Generates the grpc.testing client and server code from the interop protos.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(&["proto/grpc/testing/test.proto"], &["proto"])?;
    Ok(())
}
