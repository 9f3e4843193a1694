//! `jovian::registry::Compound` over in-memory registries: registration everywhere, merged
//! discovery, and what happens while one source is down or frozen.
//!
//! A source is taken "down" with [`Switchable`], a wrapper around a real `MemoryRegistry`
//! that, while down, fails every call as an unreachable registry does (or, while frozen,
//! never answers, as a SIGSTOPped etcd). Real etcd outages are in `etcd_compound.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jovian::prelude::*;
use jovian::registry::Compound;
use jovian::service::EntryKind;
use jovian::{Error, Instances, InstancesWatch, MetricsTarget, Result, ServiceInfo};
use jovian_registry_memory::{MemoryRegistry, MemoryStore};
use jovian_tests::{eventually, init_logging, within};

const UP: u8 = 0;
const DOWN: u8 = 1;
const FROZEN: u8 = 2;

/// A `MemoryRegistry` that can be taken down (every call fails at once) or frozen (every call
/// hangs). A watch made while up keeps its last snapshot while down, as etcd's does.
struct Switchable {
    inner: MemoryRegistry,
    state: Arc<AtomicU8>,
}

impl Switchable {
    fn new(inner: MemoryRegistry) -> (Self, Arc<AtomicU8>) {
        let state = Arc::new(AtomicU8::new(UP));
        (
            Self {
                inner,
                state: state.clone(),
            },
            state,
        )
    }

