//! A `grpc-timeout` header value, as a server reads it from a caller.
//! The check is `jovian::fuzzing::check_grpc_timeout`, shared with the corpus test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jovian::fuzzing::check_grpc_timeout(data));
