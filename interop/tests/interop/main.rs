//! gRPC's interop suite between jovian and the current grpc-go release, both ways, jovian's
//! client against grpc-go's default server settings through long quiet calls and a long idle
//! connection, and h2spec against a jovian server beside a plain tonic one.
//!
//! The Go programs are built once into a cache outside the clone (see
//! `jovian_interop::go`); without Go these tests fail saying how to install it. Every
//! process they start is killed when its test ends, however it ends. The longest test (an idle
//! connection, over five minutes) runs beside the others, so the binary takes about as long
//! as that one test.

mod go_client;
mod h2spec;
mod idle;
mod jovian_client;
mod quiet;
mod servers;
