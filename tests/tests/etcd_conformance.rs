//! The registry conformance suite on a real etcd (one fresh member per test).

use jovian_tests::backends::EtcdBackend;

jovian::conformance_tests!(EtcdBackend::start().await);
