//! The key/value layouts against what the other systems write, on a real etcd:
//!
//! - an entry put byte for byte as the other system writes it is discovered by a jovian client
//!   and callable (the server is a jovian one serving with no registry: only the hand-written
//!   entry points at it);
//! - an App registered under the layout writes exactly those bytes, on its lease, and the entry
//!   goes away on stop and on lease expiry;
//! - garbage under the layout's prefix is skipped and counted while good instances flow.
//!
//! The other systems: etcd's Go naming package (`endpoints.Manager.AddEndpoint(ctx,
//! target+"/"+addr, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(id))`, which writes Go's
//! `json.Marshal` of `internal.Update{Op, Addr, Metadata}`), hand-rolled clientv3 code
//! (`cli.Put(ctx, key, addr, clientv3.WithLease(id))`), and Go jupiter (its ServiceInfo JSON).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use jovian::{App, ClientBuilder, ClientOptions, Discovery, Registrar, ServiceInfo};
use jovian_examples::{GreeterClient, HelloRequest, greeter_server};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry, Layout};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::{eventually, init_logging, within};

const WAIT: Duration = Duration::from_secs(5);

/// One layout and the bytes the other system writes for an instance of `name` at `addr`.
struct Foreign {
    layout: Layout,
    key: fn(&str, &str) -> String,
    value: fn(&str, &str) -> String,
}

fn etcd_naming() -> Foreign {
    Foreign {
        layout: Layout::etcd_naming(),
        key: |name, addr| format!("{name}/{addr}"),
        value: |_, addr| format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#),
    }
}

fn etcd_naming_under_a_root() -> Foreign {
    Foreign {
        layout: Layout::etcd_naming().key_template("services/{name}/{addr}"),
        key: |name, addr| format!("services/{name}/{addr}"),
        value: |_, addr| format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#),
    }
}

fn plain() -> Foreign {
    Foreign {
        layout: Layout::plain(),
        key: |name, addr| format!("/jovian/{name}/{addr}"),
        value: |_, addr| addr.to_owned(),
    }
}

fn plain_with_a_schema() -> Foreign {
    Foreign {
        layout: Layout::plain().key_template("etcd:///{name}/{addr}"),
        key: |name, addr| format!("etcd:///{name}/{addr}"),
        value: |_, addr| addr.to_owned(),
    }
}

/// Go jupiter's entry: its field names, in its order, with a field jovian does not know.
fn jupiter() -> Foreign {
    Foreign {
        layout: Layout::Jupiter,
        key: |name, addr| format!("/jovian/{name}/providers/grpc://{addr}"),
        value: |name, addr| {
            format!(
                r#"{{"name":"{name}","appId":"go-app","scheme":"grpc","address":"{addr}","weight":100,"enable":true,"healthy":true,"metadata":{{}},"region":"","zone":"","kind":1,"deployment":"","group":"","services":{{}}}}"#
            )
        },
    }
}

fn every_layout() -> [(&'static str, Foreign); 5] {
    [
        ("jupiter", jupiter()),
        ("etcd-naming", etcd_naming()),
        ("etcd-naming under a root", etcd_naming_under_a_root()),
        ("plain", plain()),
        ("plain with a schema", plain_with_a_schema()),
    ]
}

async fn registry(etcd: &EtcdCluster, layout: &Layout, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()).layout(layout.clone()).ttl(ttl))
        .await
        .unwrap()
}

