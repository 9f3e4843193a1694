//! Real Go services and jovian on one etcd, calling each other both ways (issue 22): Go jupiter
//! v0.2.7 (the layout jovian's default follows), jupiter's current v0.11.21 (whose keys jovian
//! shares through `layout = "etcd-naming"` with a key template), and a stock grpc-go resolving
//! `etcd:///{target}` through etcd's naming package. The Go programs are in `tests/go/` and
//! register, resolve and balance with their own stack's code (`jovian_tests::go_peers`).
//!
//! For each stack: its client calls jovian servers; a jovian client calls its servers; one pool
//! of both is balanced from either client; a jovian registration whose lease or key is lost
//! heals for its clients; an instance of either stack killed under load costs the other
//! stack's client no more failed calls than its own. Then, per stack, the bytes it writes
//! against a jovian App's, and governance keys (honoured by jovian clients; no jupiter
//! release's client reads them), and the `:authority` limits of Go clients of jovian servers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::GetOptions;
use jovian::{App, ClientBuilder, ClientOptions, Running, ServiceChannel, ServiceInfo};
use jovian_examples::{GreeterClient, HelloRequest};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry};
use jovian_tests::etcd::EtcdCluster;
use jovian_tests::go_peers::{GoClient, GoServer, Reply, Stack, answered_by};
use jovian_tests::greeters::{PeerEcho, server};
use jovian_tests::{eventually, init_logging, within};

/// How long the Go stacks get to see a change: their resolvers watch etcd, but they are
/// separate processes on a busy machine.
const WAIT: Duration = Duration::from_secs(20);
const NAME: &str = "greeter";
const CALLS: usize = 24;

/// A jovian registry sharing `stack`'s keys.
async fn registry(etcd: &EtcdCluster, stack: Stack, ttl: Duration) -> Arc<EtcdRegistry> {
    let (layout, prefix) = stack.layout();
    let config = EtcdConfig::new(etcd.endpoints()).layout(layout).prefix(prefix).ttl(ttl);
    Arc::new(EtcdRegistry::connect(config).await.unwrap())
}

/// A jovian Greeter server of `NAME` registered in `registry`; it answers with its address.
async fn jovian_server(registry: &Arc<EtcdRegistry>) -> (Running, String) {
    let running = App::new()
        .registry(registry.clone())
        .governor(None)
        .drain_delay(Duration::ZERO)
        .serve(server(NAME, PeerEcho))
        .start()
        .await
        .expect("the jovian server starts");
    let addr = running.local_addr(NAME).unwrap().to_string();
    (running, addr)
}

async fn jovian_client(registry: &Arc<EtcdRegistry>) -> ServiceChannel {
    ClientBuilder::new(registry.clone())
        .options(ClientOptions::default().wait_for_instances(Some(WAIT)))
        .build(NAME)
        .await
        .unwrap()
}

/// One call: the answering server's address.
async fn call(channel: &ServiceChannel) -> Reply {
    let reply = GreeterClient::new(channel.clone())
        .say_hello(HelloRequest { name: "jovian".into() })
        .await;
    match reply {
        Ok(reply) => Ok(reply
            .into_inner()
            .message
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned()),
        Err(status) => Err(format!("{:?} {}", status.code(), status.message())),
    }
}

async fn jovian_calls(channel: &ServiceChannel, calls: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for _ in 0..calls {
        replies.push(within(WAIT, "a call", call(channel)).await);
    }
    replies
}

/// Waits until `registry` lists exactly `addrs` for `NAME`.
async fn listed(registry: &EtcdRegistry, addrs: &[&str]) {
    use jovian::Discovery;
    let mut want: Vec<_> = addrs.iter().map(|a| a.to_string()).collect();
    want.sort();
    eventually(WAIT, "the instances to be listed", || async {
        let mut got = registry
            .list(NAME)
            .await
            .ok()?
            .addresses()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>();
        got.sort();
        (got == want).then_some(())
    })
    .await;
}

