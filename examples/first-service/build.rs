// build.rs: needs `protoc` (Debian: apt-get install protobuf-compiler)
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/orders.proto")?;
    tonic_prost_build::compile_protos("proto/helloworld.proto")?;
    Ok(())
}
