//! The registry conformance suite on the in-memory registry.

use jovian_tests::backends::MemoryBackend;

jovian::conformance_tests!(MemoryBackend::default());
