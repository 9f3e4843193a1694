//! The bytes a server sends a client, as the client counts their HEADERS and DATA frames.
//! The check is `jovian::fuzzing::check_frame_scan`, shared with the corpus test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jovian::fuzzing::check_frame_scan(data));