    async fn check(&self) -> Result<()> {
        match self.state.load(Ordering::SeqCst) {
            DOWN => Err(Error::Unreachable {
                endpoints: "switchable".into(),
                reason: "taken down by the test".into(),
            }),
            FROZEN => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Registrar for Switchable {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        self.check().await?;
        self.inner.register(info).await
    }
    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        self.check().await?;
        self.inner.unregister(info).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Discovery for Switchable {
    async fn list(&self, name: &str) -> Result<Instances> {
        self.check().await?;
        self.inner.list(name).await
    }
    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        self.check().await?;
        self.inner.watch(name).await
    }
    async fn services(&self) -> Result<Vec<String>> {
        self.check().await?;
        self.inner.services().await
    }
    async fn metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        self.check().await?;
        self.inner.metrics_targets().await
    }
}

fn compound(a: impl Registry, b: impl Registry) -> Compound {
    Compound::builder()
        .source("a", a)
        .source("b", b)
        .attempt_timeout(Duration::from_millis(500))
        .max_retry_delay(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn instance(port: u16) -> ServiceInfo {
    ServiceInfo::new("cmp", format!("127.0.0.1:{port}"))
}

async fn wait(watch: &mut InstancesWatch, what: &str, condition: impl FnMut(&Instances) -> bool) -> Instances {
    within(Duration::from_secs(5), what, watch.wait_for(condition))
        .await
        .unwrap()
}

#[tokio::test]
async fn registers_in_every_source_and_merges_one_instance_per_address() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let registry = compound(a.registry(), b.registry());
    registry.register(&instance(1)).await.unwrap();
    assert_eq!(a.registry().list("cmp").await.unwrap().addresses(), ["127.0.0.1:1"]);
    assert_eq!(b.registry().list("cmp").await.unwrap().addresses(), ["127.0.0.1:1"]);

    // the same address in both sources is one instance; the first source's entry wins
    a.registry().register(&instance(2).with_weight(10)).await.unwrap();
    let only_b = b.registry();
    only_b
        .register(&instance(2).with_weight(90).with_zone("zb"))
        .await
        .unwrap();
    only_b.register(&instance(3)).await.unwrap();
    let listed = registry.list("cmp").await.unwrap();
    assert_eq!(listed.addresses(), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    assert_eq!(
        listed.get("grpc://127.0.0.1:2").unwrap().weight,
        10,
        "source a's entry wins"
    );
    assert_eq!(listed.get("grpc://127.0.0.1:2").unwrap().zone, "");

    // availability is the strictest: disabled in b only is disabled
    only_b
        .register(&{
            let mut info = instance(2).with_weight(90);
            info.enable = false;
            info
        })
        .await
        .unwrap();
    let mut watch = registry.watch("cmp").await.unwrap();
    let merged = watch.current();
    let two = merged.get("grpc://127.0.0.1:2").unwrap();
    assert!(!two.enable, "disabled in one source is disabled");
    assert_eq!(two.weight, 10, "everything else from the first source");

    // a change in either source reaches the compound watch; a removal from one source of an
    // instance the other still lists keeps it
    only_b.unregister(&instance(3)).await.unwrap();
    wait(&mut watch, "3 gone", |e| !e.contains("grpc://127.0.0.1:3")).await;
    only_b.unregister(&instance(2)).await.unwrap();
    let after = wait(&mut watch, "2 enabled again", |e| {
        e.get("grpc://127.0.0.1:2").is_some_and(|i| i.enable)
    })
    .await;
    assert_eq!(after.addresses(), ["127.0.0.1:1", "127.0.0.1:2"]);

    assert_eq!(registry.services().await.unwrap(), ["cmp"]);
    registry.unregister(&instance(1)).await.unwrap();
    assert!(
        a.registry()
            .list("cmp")
            .await
            .unwrap()
            .get("grpc://127.0.0.1:1")
            .is_none()
    );
    assert!(b.registry().list("cmp").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_source_down_at_registration_gets_the_entry_once_it_is_back() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let (down, state) = Switchable::new(b.registry());
    state.store(DOWN, Ordering::SeqCst);
    let registry = compound(a.registry(), down);

    registry.register(&instance(1)).await.expect("one source up is enough");
    registry.register(&instance(2)).await.unwrap();
    assert_eq!(a.registry().list("cmp").await.unwrap().len(), 2);
    let pending = registry.pending();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.iter().all(|p| p.source == "b"), "{pending:?}");
    assert!(pending[0].error.contains("taken down"), "{pending:?}");

    // unregistered while owed: never written there
    registry.unregister(&instance(2)).await.unwrap_err(); // b is down: the unregister says so
    assert_eq!(registry.pending().len(), 1);

    state.store(UP, Ordering::SeqCst);
    let observer = b.registry();
    let mut watch = observer.watch("cmp").await.unwrap();
    wait(&mut watch, "b to get the entry", |e| e.addresses() == ["127.0.0.1:1"]).await;
    eventually(Duration::from_secs(5), "nothing pending", || async {
        registry.pending().is_empty().then_some(())
    })
    .await;
    assert_eq!(b.registry().list("cmp").await.unwrap().addresses(), ["127.0.0.1:1"]);
}

#[tokio::test]
async fn a_frozen_source_holds_registration_up_for_one_attempt_only() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let (frozen, state) = Switchable::new(b.registry());
    state.store(FROZEN, Ordering::SeqCst);
    let registry = compound(a.registry(), frozen);
    // bounded by the attempt timeout (500 ms here); the deadline is a hang detector
    within(
        Duration::from_secs(5),
        "register next to a frozen source",
        registry.register(&instance(1)),
    )
    .await
    .unwrap();
    let pending = registry.pending();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].error.contains("did not answer"), "{pending:?}");
    let listed = within(Duration::from_secs(5), "list", registry.list("cmp"))
        .await
        .unwrap();
    assert_eq!(listed.addresses(), ["127.0.0.1:1"]);
    state.store(UP, Ordering::SeqCst);
    eventually(Duration::from_secs(5), "the frozen source to catch up", || async {
        registry.pending().is_empty().then_some(())
    })
    .await;
    assert_eq!(b.registry().list("cmp").await.unwrap().addresses(), ["127.0.0.1:1"]);
}

#[tokio::test]
async fn no_source_up_is_an_error_naming_every_source() {
    init_logging();
    let (a, sa) = Switchable::new(MemoryRegistry::new());
    let (b, sb) = Switchable::new(MemoryRegistry::new());
    sa.store(DOWN, Ordering::SeqCst);
    sb.store(DOWN, Ordering::SeqCst);
    let registry = compound(a, b);
    let error = registry.register(&instance(1)).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("source `a`") && message.contains("source `b`"),
        "{message}"
    );
    assert!(registry.pending().is_empty(), "a failed registration is not retried");
    assert!(registry.list("cmp").await.is_err());
    assert!(registry.watch("cmp").await.is_err());
    assert!(registry.services().await.is_err());
    let invalid = registry.register(&ServiceInfo::new("", "h:1")).await.unwrap_err();
    assert!(matches!(invalid, Error::InvalidServiceInfo { .. }), "{invalid}");
}

