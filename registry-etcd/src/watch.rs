//! The reader side: one service's instances, listed then watched without a gap.
//!
//! List at revision R, watch from R+1, apply each event once. On compaction, cancellation,
//! stream error or end: back off, list again (the new list replaces the view, so removals made
//! while disconnected are seen), and watch again from the new revision. Until then the last
//! snapshot stays: registry trouble never empties a client's endpoint set.
//!
//! One trouble is not an outage: etcd coming back with its data wiped (or restored from an
//! older backup). Its revision then goes backwards, and the re-list lacks instances whose
//! owners are alive and about to put their keys back. Those instances are kept for a grace
//! period (`EtcdConfig::reset_grace`) rather than dropped, so clients ride through the repair.
//!
//! Provider entries are merged with their governance overrides (`configurators`) before they
//! are published. Values that are not valid entries are skipped, logged once per key and
//! counted, never fatal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use jovian::{Endpoints, EndpointsPublisher, EndpointsWatch, ServiceInfo};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::call::{CallError, with_client};
use crate::keys::{KeyKind, Keys};
use crate::stats::Stats;

/// Fields an override may not change: they identify the instance.
const IDENTITY_FIELDS: [&str; 3] = ["name", "scheme", "address"];
/// Re-listing after trouble is retried at least this often.
const MAX_RELIST_DELAY: Duration = Duration::from_secs(1);

/// What a watch needs to run on its own.
#[derive(Clone)]
pub(crate) struct Watcher {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) request_timeout: Duration,
    pub(crate) reset_grace: Duration,
    pub(crate) stopped: CancellationToken,
    pub(crate) stats: Arc<Stats>,
}

impl Watcher {
    /// The current instances of `name`.
    pub(crate) async fn list(&self, name: &str) -> Result<Endpoints, CallError> {
        Ok(self.load(name).await?.snapshot())
    }

    /// Lists `name`, then follows it in the background until the registry stops or nobody
    /// watches any more.
    pub(crate) async fn watch(&self, name: &str) -> Result<EndpointsWatch, CallError> {
        let view = self.load(name).await?;
        let (publisher, watch) = EndpointsWatch::channel(view.snapshot());
        tokio::spawn(self.clone().follow(view, publisher));
        Ok(watch)
    }

    async fn load(&self, name: &str) -> Result<ServiceView, CallError> {
        let prefix = self.keys.service(name);
        let key = prefix.as_str();
        let list = |mut c: Client| async move { c.get(key, Some(GetOptions::new().with_prefix())).await };
        let listed = with_client(&self.client, self.request_timeout, list).await?;
        let mut view = ServiceView::new(name, prefix);
        view.revision = listed.header().map_or(0, |h| h.revision());
        for kv in listed.kvs() {
            view.put(kv, &self.stats);
        }
        Ok(view)
    }

    async fn follow(self, mut view: ServiceView, publisher: EndpointsPublisher) {
        let mut backoff = Backoff::new(MAX_RELIST_DELAY);
        loop {
            tokio::select! {
                () = self.stopped.cancelled() => return,
                () = publisher.unwatched() => return,
                reason = self.stream(&mut view, &publisher) => {
                    tracing::info!(service = %view.name, %reason, "registry watch interrupted; listing again");
                    self.stats.watch_restarted(&view.name);
                }
            }
            loop {
                tokio::select! {
                    () = self.stopped.cancelled() => return,
                    () = publisher.unwatched() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.load(&view.name).await {
                    Ok(fresh) => {
                        view.replace(fresh, self.reset_grace);
                        publisher.publish(view.snapshot());
                        backoff.reset();
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(service = %view.name, %error, "listing failed; retrying")
                    }
                }
            }
        }
    }

    /// Applies watch events from `view.revision + 1` on; returns why it stopped.
    async fn stream(&self, view: &mut ServiceView, publisher: &EndpointsPublisher) -> String {
        let (prefix, from) = (view.prefix.as_str(), view.revision + 1);
        let watch = |mut c: Client| async move {
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_progress_notify();
            c.watch(prefix, Some(options)).await
        };
        let mut stream = match with_client(&self.client, self.request_timeout, watch).await {
            Ok(stream) => stream,
            Err(error) => return format!("cannot start watching: {error}"),
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = view.grace_over() => {
                    view.end_grace();
                    publisher.publish(view.snapshot());
                    continue;
                }
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return "the watch stream ended".into(),
                Err(error) => return format!("watch stream error: {error}"),
            };
            if response.compact_revision() > 0 {
                return format!("revision {} was compacted away", view.revision + 1);
            }
            if response.canceled() {
                return format!("etcd cancelled the watch: {}", response.cancel_reason());
            }
            if response.events().is_empty() {
                // A progress notification: every event up to its revision has been delivered.
                // (A creation notice's revision promises nothing, so it is not taken.)
                if !response.created() {
                    view.revision = view.revision.max(response.header().map_or(0, |h| h.revision()));
                }
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => view.put(kv, &self.stats),
                    EventType::Delete => view.delete(kv.key()),
                }
                view.revision = view.revision.max(kv.mod_revision());
            }
            publisher.publish(view.snapshot());
        }
    }
}

