//! The registry conformance suite, for every [`Registry`](crate::Registry) implementation: one
//! set of behaviours each must show (lease semantics, watches that miss nothing, isolation of
//! services, crash expiry, close), so code written against one behaves the same on another.
//! Enabled by the `testing` feature.
//!
//! Implement [`Backend`] for your registry, then let [`conformance_tests!`](crate::conformance_tests)
//! write one `#[tokio::test]` per case:
//!
//! ```ignore
//! // tests/conformance.rs of a registry crate, with jovian's `testing` feature in dev-dependencies
//! struct MyBackend { /* a shared store, a cluster... */ }
//!
//! #[async_trait::async_trait]
//! impl jovian::testing::Backend for MyBackend {
//!     type Registry = MyRegistry;
//!     async fn registry(&self, ttl: std::time::Duration) -> MyRegistry { /* a new "process" */ }
//!     fn short_ttl(&self) -> std::time::Duration { std::time::Duration::from_secs(1) }
//! }
//!
//! jovian::conformance_tests!(MyBackend::new());
//! ```
//!
//! A backend hands out registry clients on one shared store, each like a separate process with
//! its own lease. Dropping a client without `close` must behave like a crash: renewals stop,
//! nothing is unregistered, and its entries vanish once the lease TTL runs out.

pub mod conformance;

use std::future::Future;
use std::time::Duration;

pub use conformance::{Backend, PROPAGATION};

/// Makes one `#[tokio::test]` per conformance case for the backend `$backend` evaluates to
/// (inside an async context, once per test).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@cases $backend;
            register_list_unregister,
            watch_sees_adds_removals_and_updates,
            burst_of_changes_ends_in_final_snapshot,
            services_are_isolated,
            service_with_no_instances,
            services_lists_every_name_with_an_instance,
            snapshots_of_one_watch_change_by_what_changed,
            concurrent_registrations,
            crashed_owner_vanishes_after_ttl,
            close_removes_everything_and_ends_watches,
            registrations_of_several_owners,
            invalid_entries_are_rejected,
            closed_registry_refuses_work
        );
    };
    (@cases $backend:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testing::init_logging();
                let backend = $backend;
                $crate::testing::conformance::$case(&backend).await;
            }
        )*
    };
}

/// Awaits `future`, panicking with `what` if it takes longer than `deadline`.
pub(crate) async fn within<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Installs a test log subscriber once (`RUST_LOG` picks the level; quiet by default).
#[doc(hidden)]
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}
