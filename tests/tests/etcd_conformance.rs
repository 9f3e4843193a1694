//! The registry conformance suite on a real etcd (one fresh member per test), under every key
//! layout.
//!
//! The etcd-naming, plain, kratos and go-zero layouts store an address (kratos a version and
//! metadata too, but no zone or weight), so three cases cannot hold under them: `register_list_unregister` (an entry with a zone and metadata must read back exactly
//! as registered), `watch_sees_adds_removals_and_updates` and
//! `snapshots_of_one_watch_change_by_what_changed` (an instance re-registered with another
//! weight must be seen updated in place; the layout has no weight, so nothing changes). Every
//! other case runs.

use jovian_tests::backends::EtcdBackend;

jovian::conformance_tests!(EtcdBackend::start().await);

/// Cases that need only addresses: every case but the three above.
macro_rules! address_only_cases {
    ($backend:expr) => {
        jovian::conformance_tests!(@cases $backend;
            burst_of_changes_ends_in_final_snapshot,
            services_are_isolated,
            service_with_no_instances,
            services_lists_every_name_with_an_instance,
            concurrent_registrations,
            crashed_owner_vanishes_after_ttl,
            close_removes_everything_and_ends_watches,
            registrations_of_several_owners,
            invalid_entries_are_rejected,
            closed_registry_refuses_work
        );
    };
}

mod etcd_naming {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::etcd_naming()).await);
}

mod etcd_naming_under_a_root {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::etcd_naming().key_template("services/{name}/{addr}")).await);
}

mod plain {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::plain()).await);
}

mod plain_with_a_schema {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::plain().key_template("etcd:///{name}/{addr}")).await);
}

mod kratos {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::kratos()).await);
}

mod go_zero {
    use super::*;
    use jovian_registry_etcd::Layout;

    address_only_cases!(EtcdBackend::with_layout(Layout::go_zero()).await);
}