/// One service's providers and overrides as read from etcd.
struct ServiceView {
    name: String,
    prefix: String,
    revision: i64,
    providers: BTreeMap<String, ServiceInfo>,
    overrides: BTreeMap<String, Map<String, Value>>,
    /// Instances kept through an etcd reset until `grace_until`, unless re-announced or deleted.
    kept: BTreeMap<String, ServiceInfo>,
    grace_until: Option<Instant>,
}

impl ServiceView {
    fn new(name: &str, prefix: String) -> Self {
        Self {
            name: name.to_owned(),
            prefix,
            revision: 0,
            providers: BTreeMap::new(),
            overrides: BTreeMap::new(),
            kept: BTreeMap::new(),
            grace_until: None,
        }
    }

    /// Takes a fresh listing. When etcd's revision went backwards its data was lost, so
    /// instances the listing lacks are kept for `grace` while their owners put them back.
    fn replace(&mut self, fresh: ServiceView, grace: Duration) {
        let reset = fresh.revision < self.revision;
        let previous = std::mem::replace(self, fresh);
        let mut kept = previous.kept.clone();
        self.grace_until = previous.grace_until;
        if reset && !grace.is_zero() {
            tracing::warn!(
                service = %self.name,
                from = previous.revision,
                to = self.revision,
                "etcd's revision went backwards (data wiped or restored); keeping missing instances for {grace:?}"
            );
            kept.extend(
                previous
                    .providers
                    .iter()
                    .map(|(uri, info)| (uri.clone(), previous.merged(uri, info))),
            );
            self.grace_until = Some(Instant::now() + grace);
        }
        kept.retain(|uri, _| !self.providers.contains_key(uri));
        let expired = self.grace_until.is_some_and(|until| until <= Instant::now());
        if kept.is_empty() || expired {
            kept.clear();
            self.grace_until = None;
        }
        self.kept = kept;
    }

    /// Completes when instances kept through a reset are due to go; never without any.
    async fn grace_over(&self) {
        match self.grace_until {
            Some(until) => tokio::time::sleep_until(until).await,
            None => std::future::pending().await,
        }
    }

    fn end_grace(&mut self) {
        if !self.kept.is_empty() {
            tracing::info!(service = %self.name, dropped = self.kept.len(), "instances not re-announced after an etcd reset are dropped");
        }
        self.kept.clear();
        self.grace_until = None;
    }

    fn put(&mut self, kv: &KeyValue, stats: &Stats) {
        let outcome = match Keys::classify(&self.prefix, kv.key()) {
            Ok(KeyKind::Provider(uri)) => self.put_provider(uri, kv.value()),
            Ok(KeyKind::Configurator(uri)) => self.put_override(uri, kv.value()),
            Ok(KeyKind::Other) => Ok(()),
            Err(reason) => Err(reason.to_owned()),
        };
        if let Err(reason) = outcome {
            stats.bad_entry(&self.name, kv.key(), kv.mod_revision(), &reason);
        }
    }

    fn put_provider(&mut self, uri: &str, value: &[u8]) -> Result<(), String> {
        // Whatever was there is gone: the key now holds this value, valid or not.
        self.providers.remove(uri);
        let info = ServiceInfo::decode(value).map_err(|e| e.to_string())?;
        if info.name != self.name || info.uri() != uri {
            return Err(format!("the value describes {info}, not the key's {}@{uri}", self.name));
        }
        self.kept.remove(uri);
        self.providers.insert(uri.to_owned(), info);
        Ok(())
    }

    fn put_override(&mut self, uri: &str, value: &[u8]) -> Result<(), String> {
        self.overrides.remove(uri);
        if value.len() > jovian::MAX_ENTRY_BYTES {
            return Err(format!("override of {} bytes is larger than the limit", value.len()));
        }
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(value) else {
            return Err("an override must be a JSON object".into());
        };
        for identity in IDENTITY_FIELDS {
            fields.remove(identity);
        }
        // Type-check the fields now so that merging can never fail later.
        serde_json::from_value::<ServiceInfo>(Value::Object(fields.clone()))
            .map_err(|e| format!("override does not fit a service entry: {e}"))?;
        self.overrides.insert(uri.to_owned(), fields);
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) {
        match Keys::classify(&self.prefix, key) {
            Ok(KeyKind::Provider(uri)) => {
                self.providers.remove(uri);
                self.kept.remove(uri);
            }
            Ok(KeyKind::Configurator(uri)) => {
                self.overrides.remove(uri);
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> Endpoints {
        let in_grace = self.grace_until.is_some_and(|until| Instant::now() < until);
        let kept = self
            .kept
            .iter()
            .filter(|(uri, _)| in_grace && !self.providers.contains_key(*uri));
        let instances = self
            .providers
            .iter()
            .map(|(uri, info)| self.merged(uri, info))
            .chain(kept.map(|(_, info)| info.clone()));
        Endpoints::from_instances(self.name.clone(), self.revision, instances)
    }

    fn merged(&self, uri: &str, info: &ServiceInfo) -> ServiceInfo {
        match self.overrides.get(uri) {
            Some(fields) => merge(info, fields),
            None => info.clone(),
        }
    }
}

/// The provider's entry with an operator's override laid over it.
fn merge(info: &ServiceInfo, fields: &Map<String, Value>) -> ServiceInfo {
    let mut merged = serde_json::to_value(info).expect("ServiceInfo serializes");
    if let Value::Object(object) = &mut merged {
        object.extend(fields.clone());
    }
    serde_json::from_value(merged).unwrap_or_else(|_| info.clone())
}