fn both(counts: &BTreeMap<String, usize>, a: &str, b: &str, who: &str) {
    assert!(
        counts.len() == 2 && counts.contains_key(a) && counts.contains_key(b),
        "{who}: calls should have gone to both {a} and {b}: {counts:?}"
    );
}

async fn its_client_calls_jovian_servers(stack: Stack) {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_a, a) = jovian_server(&registry).await;
    let (_b, b) = jovian_server(&registry).await;
    let replies = GoClient::calls(stack, &etcd, NAME, CALLS).await;
    assert_eq!(replies.len(), CALLS, "every call printed a line");
    both(&answered_by(&replies), &a, &b, stack.what());
}

async fn a_jovian_client_calls_its_servers(stack: Stack) {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let a = GoServer::start(stack, &etcd, NAME).await;
    let b = GoServer::start(stack, &etcd, NAME).await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    listed(&registry, &[a.addr(), b.addr()]).await;
    let channel = jovian_client(&registry).await;
    let replies = jovian_calls(&channel, CALLS).await;
    both(&answered_by(&replies), a.addr(), b.addr(), "the jovian client");
    assert_eq!(registry.stats().bad_entries, 0, "{}: nothing was skipped", stack.what());
}

async fn a_mixed_pool_is_balanced_from_either_client(stack: Stack) {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    listed(&registry, &[&j, go.addr()]).await;

    let channel = jovian_client(&registry).await;
    both(
        &answered_by(&jovian_calls(&channel, CALLS).await),
        &j,
        go.addr(),
        "the jovian client",
    );
    let replies = GoClient::calls(stack, &etcd, NAME, CALLS).await;
    both(&answered_by(&replies), &j, go.addr(), stack.what());
}

/// The jovian server's registration is lost under the Go client's feet (its lease revoked, or
/// its key deleted by hand): it comes back (on a new lease, or put back on its own) and the Go
/// client calls it again.
async fn a_lost_jovian_registration_heals_for_its_clients(stack: Stack, revoke_lease: bool) {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;
    let client = GoClient::start(stack, &etcd, NAME, 0, Duration::from_millis(20)).await;
    let key = stack.key(NAME, &j);
    eventually(WAIT, "the Go client's first call", || async {
        client.replies().iter().any(|r| r.as_ref() == Ok(&j)).then_some(())
    })
    .await;

    let mut etcd_client = etcd.client().await;
    let lease = etcd_client.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    let lost_at = match revoke_lease {
        true => etcd_client
            .lease_revoke(lease)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision(),
        false => etcd_client
            .delete(key.as_str(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision(),
    };
    eventually(WAIT, "the registration to come back", || {
        let mut etcd_client = etcd_client.clone();
        let key = key.clone();
        async move {
            let kvs = etcd_client.get(key, None).await.ok()?.kvs().to_vec();
            let back = kvs.first().filter(|kv| kv.create_revision() > lost_at)?;
            assert_ne!(back.lease(), 0, "put back on a lease");
            Some(())
        }
    })
    .await;
    let healed_at = client.replies().len();
    eventually(WAIT, "the Go client to call the healed instance", || async {
        let replies = client.replies();
        replies[healed_at..].iter().any(|r| r.as_ref() == Ok(&j)).then_some(())
    })
    .await;
}

/// Calls `channel` one after the other until `stop`, adding every reply to `replies`.
fn jovian_load(
    channel: ServiceChannel,
    replies: Arc<StdMutex<Vec<Reply>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let reply = call(&channel).await;
            replies.lock().unwrap().push(reply);
        }
    })
}

/// How many of `replies` since the first `since` went to `addr`.
fn answered_since(replies: &[Reply], since: usize, addr: &str) -> usize {
    replies[since.min(replies.len())..]
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|a| a == addr))
        .count()
}