async fn hello(channel: &jovian::ServiceChannel) -> Result<String, tonic::Status> {
    let reply = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "layout".into() })
        .await?;
    Ok(reply.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_written_as_the_other_system_writes_it_is_discovered_and_callable() {
    init_logging();
    for (what, foreign) in every_layout() {
        let etcd = EtcdCluster::single().await;
        let name = "foreign";
        // Served, but registered nowhere: only the hand-written entry leads to it.
        let server = App::new().serve(greeter_server(name)).start().await.unwrap();
        let addr = server.local_addr(name).unwrap().to_string();
        let mut client = etcd.client().await;
        let lease = client.lease_grant(30, None).await.unwrap().id();
        let key = (foreign.key)(name, &addr);
        client
            .put(
                key.clone(),
                (foreign.value)(name, &addr),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .unwrap();
        // Another system's keys, and another service of this layout, around it.
        client.put("/jovian/other/consumers/x", "{}", None).await.unwrap();
        client.put("unrelated", "x", None).await.unwrap();

        let reader = Arc::new(registry(&etcd, &foreign.layout, Duration::from_secs(10)).await);
        assert_eq!(reader.services().await.unwrap(), [name], "{what}: services");
        let listed = reader.list(name).await.unwrap();
        assert_eq!(listed.addresses(), [addr.as_str()], "{what}: listed");
        let channel = ClientBuilder::new(reader.clone())
            .options(ClientOptions::default().wait_for_instances(WAIT))
            .build(name)
            .await
            .unwrap();
        let reply = within(WAIT, "the call", hello(&channel)).await;
        assert!(reply.is_ok(), "{what}: {reply:?}");
        assert_eq!(reader.stats().bad_entries, 0, "{what}: nothing was skipped");

        // The other system withdrawing its entry is seen too.
        let mut watch = reader.watch(name).await.unwrap();
        client.delete(key, None).await.unwrap();
        within(WAIT, "the withdrawal", watch.wait_for(|e| e.is_empty()))
            .await
            .unwrap();
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_writes_exactly_what_the_other_system_writes_and_it_goes_away() {
    init_logging();
    for (what, foreign) in every_layout() {
        let etcd = EtcdCluster::single().await;
        let name = "written";
        let owner = Arc::new(registry(&etcd, &foreign.layout, Duration::from_secs(10)).await);
        let running = App::new()
            .name("layout-app")
            .registry(owner.clone())
            .serve(greeter_server(name))
            .start()
            .await
            .unwrap();
        let addr = running.local_addr(name).unwrap().to_string();
        let key = (foreign.key)(name, &addr);
        let mut client = etcd.client().await;
        let got = client.get(key.clone(), None).await.unwrap();
        let kv = got.kvs().first().unwrap_or_else(|| panic!("{what}: nothing at {key}"));
        let expected = match foreign.layout {
            // Go jupiter's field order is its own: the bytes are jovian's encoding of the
            // registration, with jupiter's field names and types (etcd_layout.rs checks them).
            Layout::Jupiter => running.registrations()[0].encode(),
            _ => (foreign.value)(name, &addr),
        };
        assert_eq!(
            String::from_utf8_lossy(kv.value()),
            expected,
            "{what}: the value, byte for byte"
        );
        assert_ne!(kv.lease(), 0, "{what}: on the registry's lease");
        let all = client
            .get("\0", Some(GetOptions::new().with_from_key().with_keys_only()))
            .await
            .unwrap();
        let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, [key.as_str()], "{what}: nothing else is written");

        // A key deleted by hand is put back as it was, on the lease, as in every layout.
        client.delete(key.clone(), None).await.unwrap();
        let restored = eventually(WAIT, "the deleted key to be put back", || {
            let (mut client, key) = (client.clone(), key.clone());
            async move {
                client
                    .get(key, None)
                    .await
                    .unwrap()
                    .kvs()
                    .first()
                    .map(|kv| kv.value().to_vec())
            }
        })
        .await;
        assert_eq!(
            String::from_utf8_lossy(&restored),
            expected,
            "{what}: put back byte for byte"
        );

        running.stop().await.unwrap();
        let got = client.get(key.clone(), None).await.unwrap();
        assert!(got.kvs().is_empty(), "{what}: the entry outlived the stop");

        // A crashed owner's entry expires with its lease.
        let crashing = registry(&etcd, &foreign.layout, Duration::from_secs(1)).await;
        let info = ServiceInfo::new(name, "127.0.0.1:7");
        crashing.register(&info).await.unwrap();
        let key = (foreign.key)(name, "127.0.0.1:7");
        assert_eq!(client.get(key.clone(), None).await.unwrap().kvs().len(), 1, "{what}");
        drop(crashing);
        eventually(WAIT, "the crashed owner's entry to expire", || {
            let (mut client, key) = (client.clone(), key.clone());
            async move { client.get(key, None).await.unwrap().kvs().is_empty().then_some(()) }
        })
        .await;
    }
}

/// Values that are not instances of the layout, put at keys under the service's prefix.
fn garbage(foreign: &Foreign, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let key = |addr: &str| (foreign.key)(name, addr).into_bytes();
    let huge = "z".repeat(1024 * 1024);
    let mut garbage = vec![
        (key("127.0.0.1:4"), (foreign.value)(name, "127.0.0.1:5").into_bytes()),
        (key(""), (foreign.value)(name, "127.0.0.1:6").into_bytes()),
        (key("127.0.0.1:7/x"), (foreign.value)(name, "127.0.0.1:7").into_bytes()),
        (key("\u{fffd}").into_iter().chain([0xff]).collect(), b"{}".to_vec()),
        (key("127.0.0.1:8"), b"\xff\xfe".to_vec()),
        (key("127.0.0.1:9"), huge.into_bytes()),
    ];
    match foreign.layout {
        Layout::EtcdNaming { .. } => garbage.extend([
            (key("127.0.0.1:2"), b"not json".to_vec()),
            (key("127.0.0.1:3"), br#"{"Op":"add","Addr":"127.0.0.1:3"}"#.to_vec()),
            (key("127.0.0.1:10"), br#"{"Op":0,"Metadata":null}"#.to_vec()),
            (key("127.0.0.1:11"), br#"{"Op":0,"Addr":11}"#.to_vec()),
        ]),
        _ => garbage.extend([
            (key("127.0.0.1:2"), b"".to_vec()),
            (key("127.0.0.1:3"), b" \n".to_vec()),
        ]),
    }
    garbage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_layouts_prefix_is_skipped_and_counted() {
    init_logging();
    // The jupiter layout's garbage is etcd_data.rs's.
    for (what, foreign) in every_layout().into_iter().skip(1) {
        let etcd = EtcdCluster::single().await;
        let name = "junk";
        let owner = registry(&etcd, &foreign.layout, Duration::from_secs(10)).await;
        owner.register(&ServiceInfo::new(name, "127.0.0.1:1")).await.unwrap();
        let mut client = etcd.client().await;
        let garbage = garbage(&foreign, name);
        // Half before the reader lists, half after it watches: both paths must skip them.
        let (before, after) = garbage.split_at(garbage.len() / 2);
        for (key, value) in before {
            client.put(key.clone(), value.clone(), None).await.unwrap();
        }
        let reader = registry(&etcd, &foreign.layout, Duration::from_secs(10)).await;
        let mut watch = reader.watch(name).await.unwrap();
        assert_eq!(watch.current().addresses(), ["127.0.0.1:1"], "{what}");
        for (key, value) in after {
            client.put(key.clone(), value.clone(), None).await.unwrap();
        }
        owner.register(&ServiceInfo::new(name, "127.0.0.1:12")).await.unwrap();
        let snapshot = within(
            WAIT,
            "the good instance after the garbage",
            watch.wait_for(|e| e.len() == 2),
        )
        .await
        .unwrap();
        assert_eq!(snapshot.addresses(), ["127.0.0.1:1", "127.0.0.1:12"], "{what}");
        assert_eq!(
            reader.stats().bad_entries,
            garbage.len() as u64,
            "{what}: each bad entry counted once"
        );
        assert_eq!(reader.services().await.unwrap(), [name], "{what}: services");

        // A repaired value is taken.
        let (key, _) = &garbage[0];
        client
            .put(key.clone(), (foreign.value)(name, "127.0.0.1:4"), None)
            .await
            .unwrap();
        within(WAIT, "the repaired entry", watch.wait_for(|e| e.len() == 3))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_overrides_exist_only_under_the_jupiter_layout() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, &Layout::etcd_naming(), Duration::from_secs(10)).await;
    let info = ServiceInfo::new("gov", "127.0.0.1:1");
    registry.register(&info).await.unwrap();
    let patch = serde_json::json!({"enable": false}).as_object().unwrap().clone();
    let error = registry.update_override("gov", &info.uri(), &patch).await.unwrap_err();
    assert!(error.to_string().contains("jupiter"), "{error}");
    // A jupiter-style override key under the other layout is not read.
    let mut client = etcd.client().await;
    client
        .put(
            "/jovian/gov/configurators/grpc://127.0.0.1:1",
            r#"{"enable":false}"#,
            None,
        )
        .await
        .unwrap();
    assert!(registry.list("gov").await.unwrap().get(&info.uri()).unwrap().enable);
    let record = registry.entry("gov", &info.uri()).await.unwrap().unwrap();
    assert_eq!(record.provider_key, "gov/127.0.0.1:1");
    assert_eq!(record.provider.as_ref(), Some(&info));
    assert!(record.lease.is_some());
}

/// The premise of docs/etcd.md's note on grpc-go: hyper's h2 server checks `:authority` as a
/// URI authority, so a target holding a `/` (sent as is by grpc-go 1.33) is refused, and so is
/// the same target percent-encoded; a bare name passes.
#[test]
fn which_etcd_naming_targets_can_be_an_authority() {
    use tonic::codegen::http::uri::Authority;
    for fine in ["greeter", "greeter.v1", "grpcgo-jovian", "my_svc~1"] {
        assert!(Authority::try_from(fine).is_ok(), "{fine} refused");
    }
    for refused in ["services/greeter", "jovian/greeter", "services%2Fgreeter", "a b"] {
        assert!(Authority::try_from(refused).is_err(), "{refused} accepted");
    }
}

/// Under the kratos and go-zero layouts a key names an instance id and its value the address
/// (what kratos' registry and go-zero's publisher write, `etcd_kratos_zero.rs` checks against
/// their code): each key counts for the address its value gives, until it is deleted or holds
/// another; garbage is skipped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_id_layouts_each_key_counts_for_the_address_its_value_gives() {
    init_logging();
    let kratos = |name: &str, addr: &str| {
        format!(
            r#"{{"id":"x","name":"{name}","version":"","metadata":null,"endpoints":["http://127.0.0.1:1","grpc://{addr}"]}}"#
        )
    };
    let go_zero = |_: &str, addr: &str| addr.to_owned();
    type Value<'a> = &'a dyn Fn(&str, &str) -> String;
    let cases: [(Layout, &str, Value); 2] = [
        (Layout::kratos(), "/microservices/ids/", &kratos),
        (Layout::go_zero(), "ids/", &go_zero),
    ];
    for (layout, prefix, value) in cases {
        let what = layout.name();
        let etcd = EtcdCluster::single().await;
        let name = "ids";
        let mut client = etcd.client().await;
        let reader = registry(&etcd, &layout, Duration::from_secs(10)).await;
        let mut watch = reader.watch(name).await.unwrap();
        let key = |id: &str| format!("{prefix}{id}");
        let writer = client.clone();
        let put = |id: &str, value: String| {
            let (mut client, key) = (writer.clone(), key(id));
            async move { client.put(key, value, None).await.unwrap() }
        };
        // A server restarted on its port announces it under a second id before the first goes.
        put("1", value(name, "127.0.0.1:1")).await;
        put("2", value(name, "127.0.0.1:1")).await;
        put("3", value(name, "127.0.0.1:3")).await;
        let both = within(WAIT, "two addresses", watch.wait_for(|e| e.len() == 2))
            .await
            .unwrap();
        assert_eq!(both.addresses(), ["127.0.0.1:1", "127.0.0.1:3"], "{what}");
        client.delete(key("1"), None).await.unwrap();
        put("3", value(name, "127.0.0.1:4")).await; // the key now names another address
        let moved = within(
            WAIT,
            "the rewritten key",
            watch.wait_for(|e| e.contains("grpc://127.0.0.1:4")),
        )
        .await
        .unwrap();
        assert_eq!(
            moved.addresses(),
            ["127.0.0.1:1", "127.0.0.1:4"],
            "{what}: id 2 still gives :1"
        );
        client.delete(key("2"), None).await.unwrap();
        within(WAIT, "the last id of :1 gone", watch.wait_for(|e| e.len() == 1))
            .await
            .unwrap();

        let mut garbage = vec![
            (key(""), value(name, "127.0.0.1:5")),
            (key("6/x"), value(name, "127.0.0.1:6")),
            (key("7"), "\u{fffd}".repeat(30_000)),
            (key("3"), String::new()), // the key of :4 now holds garbage: :4 is gone
        ];
        if matches!(layout, Layout::Kratos { .. }) {
            garbage.extend([
                (key("8"), "not json".to_owned()),
                (key("9"), value("other", "127.0.0.1:9")),
                (
                    key("10"),
                    r#"{"name":"ids","endpoints":["http://127.0.0.1:10"]}"#.to_owned(),
                ),
                (
                    key("11"),
                    r#"{"name":"ids","metadata":{"n":1},"endpoints":["grpc://127.0.0.1:11"]}"#.to_owned(),
                ),
            ]);
        }
        for (key, value) in &garbage {
            client.put(key.clone(), value.clone(), None).await.unwrap();
        }
        put("12", value(name, "127.0.0.1:12")).await;
        let snapshot = within(
            WAIT,
            "the good instance after the garbage",
            watch.wait_for(|e| e.contains("grpc://127.0.0.1:12")),
        )
        .await
        .unwrap();
        assert_eq!(snapshot.addresses(), ["127.0.0.1:12"], "{what}");
        assert_eq!(
            reader.stats().bad_entries,
            garbage.len() as u64,
            "{what}: each counted once"
        );
        // A fresh list sees the same.
        assert_eq!(reader.list(name).await.unwrap().addresses(), ["127.0.0.1:12"], "{what}");
        let record = reader.entry(name, "grpc://127.0.0.1:12").await.unwrap().unwrap();
        assert_eq!(record.provider_key, key("12"), "{what}: the key as written");
    }
}
