//! The registry conformance suite on a compound of two in-memory registries.

use jovian_tests::backends::CompoundBackend;

jovian::conformance_tests!(CompoundBackend::default());
