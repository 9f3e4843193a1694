//! The cases of the registry conformance suite; see [the module](super).
//!
//! A backend hands out registry clients on one shared store, each like a separate process with
//! its own lease. Dropping a client without `close` must behave like a crash: renewals stop,
//! nothing is unregistered, and its entries vanish once the lease TTL runs out.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::{Discovery, Error, Instances, Registrar, Registry, ServiceInfo};
use async_trait::async_trait;

use super::within;

/// A registry implementation under test.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The registry type.
    type Registry: Registry;
    /// A new client (a "process") on the shared store whose lease lives `ttl`.
    async fn registry(&self, ttl: Duration) -> Self::Registry;
    /// The shortest TTL the backend honours exactly.
    fn short_ttl(&self) -> Duration;
}

/// How long any change may take to reach a watcher, as a correctness bound.
pub const PROPAGATION: Duration = Duration::from_secs(5);
const LONG_TTL: Duration = Duration::from_secs(30);

fn instance(name: &str, port: u16) -> ServiceInfo {
    ServiceInfo::new(name, format!("127.0.0.1:{port}"))
}

fn addresses(endpoints: &Instances) -> BTreeSet<String> {
    endpoints.iter().map(|i| i.address.clone()).collect()
}

fn set(ports: &[u16]) -> BTreeSet<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

/// `services` names every service with at least one instance, sorted, and forgets one whose
/// last instance left; metrics targets are not services.
pub async fn services_lists_every_name_with_an_instance<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    let before = registry.services().await.unwrap();
    let ours =
        |names: Vec<String>| -> Vec<String> { names.into_iter().filter(|n| n.starts_with("conf-svc-")).collect() };
    assert_eq!(ours(before), Vec::<String>::new());
    let b = instance("conf-svc-b", 1001);
    registry.register(&b).await.unwrap();
    registry.register(&instance("conf-svc-a", 1001)).await.unwrap();
    registry.register(&instance("conf-svc-a", 1002)).await.unwrap();
    let mut governor = instance("conf-svc-governor", 1003);
    governor.kind = crate::service::EntryKind::Governor;
    registry.register(&governor).await.unwrap();
    assert_eq!(ours(registry.services().await.unwrap()), ["conf-svc-a", "conf-svc-b"]);
    registry.unregister(&b).await.unwrap();
    assert_eq!(ours(registry.services().await.unwrap()), ["conf-svc-a"]);
    registry.close().await.unwrap();
}

/// Consecutive snapshots of one watch say exactly what changed between them.
pub async fn snapshots_of_one_watch_change_by_what_changed<B: Backend>(backend: &B) {
    let owner = backend.registry(LONG_TTL).await;
    let observer = backend.registry(LONG_TTL).await;
    for port in 1001..1051 {
        owner.register(&instance("conf-delta", port)).await.unwrap();
    }
    let mut watch = observer.watch("conf-delta").await.unwrap();
    let first = wait_for(&mut watch, "50 instances", |e| e.len() == 50).await;
    owner.register(&instance("conf-delta", 1051)).await.unwrap();
    owner.unregister(&instance("conf-delta", 1001)).await.unwrap();
    owner
        .register(&instance("conf-delta", 1002).with_weight(7))
        .await
        .unwrap();
    let last = wait_for(&mut watch, "the three changes", |e| {
        e.contains("grpc://127.0.0.1:1051")
            && !e.contains("grpc://127.0.0.1:1001")
            && e.get("grpc://127.0.0.1:1002").is_some_and(|i| i.weight == 7)
    })
    .await;
    let mut changes: Vec<String> = last
        .changes_since(&first)
        .map(|change| match change {
            crate::Change::Added(i) => format!("added {}", i.address),
            crate::Change::Removed(i) => format!("removed {}", i.address),
            crate::Change::Updated { old, new } => format!("{} weight {} -> {}", new.address, old.weight, new.weight),
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            "127.0.0.1:1002 weight 100 -> 7",
            "added 127.0.0.1:1051",
            "removed 127.0.0.1:1001"
        ]
    );
    assert_eq!(last.changes_since(&last).count(), 0);
    owner.close().await.unwrap();
}

/// Register two instances, list them, unregister one, list again.
pub async fn register_list_unregister<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    let a = instance("conf-rlu", 1001)
        .with_zone("z1")
        .with_metadata("version", "1.2.0");
    let b = instance("conf-rlu", 1002);
    registry.register(&a).await.unwrap();
    registry.register(&b).await.unwrap();
    let listed = registry.list("conf-rlu").await.unwrap();
    assert_eq!(listed.service(), "conf-rlu");
    assert_eq!(addresses(&listed), set(&[1001, 1002]));
    assert_eq!(
        listed.get(&a.uri()).map(|i| &**i),
        Some(&a),
        "an entry reads back exactly as registered"
    );
    registry.unregister(&a).await.unwrap();
    assert_eq!(addresses(&registry.list("conf-rlu").await.unwrap()), set(&[1002]));
    registry
        .unregister(&a)
        .await
        .expect("unregistering twice is not an error");
    registry.close().await.unwrap();
}

