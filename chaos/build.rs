//! Generates the chaos Echo service from `proto/chaos.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/chaos.proto")?;
    Ok(())
}