fn failures(replies: &[Reply]) -> usize {
    replies.iter().filter(|r| r.is_err()).count()
}

/// A pool of a jovian server and a Go server under load from a jovian client and a Go client,
/// both calling one call after the other; `kill_go` says which instance dies abruptly (the Go
/// one by SIGKILL, or the jovian one: its App and registry dropped unstopped, sockets cut and
/// lease left to expire). The client of the other stack fails no more calls than the dead
/// instance's own stack's client (the one call a client may have had on the dead connection
/// aside), and both keep calling the survivor.
async fn an_instance_killed_under_load(stack: Stack, kill_go: bool) {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let jovian_registry = registry(&etcd, stack, Duration::from_secs(3)).await;
    let (jovian, j) = jovian_server(&jovian_registry).await;
    let mut go = GoServer::start(stack, &etcd, NAME).await;
    let client_registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    listed(&client_registry, &[&j, go.addr()]).await;
    let go_addr = go.addr().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let jovian_replies = Arc::new(StdMutex::new(Vec::new()));
    let load = jovian_load(
        jovian_client(&client_registry).await,
        jovian_replies.clone(),
        stop.clone(),
    );
    let go_client = GoClient::start(stack, &etcd, NAME, 0, Duration::ZERO).await;
    let jovian_so_far = || jovian_replies.lock().unwrap().clone();
    eventually(WAIT, "both clients to call both servers", || async {
        let (go_replies, jovian_replies) = (go_client.replies(), jovian_so_far());
        let both = |replies: &[Reply]| answered_since(replies, 0, &j) > 0 && answered_since(replies, 0, &go_addr) > 0;
        (both(&go_replies) && both(&jovian_replies)).then_some(())
    })
    .await;
    let (go_before, jovian_before) = (go_client.replies().len(), jovian_so_far().len());

    let (survivor, dead_stack) = match kill_go {
        true => {
            go.kill();
            (j.clone(), stack.what())
        }
        false => {
            drop(jovian);
            drop(jovian_registry);
            (go_addr.clone(), "jovian")
        }
    };
    // Both clients past the death and on the survivor for a while.
    eventually(WAIT, "both clients to call the survivor 50 times since", || async {
        let go = answered_since(&go_client.replies(), go_before, &survivor);
        let jovian = answered_since(&jovian_so_far(), jovian_before, &survivor);
        (go >= 50 && jovian >= 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    within(WAIT, "the jovian load to stop", load).await.unwrap();
    let jovian_replies = jovian_so_far();
    let go_replies = go_client.replies();
    let (jovian_failed, go_failed) = (failures(&jovian_replies), failures(&go_replies));
    eprintln!(
        "{dead_stack} instance killed: the jovian client failed {jovian_failed} of {} calls, the {} client {go_failed} of {}",
        jovian_replies.len(),
        stack.what(),
        go_replies.len()
    );
    let (own, other) = match kill_go {
        true => (go_failed, jovian_failed),
        false => (jovian_failed, go_failed),
    };
    assert!(
        other <= own.max(1),
        "killing a {dead_stack} instance cost the other stack's client {other} failed calls, its own {own}\n\
         jovian: {:?}\nGo: {:?}",
        jovian_replies.iter().filter(|r| r.is_err()).collect::<Vec<_>>(),
        go_replies.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
    );
    let tail = |replies: &[Reply]| replies.iter().rev().take(10).all(|r| r.as_ref() == Ok(&survivor));
    assert!(
        tail(&jovian_replies),
        "the jovian client ends on the survivor: {:?}",
        &jovian_replies[jovian_replies.len().saturating_sub(10)..]
    );
    assert!(
        tail(&go_replies),
        "the Go client ends on the survivor: {:?}",
        &go_replies[go_replies.len().saturating_sub(10)..]
    );
}

macro_rules! every_stack {
    ($($module:ident: $stack:expr;)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn its_client_calls_jovian_servers() {
                super::its_client_calls_jovian_servers($stack).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_jovian_client_calls_its_servers() {
                super::a_jovian_client_calls_its_servers($stack).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_mixed_pool_is_balanced_from_either_client() {
                super::a_mixed_pool_is_balanced_from_either_client($stack).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_lost_jovian_lease_heals_for_its_clients() {
                super::a_lost_jovian_registration_heals_for_its_clients($stack, true).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_deleted_jovian_key_heals_for_its_clients() {
                super::a_lost_jovian_registration_heals_for_its_clients($stack, false).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn its_instance_killed_under_load_costs_jovian_clients_no_more_than_its_own() {
                super::an_instance_killed_under_load($stack, true).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_jovian_instance_killed_under_load_costs_its_clients_no_more_than_jovians() {
                super::an_instance_killed_under_load($stack, false).await;
            }
        }
    )*};
}

every_stack! {
    jupiter_v0_2_7: Stack::JupiterV027;
    jupiter: Stack::Jupiter;
    etcd_naming: Stack::EtcdNaming;
}

/// The value at `key`, as bytes.
async fn value(etcd: &EtcdCluster, key: &str) -> String {
    let mut client = etcd.client().await;
    let got = client.get(key, None).await.unwrap();
    let kv = got.kvs().first().unwrap_or_else(|| panic!("nothing at {key}"));
    assert_ne!(kv.lease(), 0, "{key} is on a lease");
    String::from_utf8(kv.value().to_vec()).unwrap()
}

/// Every key under etcd, for failure messages.
async fn every_key(etcd: &EtcdCluster) -> Vec<String> {
    let mut client = etcd.client().await;
    let got = client
        .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
        .await
        .unwrap();
    got.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect()
}

/// jupiter v0.2.7 writes `/{prefix}/{name}/providers/grpc://{addr}` → its ServiceInfo JSON. A
/// jovian App writes the same key, and for the fields both have, the same bytes: jupiter's
/// entry read by jovian and written back is jupiter's, byte for byte, but for `services`
/// (jupiter's list of gRPC services, always `null` from its registry) and jovian's `version`,
/// `mode` and `hostname` (jupiter 0.2.7 has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiter_v0_2_7_writes_what_a_jovian_app_writes() {
    init_logging();
    let stack = Stack::JupiterV027;
    let etcd = EtcdCluster::single().await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;

    let theirs = value(&etcd, &stack.key(NAME, go.addr())).await;
    let ours = value(&etcd, &stack.key(NAME, &j)).await;
    let info = ServiceInfo::decode(theirs.as_bytes()).expect("jovian reads jupiter's entry");
    assert_eq!(
        (
            info.name.as_str(),
            info.address.as_str(),
            info.weight,
            info.enable,
            info.healthy
        ),
        (NAME, go.addr(), 100, true, true)
    );
    assert_eq!(
        info.encode().replace(r#","version":"","mode":"","hostname":"""#, ""),
        theirs.replace(r#","services":null"#, ""),
        "jovian writes jupiter's fields as jupiter does"
    );
    let ours_info = ServiceInfo::decode(ours.as_bytes()).unwrap();
    assert_eq!(ours_info.encode(), ours, "the App's entry is ServiceInfo's JSON");
    assert_eq!(ours_info.address, j);
}

/// Current jupiter writes `grpc:{name}:v1:{mode}/{addr}` → `{"Op":0,"Addr":..,"MetadataX":
/// {ServiceInfo}}`; a jovian App under `etcd-naming` with the key template
/// `grpc:{name}:v1:{prefix}/{addr}` (prefix = the mode) writes the same key and
/// `{"Op":0,"Addr":..,"Metadata":null}`: what jupiter's client reads (`Op`, and the address
/// from the key) is the same; jupiter's ServiceInfo is not written. That ServiceInfo's JSON
/// is byte for byte jovian's ServiceInfo JSON, same fields in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_jupiter_writes_what_a_jovian_app_writes() {
    init_logging();
    let stack = Stack::Jupiter;
    let etcd = EtcdCluster::single().await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;
    let keys = every_key(&etcd).await;

    let theirs = value(&etcd, &stack.key(NAME, go.addr())).await;
    let ours = value(&etcd, &stack.key(NAME, &j)).await;
    let head = |addr: &str| format!(r#"{{"Op":0,"Addr":"{addr}","#);
    let metadata = theirs
        .strip_prefix(&head(go.addr()))
        .and_then(|rest| rest.strip_prefix(r#""MetadataX":"#))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("jupiter's value has another shape: {theirs} (keys: {keys:?})"));
    let info = ServiceInfo::decode(metadata.as_bytes()).expect("jovian reads jupiter's ServiceInfo");
    assert_eq!((info.name.as_str(), info.address.as_str()), (NAME, go.addr()));
    assert_eq!(
        info.encode(),
        metadata,
        "jovian's ServiceInfo JSON is jupiter's, byte for byte"
    );
    assert_eq!(ours, format!(r#"{}"Metadata":null}}"#, head(&j)));
}

/// etcd's `endpoints.Manager.AddEndpoint` and a jovian App under `etcd-naming` write the same
/// key and value for their address, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_naming_writes_what_a_jovian_app_writes() {
    init_logging();
    let stack = Stack::EtcdNaming;
    let etcd = EtcdCluster::single().await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;
    let theirs = value(&etcd, &stack.key(NAME, go.addr())).await;
    let ours = value(&etcd, &stack.key(NAME, &j)).await;
    assert_eq!(ours.replace(&j, "ADDR"), theirs.replace(go.addr(), "ADDR"));
}

/// An operator's override (`jovianctl disable`: `{"enable":false}` under `configurators/`)
/// for a jupiter v0.2.7 instance takes it out of jovian clients' pools; jupiter's own client
/// does not read `configurators/` (nor `enable` or `weight` of an entry: its resolver hands
/// every provider to grpc-go's round robin), so it keeps calling it. Re-enabled, jovian
/// clients call it again. jupiter's service-wide configurators (`configurators/grpc:///routes/1`)
/// are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_keys_are_honoured_by_jovian_clients_and_ignored_by_jupiter_v0_2_7() {
    init_logging();
    let stack = Stack::JupiterV027;
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    listed(&registry, &[&j, go.addr()]).await;
    let channel = jovian_client(&registry).await;
    let uri = format!("grpc://{}", go.addr());
    let patch = |enable: bool| serde_json::json!({ "enable": enable }).as_object().unwrap().clone();
    // jupiter's service-wide configurators (routes, as its `swr` balancer reads them) are no
    // instance's override: jovian leaves them alone, and does not count them as garbage.
    let route = format!(
        r#"{{"uri":"/helloworld.Greeter/SayHello","upstream":{{"nodes":{{"{}":10}}}}}}"#,
        go.addr()
    );
    let mut etcd_client = etcd.client().await;
    for key in [
        "configurators/grpc:///routes/1",
        &format!("configurators/grpc://{}/routes/2", go.addr()),
    ] {
        etcd_client
            .put(format!("/jovian/{NAME}/{key}"), route.as_str(), None)
            .await
            .unwrap();
    }

    registry.update_override(NAME, &uri, &patch(false)).await.unwrap();
    eventually(WAIT, "the jovian client to leave the disabled instance", || async {
        let replies = jovian_calls(&channel, 6).await;
        replies.iter().all(|r| r.as_ref() == Ok(&j)).then_some(())
    })
    .await;
    // The watch saw the routes before the override.
    assert_eq!(
        registry.stats().bad_entries,
        0,
        "jupiter's route configurators are not garbage"
    );
    let replies = GoClient::calls(stack, &etcd, NAME, CALLS).await;
    both(
        &answered_by(&replies),
        &j,
        go.addr(),
        "jupiter's client, which reads no override",
    );

    registry.update_override(NAME, &uri, &patch(true)).await.unwrap();
    eventually(WAIT, "the jovian client to call the re-enabled instance", || async {
        let replies = jovian_calls(&channel, 6).await;
        replies
            .iter()
            .any(|r| r.as_ref() == Ok(&go.addr().to_owned()))
            .then_some(())
    })
    .await;
}

/// Current jupiter's client sends the resolver's `ServerName`, `grpc:{name}:v1:{mode}/`, as
/// the `:authority` of its calls: no valid URI authority, so Rust's h2, under jovian's server
/// as under tonic's, resets every call with PROTOCOL_ERROR. With `grpc.WithAuthority(name)`
/// (what [`GoClient::start`] gives it) the same client calls the same server. Jovian clients
/// calling jupiter servers are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_jupiter_clients_need_a_valid_authority_to_call_jovian_servers() {
    init_logging();
    let stack = Stack::Jupiter;
    let etcd = EtcdCluster::single().await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    let (_jovian, j) = jovian_server(&registry).await;

    let stock = GoClient::calls_with(stack, &etcd, NAME, 3, &[]).await;
    assert_eq!(stock.len(), 3, "every call printed a line");
    assert!(
        stock
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("PROTOCOL_ERROR"))),
        "without an authority the calls fail, refused by h2: {stock:?}"
    );
    let with_authority = GoClient::calls_with(stack, &etcd, NAME, 3, &["-authority", NAME]).await;
    assert_eq!(answered_by(&with_authority).get(&j), Some(&3));
}

/// Current jupiter re-grants a lost lease and puts its keys back (its keep-alive loop), and
/// jovian clients follow: revoked, the Go server's registration returns and is called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_jupiter_lease_heals_for_jovian_clients() {
    init_logging();
    let stack = Stack::Jupiter;
    let etcd = EtcdCluster::single().await;
    let go = GoServer::start(stack, &etcd, NAME).await;
    let registry = registry(&etcd, stack, Duration::from_secs(10)).await;
    listed(&registry, &[go.addr()]).await;
    let channel = jovian_client(&registry).await;
    assert_eq!(call(&channel).await, Ok(go.addr().to_owned()));

    let key = stack.key(NAME, go.addr());
    let mut etcd_client = etcd.client().await;
    let lease = etcd_client.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    etcd_client.lease_revoke(lease).await.unwrap();
    eventually(WAIT, "jupiter to re-register on a new lease", || {
        let mut etcd_client = etcd_client.clone();
        let key = key.clone();
        async move {
            let kvs = etcd_client.get(key, None).await.ok()?.kvs().to_vec();
            kvs.first().filter(|kv| kv.lease() != lease).map(|_| ())
        }
    })
    .await;
    eventually(WAIT, "the jovian client to call it again", || async {
        (call(&channel).await == Ok(go.addr().to_owned())).then_some(())
    })
    .await;
}

/// docs/etcd.md's `:authority` note with today's grpc-go: a stock client dialing a target that
/// holds a `/` (`etcd:///services/greeter`, jovian registered under `key_template =
/// "services/{name}/{addr}"`) resolves the jovian server but sends the target as the
/// `:authority`, which jovian's server (Rust's h2) refuses with PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_go_target_with_a_slash_cannot_call_jovian_servers() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let layout = jovian_registry_etcd::Layout::etcd_naming().key_template("services/{name}/{addr}");
    let registry = Arc::new(
        EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()).layout(layout))
            .await
            .unwrap(),
    );
    let (_jovian, _j) = jovian_server(&registry).await;
    let replies = GoClient::calls(Stack::EtcdNaming, &etcd, "services/greeter", 3).await;
    assert_eq!(replies.len(), 3, "every call printed a line");
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.contains("PROTOCOL_ERROR"))),
        "the calls reach the server and are refused by h2: {replies:?}"
    );
}