/// A watch starts with the current set and then sees adds, removals and in-place updates.
pub async fn watch_sees_adds_removals_and_updates<B: Backend>(backend: &B) {
    let owner = backend.registry(LONG_TTL).await;
    let observer = backend.registry(LONG_TTL).await;
    owner.register(&instance("conf-watch", 1001)).await.unwrap();
    let mut watch = observer.watch("conf-watch").await.unwrap();
    assert_eq!(addresses(&watch.current()), set(&[1001]), "starts with the current set");

    owner.register(&instance("conf-watch", 1002)).await.unwrap();
    wait_for(&mut watch, "the add", |e| addresses(e) == set(&[1001, 1002])).await;

    let reweighted = instance("conf-watch", 1001).with_weight(20);
    owner.register(&reweighted).await.unwrap();
    let updated = wait_for(&mut watch, "the update", |e| {
        e.get(&reweighted.uri()).is_some_and(|i| i.weight == 20)
    })
    .await;
    assert_eq!(updated.len(), 2);

    owner.unregister(&instance("conf-watch", 1002)).await.unwrap();
    wait_for(&mut watch, "the removal", |e| addresses(e) == set(&[1001])).await;
    owner.close().await.unwrap();
    wait_for(&mut watch, "the removal on close", Instances::is_empty).await;
}

/// Fifty changes in a row end in the right final snapshot, however they were coalesced.
pub async fn burst_of_changes_ends_in_final_snapshot<B: Backend>(backend: &B) {
    let owner = backend.registry(LONG_TTL).await;
    let observer = backend.registry(LONG_TTL).await;
    let mut watch = observer.watch("conf-burst").await.unwrap();
    for port in 1000..1040 {
        owner.register(&instance("conf-burst", port)).await.unwrap();
    }
    for port in (1000..1040).filter(|p| p % 4 == 0) {
        owner.unregister(&instance("conf-burst", port)).await.unwrap();
    }
    let expected: Vec<u16> = (1000..1040).filter(|p| p % 4 != 0).collect();
    wait_for(&mut watch, "the final state of the burst", |e| {
        addresses(e) == set(&expected)
    })
    .await;
    assert_eq!(addresses(&observer.list("conf-burst").await.unwrap()), set(&expected));
}

/// Services never see each other's instances, even when one name prefixes the other.
pub async fn services_are_isolated<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    let mut greeter = registry.watch("greeter").await.unwrap();
    let mut greeter2 = registry.watch("greeter2").await.unwrap();
    registry.register(&instance("greeter", 1001)).await.unwrap();
    registry.register(&instance("greeter2", 1002)).await.unwrap();
    registry.register(&instance("greet", 1003)).await.unwrap();
    wait_for(&mut greeter, "greeter's instance", |e| addresses(e) == set(&[1001])).await;
    wait_for(&mut greeter2, "greeter2's instance", |e| addresses(e) == set(&[1002])).await;
    assert_eq!(addresses(&registry.list("greeter").await.unwrap()), set(&[1001]));
    assert_eq!(addresses(&registry.list("greeter2").await.unwrap()), set(&[1002]));
    assert_eq!(addresses(&registry.list("greet").await.unwrap()), set(&[1003]));
    registry.unregister(&instance("greeter2", 1002)).await.unwrap();
    wait_for(&mut greeter2, "greeter2 emptied", Instances::is_empty).await;
    assert_eq!(addresses(&greeter.current()), set(&[1001]), "greeter is untouched");
}

/// A service nobody registered lists empty and can be watched until instances appear.
pub async fn service_with_no_instances<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    assert!(registry.list("conf-nobody").await.unwrap().is_empty());
    let mut watch = registry.watch("conf-nobody").await.unwrap();
    assert!(watch.current().is_empty());
    registry.register(&instance("conf-nobody", 1001)).await.unwrap();
    wait_for(&mut watch, "the first instance", |e| addresses(e) == set(&[1001])).await;
}

