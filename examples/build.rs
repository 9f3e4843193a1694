//! Generates the Greeter code from the canonical helloworld proto, and the inventory example's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/helloworld.proto")?;
    tonic_prost_build::compile_protos("proto/inventory.proto")?;
    Ok(())
}
