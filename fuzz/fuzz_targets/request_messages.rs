//! A request body's gRPC messages, as a server with a message size limit reads them.
//! The check is `jovian::fuzzing::check_request_messages`, shared with the corpus test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jovian::fuzzing::check_request_messages(data));
