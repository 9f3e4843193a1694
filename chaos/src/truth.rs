//! etcd's truth: what the service's provider keys say, read every 100 ms straight from the
//! members (never through a proxy) and written to the history whenever it changes.
//!
//! A read succeeds if any member answers a linearizable read within 300 ms, so one killed
//! member does not make etcd look unreachable; a frozen cluster or one without a leader does.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use jovian::ServiceInfo;
use jovian::service::EntryKind;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::history::Event;
use crate::procs::Sink;

/// The prefix every provider key of the chaos service has.
pub fn providers_prefix() -> String {
    format!("/jovian/{}/providers/", crate::server::SERVICE)
}

/// The provider key of the instance registered at `address`.
pub fn provider_key(address: &str) -> String {
    format!("{}grpc://{address}", providers_prefix())
}

/// One read: provider addresses and those whose key has no lease.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Read {
    members: BTreeSet<String>,
    detached: BTreeSet<String>,
}

/// Polls etcd until `stop`, writing `truth` lines to `sink`.
pub async fn poll(endpoints: Vec<String>, clock: Clock, sink: Sink, stop: CancellationToken) {
    let mut clients: Vec<Option<Client>> = vec![None; endpoints.len()];
    let mut last: Option<Option<Read>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.is_cancelled() {
        tick.tick().await;
        let mut read = None;
        let mut revision = 0;
        for (endpoint, client) in endpoints.iter().zip(clients.iter_mut()) {
            match read_once(endpoint, client).await {
                Some((answer, rev)) => {
                    read = Some(answer);
                    revision = rev;
                    break;
                }
                None => *client = None,
            }
        }
        if last.as_ref() != Some(&read) {
            let event = match &read {
                Some(r) => Event::Truth {
                    reachable: true,
                    revision,
                    members: r.members.iter().cloned().collect(),
                    detached: r.detached.iter().cloned().collect(),
                },
                None => Event::Truth {
                    reachable: false,
                    revision: 0,
                    members: Vec::new(),
                    detached: Vec::new(),
                },
            };
            sink.event(clock.now(), "orchestrator", 0, event);
            last = Some(read);
        }
    }
}

async fn read_once(endpoint: &str, client: &mut Option<Client>) -> Option<(Read, i64)> {
    let limit = Duration::from_millis(300);
    if client.is_none() {
        let options = ConnectOptions::new().with_connect_timeout(limit).with_timeout(limit);
        *client = tokio::time::timeout(limit, Client::connect([endpoint], Some(options)))
            .await
            .ok()?
            .ok();
    }
    let c = client.as_mut()?;
    let prefix = providers_prefix();
    let response = tokio::time::timeout(limit, c.get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
        .await
        .ok()?
        .ok()?;
    let mut read = Read {
        members: BTreeSet::new(),
        detached: BTreeSet::new(),
    };
    for kv in response.kvs() {
        let Some(uri) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix.as_str())) else {
            continue;
        };
        let Ok(info) = ServiceInfo::decode(kv.value()) else {
            continue;
        };
        if info.uri() != uri || info.scheme != "grpc" || info.kind != EntryKind::Provider || !info.is_available() {
            continue;
        }
        if kv.lease() == 0 {
            read.detached.insert(info.address.clone());
        }
        read.members.insert(info.address);
    }
    Some((read, response.header().map_or(0, |h| h.revision())))
}
