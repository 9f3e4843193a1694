//! A `grpc-status` header value, as a client reads it from a server.
//! The check is `jovian::fuzzing::check_grpc_status`, shared with the corpus test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jovian::fuzzing::check_grpc_status(data));