/// Many owners registering at once all end up listed.
pub async fn concurrent_registrations<B: Backend>(backend: &B) {
    let observer = backend.registry(LONG_TTL).await;
    let mut watch = observer.watch("conf-concurrent").await.unwrap();
    let mut owners = Vec::new();
    for _ in 0..8 {
        owners.push(backend.registry(LONG_TTL).await);
    }
    let registrations = owners.iter().enumerate().map(|(i, owner)| async move {
        for j in 0..5 {
            owner
                .register(&instance("conf-concurrent", 2000 + (i * 5 + j) as u16))
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(registrations).await;
    let expected: Vec<u16> = (2000..2040).collect();
    wait_for(&mut watch, "all 40 instances", |e| addresses(e) == set(&expected)).await;
}

/// An owner that stops renewing without unregistering (a crash) vanishes about one TTL later,
/// and not before; others' instances stay.
pub async fn crashed_owner_vanishes_after_ttl<B: Backend>(backend: &B) {
    let ttl = backend.short_ttl();
    let observer = backend.registry(LONG_TTL).await;
    let survivor = backend.registry(LONG_TTL).await;
    let crashing = backend.registry(ttl).await;
    survivor.register(&instance("conf-crash", 1001)).await.unwrap();
    crashing.register(&instance("conf-crash", 1002)).await.unwrap();
    let mut watch = observer.watch("conf-crash").await.unwrap();
    wait_for(&mut watch, "both instances", |e| addresses(e) == set(&[1001, 1002])).await;

    // Outlive several renewals first: a live owner's entry must not expire.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        addresses(&observer.list("conf-crash").await.unwrap()),
        set(&[1001, 1002]),
        "renewed entries stay"
    );

    let crashed_at = tokio::time::Instant::now();
    drop(crashing);
    within(
        ttl + Duration::from_secs(2),
        "the crashed owner's entry to expire",
        async {
            watch.wait_for(|e| addresses(e) == set(&[1001])).await.unwrap();
        },
    )
    .await;
    assert!(
        crashed_at.elapsed() >= ttl / 2,
        "the entry vanished {:?} after the crash, long before its TTL of {ttl:?}",
        crashed_at.elapsed()
    );
}

/// `close` removes everything the registry registered at once, ends its watches, and leaves
/// other owners' instances alone.
pub async fn close_removes_everything_and_ends_watches<B: Backend>(backend: &B) {
    let observer = backend.registry(LONG_TTL).await;
    let other = backend.registry(LONG_TTL).await;
    let closing = backend.registry(LONG_TTL).await;
    other.register(&instance("conf-close-a", 1001)).await.unwrap();
    closing.register(&instance("conf-close-a", 1002)).await.unwrap();
    closing.register(&instance("conf-close-b", 1003)).await.unwrap();
    let mut a = observer.watch("conf-close-a").await.unwrap();
    let mut b = observer.watch("conf-close-b").await.unwrap();
    let mut own = closing.watch("conf-close-a").await.unwrap();
    wait_for(&mut a, "both of a's instances", |e| addresses(e) == set(&[1001, 1002])).await;

    closing.close().await.unwrap();
    wait_for(&mut a, "a without the closed owner", |e| addresses(e) == set(&[1001])).await;
    wait_for(&mut b, "b emptied", Instances::is_empty).await;
    let ended = within(PROPAGATION, "the closed registry's watch to end", async {
        loop {
            if let Err(error) = own.changed().await {
                return error;
            }
        }
    })
    .await;
    assert!(matches!(ended, Error::Closed), "watch ended with {ended:?}");
}

/// Two owners of one service: each one's unregister removes only its own instance.
pub async fn registrations_of_several_owners<B: Backend>(backend: &B) {
    let first = backend.registry(LONG_TTL).await;
    let second = backend.registry(LONG_TTL).await;
    first.register(&instance("conf-owners", 1001)).await.unwrap();
    second.register(&instance("conf-owners", 1002)).await.unwrap();
    assert_eq!(addresses(&first.list("conf-owners").await.unwrap()), set(&[1001, 1002]));
    first.close().await.unwrap();
    assert_eq!(addresses(&second.list("conf-owners").await.unwrap()), set(&[1002]));
}

/// Entries that would break the key layout are refused with an error saying why.
pub async fn invalid_entries_are_rejected<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    for bad in [
        ServiceInfo::new("", "127.0.0.1:1"),
        ServiceInfo::new("conf-invalid", ""),
        ServiceInfo::new("conf/invalid", "127.0.0.1:1"),
        ServiceInfo::new("conf-invalid", "127.0.0.1:1/x"),
    ] {
        let error = registry
            .register(&bad)
            .await
            .expect_err("an invalid entry was accepted");
        assert!(
            matches!(error, Error::InvalidServiceInfo { .. }),
            "{bad:?} gave {error}"
        );
    }
    assert!(registry.list("conf-invalid").await.unwrap().is_empty());
}

/// After `close`, every operation fails with `Closed`; closing again is fine.
pub async fn closed_registry_refuses_work<B: Backend>(backend: &B) {
    let registry = backend.registry(LONG_TTL).await;
    registry.register(&instance("conf-closed", 1001)).await.unwrap();
    registry.close().await.unwrap();
    registry.close().await.expect("closing twice is fine");
    assert!(matches!(
        registry.register(&instance("conf-closed", 1002)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(registry.list("conf-closed").await, Err(Error::Closed)));
    assert!(matches!(registry.watch("conf-closed").await, Err(Error::Closed)));
}

async fn wait_for(
    watch: &mut crate::InstancesWatch,
    what: &str,
    condition: impl FnMut(&Instances) -> bool,
) -> Instances {
    within(PROPAGATION, what, watch.wait_for(condition))
        .await
        .unwrap_or_else(|e| panic!("watch ended waiting for {what}: {e}"))
}
