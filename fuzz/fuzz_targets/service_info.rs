//! A registry value, as every watcher of the registry decodes it.
//! The check is `jovian::fuzzing::check_service_info`, shared with the corpus test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jovian::fuzzing::check_service_info(data));