#[tokio::test]
async fn a_watch_follows_live_sources_while_one_is_down_and_merges_it_back() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let (switchable, state) = Switchable::new(b.registry());
    state.store(DOWN, Ordering::SeqCst);
    let registry = compound(a.registry(), switchable);
    let in_b = b.registry();
    in_b.register(&instance(2)).await.unwrap();

    let mut watch = registry.watch("cmp").await.expect("one source can be watched");
    assert!(watch.current().is_empty());
    a.registry().register(&instance(1)).await.unwrap();
    let a_only = a.registry();
    a_only.register(&instance(3)).await.unwrap();
    wait(&mut watch, "a's instances", |e| {
        e.addresses() == ["127.0.0.1:1", "127.0.0.1:3"]
    })
    .await;

    state.store(UP, Ordering::SeqCst);
    wait(&mut watch, "b merged in", |e| {
        e.addresses() == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    })
    .await;
    in_b.unregister(&instance(2)).await.unwrap();
    wait(&mut watch, "b's removal", |e| !e.contains("grpc://127.0.0.1:2")).await;
}

#[tokio::test]
async fn services_and_metrics_targets_are_unions() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let registry = compound(a.registry(), b.registry());
    a.registry().register(&ServiceInfo::new("only-a", "h:1")).await.unwrap();
    let in_b = b.registry();
    in_b.register(&ServiceInfo::new("only-b", "h:2")).await.unwrap();
    let mut governor = ServiceInfo::new("app-b", "h:9");
    governor.kind = EntryKind::Governor;
    governor.hostname = "host-b".into();
    in_b.register(&governor).await.unwrap();
    let mut ours = ServiceInfo::new("app", "h:8");
    ours.kind = EntryKind::Governor;
    registry.register(&ServiceInfo::new("both", "h:3")).await.unwrap();
    registry.register(&ours).await.unwrap();
    assert_eq!(registry.services().await.unwrap(), ["both", "only-a", "only-b"]);
    let targets = registry.metrics_targets().await.unwrap();
    let found: Vec<(&str, &str)> = targets.iter().map(|t| (t.app.as_str(), t.target.as_str())).collect();
    assert_eq!(found, [("app", "h:8"), ("app-b", "h:9")], "one target per governor");
    let app = &targets[0];
    assert_eq!(
        app.instances.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["both"],
        "labelled with the App's own servers"
    );
    assert_eq!(targets[1].hostname, "host-b");
    assert_eq!(targets[1].instances[0].name, "only-b");
}

#[tokio::test]
async fn closing_closes_every_source_and_ends_watches() {
    init_logging();
    let (a, b) = (MemoryStore::new(), MemoryStore::new());
    let registry = compound(a.registry(), b.registry());
    registry.register(&instance(1)).await.unwrap();
    let mut watch = registry.watch("cmp").await.unwrap();
    registry.close().await.unwrap();
    assert!(a.registry().list("cmp").await.unwrap().is_empty());
    assert!(b.registry().list("cmp").await.unwrap().is_empty());
    let ended = within(Duration::from_secs(5), "the watch to end", async {
        loop {
            if let Err(error) = watch.changed().await {
                return error;
            }
        }
    })
    .await;
    assert!(matches!(ended, Error::Closed), "{ended}");
    assert!(matches!(registry.register(&instance(2)).await, Err(Error::Closed)));
}

#[test]
fn a_compound_needs_distinct_named_sources() {
    let none = Compound::builder().build().unwrap_err();
    assert!(none.to_string().contains("at least one registry"), "{none}");
    let twice = Compound::builder()
        .source("a", MemoryRegistry::new())
        .source("a", MemoryRegistry::new())
        .build()
        .unwrap_err();
    assert!(twice.to_string().contains("`a` twice"), "{twice}");
}
