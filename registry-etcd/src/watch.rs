//! The reader side: one service's instances, listed then watched without a gap.
//!
//! List at revision R, watch from R (skipping the events of R itself, which the list holds:
//! see `Watcher::stream` for why not from R+1), apply each event once. On compaction, cancellation,
//! stream error or end: back off, list again (the new list replaces the view, so removals made
//! while disconnected are seen), and watch again from the new revision. Until then the last
//! snapshot stays: registry trouble never empties a client's endpoint set.
//!
//! A re-list after trouble may lack instances whose owners are alive: etcd was frozen or cut
//! off for longer than the TTL and expired their leases, or it came back with its data wiped.
//! Their owners put them back within moments of reaching etcd again. So after any
//! interruption, instances missing from the fresh list (or deleted while the registry settles
//! again) are kept for a grace period (`EtcdConfig::relist_grace`) unless they come back
//! sooner: clients ride through the repair instead of emptying. A kept instance that is really
//! gone costs little: the balancer ejects it on its first failed connection.
//!
//! Lists are paginated at one pinned revision, so a service of any size is read within the
//! message size limit; a page too large for it is fetched again in smaller pieces.
//!
//! Provider entries are merged with their governance overrides (`configurators`) before they
//! are published. Values that are not valid entries are skipped, logged once per key and
//! counted, never fatal.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Event, EventType, GetOptions, KeyValue, WatchOptions};
use jovian::{Instances, InstancesPublisher, InstancesWatch, ServiceInfo};
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
/// Keys per page of a list, unless a page proves too large for the message size limit.
const PAGE_KEYS: i64 = 1000;
/// Times a list starts over because its revision was compacted away between pages.
const LIST_ATTEMPTS: usize = 3;

/// What a watch needs to run on its own.
#[derive(Clone)]
pub(crate) struct Watcher {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) request_timeout: Duration,
    pub(crate) relist_grace: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) stopped: CancellationToken,
    pub(crate) stats: Arc<Stats>,
}

impl Watcher {
    /// The current instances of `name`.
    pub(crate) async fn list(&self, name: &str) -> Result<Instances, CallError> {
        Ok(self.load(name).await?.snapshot())
    }

    /// Every service with at least one provider key, sorted. Reads keys only, a page at a
    /// time, and skips the rest of a service once one of its providers is seen, so the cost
    /// grows with the services more than with their instances.
    pub(crate) async fn services(&self) -> Result<Vec<String>, CallError> {
        let root = self.keys.root();
        let end = Keys::prefix_end(&root);
        let mut names = BTreeSet::new();
        let mut from = Keys::range_start(&root);
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_keys_only()
                .with_limit(PAGE_KEYS);
            let key = from.as_slice();
            let get = |mut c: Client| {
                let options = options.clone();
                async move { c.get(key, Some(options)).await }
            };
            let listed = with_client(&self.client, self.request_timeout, get).await?;
            for kv in listed.kvs() {
                if let Some(name) = self.keys.provider_service(kv.key()) {
                    names.insert(name.to_owned());
                }
            }
            let Some(last) = listed.kvs().last().filter(|_| listed.more()) else {
                break;
            };
            // Past a service known to have a provider, none of its keys can add anything.
            from = match self.keys.provider_service(last.key()) {
                Some(name) => Keys::prefix_end(&self.keys.service(name)),
                None => [last.key(), b"\0"].concat(),
            };
        }
        Ok(names.into_iter().collect())
    }

    /// Lists `name`, then follows it in the background until the registry stops or nobody
    /// watches any more.
    pub(crate) async fn watch(&self, name: &str) -> Result<InstancesWatch, CallError> {
        let view = self.load(name).await?;
        let (publisher, watch) = InstancesWatch::channel(view.snapshot());
        tokio::spawn(self.clone().follow(view, publisher));
        Ok(watch)
    }

    /// Lists `name` page by page, every page at the revision of the first.
    async fn load(&self, name: &str) -> Result<ServiceView, CallError> {
        let mut attempt = 1;
        loop {
            match self.list_pages(name).await {
                Err(error) if error.is_compacted() && attempt < LIST_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    async fn list_pages(&self, name: &str) -> Result<ServiceView, CallError> {
        let prefix = self.keys.service(name);
        let end = Keys::prefix_end(&prefix);
        let mut view = ServiceView::new(name, prefix.clone(), self.keys.clone());
        let mut from = prefix.into_bytes();
        let mut revision = 0;
        let mut page = PAGE_KEYS;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(revision);
            let key = from.as_slice();
            let max = self.max_message_bytes;
            let get = |c: Client| {
                let options = options.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(max)
                        .get(key, Some(options))
                        .await
                }
            };
            let listed = match with_client(&self.client, self.request_timeout, get).await {
                Ok(listed) => listed,
                Err(error) if error.is_too_large() && page > 1 => {
                    page = (page / 4).max(1);
                    continue;
                }
                Err(error) => return Err(error),
            };
            if revision == 0 {
                revision = listed.header().map_or(0, |h| h.revision());
            }
            for kv in listed.kvs() {
                view.put(kv, &self.stats);
            }
            match listed.kvs().last() {
                Some(last) if listed.more() => {
                    from = [last.key(), b"\0"].concat();
                    page = (page * 2).min(PAGE_KEYS);
                }
                _ => break,
            }
        }
        view.revision = revision;
        Ok(view)
    }

    async fn follow(self, mut view: ServiceView, publisher: InstancesPublisher) {
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
                        view.replace(fresh, self.relist_grace);
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

    /// The leases, among those of the providers `response` deletes, that etcd still holds: their
    /// keys were deleted on purpose (an unregister), not lost with the lease. A lease that cannot
    /// be asked about, or whose answer proves nothing, is taken for lost, so its instances are
    /// kept.
    async fn withdrawn_leases(&self, events: &[&Event]) -> HashSet<i64> {
        let leases: BTreeSet<i64> = events
            .iter()
            .filter(|e| e.event_type() == EventType::Delete)
            .filter_map(|e| e.prev_kv().map(KeyValue::lease))
            .filter(|&lease| lease != 0)
            .collect();
        let alive = leases.into_iter().map(|lease| async move {
            let ask = |mut c: Client| async move { c.lease_time_to_live(lease, None).await };
            let answer = with_client(&self.client, self.request_timeout, ask).await;
            let answer = answer.ok()?;
            if answer.ttl() > answer.granted_ttl().saturating_add(LEADER_EXTENSION_SECS) {
                // Rare (a leader change) and the reason a delete is kept: worth a line.
                tracing::warn!(
                    lease,
                    ttl = answer.ttl(),
                    "etcd reports the lease of a deleted instance as never expiring (a new leader not caught up yet); taking the delete for an expiry"
                );
            }
            proves_alive(answer.ttl(), answer.granted_ttl()).then_some(lease)
        });
        futures_util::future::join_all(alive)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Applies watch events from `view.revision + 1` on; returns why it stopped.
    ///
    /// The watch starts at the listed revision R itself, not R + 1, and skips R's events (the
    /// list holds them): etcd 3.5 and later answer no progress request while a watch on the
    /// stream starts above etcd's current revision, and R + 1 is above it until the next write
    /// anywhere in etcd. On a quiet etcd the stall detector then never heard an answer, so it
    /// never judged a freeze, and leases expired in one were taken for crashes (etcd 3.4
    /// answers at once; docs/etcd.md, "etcd versions").
    async fn stream(&self, view: &mut ServiceView, publisher: &InstancesPublisher) -> String {
        let listed = view.revision;
        let (prefix, from, max) = (view.prefix.as_str(), listed, self.max_message_bytes);
        let watch = |c: Client| async move {
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_progress_notify()
                .with_prev_key()
                .with_fragment();
            c.watch_client()
                .max_decoding_message_size(max)
                .watch(prefix, Some(options))
                .await
        };
        let (mut requests, mut responses) = match with_client(&self.client, self.request_timeout, watch).await {
            Ok(stream) => stream.split(),
            Err(error) => return format!("cannot start watching: {error}"),
        };
        tracing::debug!(service = %view.name, revision = from, "watching from the listed revision");
        let mut stall = StallDetector::new(self.request_timeout);
        let mut ask = tokio::time::interval(PROGRESS_EVERY);
        ask.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                message = responses.message() => message,
                _ = ask.tick() => {
                    if let Some(silence) = stall.dead() {
                        return format!("etcd has not answered for {silence:?}");
                    }
                    if let Err(error) = requests.request_progress().await {
                        return format!("cannot ask etcd for progress: {error}");
                    }
                    continue;
                }
                () = view.grace_over() => {
                    view.end_grace();
                    publisher.publish(view.snapshot());
                    continue;
                }
            };
            let answer = message
                .as_ref()
                .is_ok_and(|m| m.as_ref().is_some_and(answers_progress_request));
            if let Some(silence) = stall.heard(answer) {
                tracing::info!(service = %view.name, ?silence, "etcd stalled; its lease expiries are treated as part of the outage");
                view.settle(self.relist_grace);
            }
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return "the watch stream ended".into(),
                Err(error) => return format!("watch stream error: {error}"),
            };
            if response.compact_revision() > 0 {
                return format!("revision {from} was compacted away");
            }
            if response.canceled() {
                return format!("etcd cancelled the watch: {}", response.cancel_reason());
            }
            if response.events().is_empty() {
                if is_progress(&response) {
                    view.revision = view.revision.max(response.header().map_or(0, |h| h.revision()));
                }
                continue;
            }
            // Only the listed revision's own events can be old: every later one is new.
            let events: Vec<&Event> = response
                .events()
                .iter()
                .filter(|e| e.kv().is_some_and(|kv| kv.mod_revision() > listed))
                .collect();
            if events.is_empty() {
                continue;
            }
            let withdrawn = match view.is_settling() {
                true => self.withdrawn_leases(&events).await,
                false => HashSet::new(),
            };
            for event in events {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => view.put(kv, &self.stats),
                    EventType::Delete => {
                        // A key deleted while its lease lives (or that had none) was withdrawn
                        // by its owner or an operator: it goes now, settling or not.
                        let lease = event.prev_kv().map_or(0, |prev| prev.lease());
                        view.delete(kv.key(), lease == 0 || withdrawn.contains(&lease));
                    }
                }
                view.revision = view.revision.max(kv.mod_revision());
            }
            publisher.publish(view.snapshot());
            // A burst arrives as responses back to back, each ready at once: without this the
            // loop would hold its worker thread (and every task queued on it) until the burst ends.
            tokio::task::consume_budget().await;
        }
    }
}

/// The most a new etcd leader extends every lease by: its election timeout, which etcd caps at
/// 50 s.
const LEADER_EXTENSION_SECS: i64 = 50;

/// Whether etcd's answer about a lease (`ttl` seconds left of `granted`) proves it lives.
///
/// etcd 3.4 answers from the lessor of the member that thinks it leads. Right after a leader
/// change that lessor may not have applied the entries before its term yet — the revokes of
/// leases that expired in an outage among them — and reports every lease as never expiring
/// (`i64::MAX` ns, in seconds; etcd 3.4.32 and 3.5.14 return an error instead). Only a TTL a
/// live lease can have proves it: above zero, at most its granted TTL plus a new leader's
/// extension.
pub(crate) fn proves_alive(ttl: i64, granted: i64) -> bool {
    ttl > 0 && ttl <= granted.saturating_add(LEADER_EXTENSION_SECS)
}

/// How often a watch asks etcd to confirm it is up to date (a progress request), so that a
/// healthy etcd is heard from at least this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// etcd silent for this long is a stall: leases may expire in it. A lease of TTL `t` renewed
/// every `t/3` expires only in a stall of at least `2t/3`, so stalls that can expire leases of
/// 3 s or more are all seen.
const STALL: Duration = Duration::from_secs(2);

/// Tells, from how long etcd went without a word on the watch stream (which progress requests
/// keep busy), whether it stalled (was frozen, or cut off from this client) long enough for
/// leases to expire meanwhile: their owners could not renew them, and are about to put their
/// keys back.
///
/// Stalls are only judged once etcd has answered a progress request on this stream, so a proxy
/// that does not forward them (etcd's gRPC proxy) costs nothing but the detection; the periodic
/// progress notifications such a proxy does forward are not answers (see
/// [`answers_progress_request`]).
struct StallDetector {
    last_heard: Instant,
    answers_progress: bool,
    request_timeout: Duration,
}

impl StallDetector {
    fn new(request_timeout: Duration) -> Self {
        Self {
            last_heard: Instant::now(),
            answers_progress: false,
            request_timeout,
        }
    }

    /// Notes a message from etcd (`answer`: one answering a progress request); returns how long
    /// it had been silent if that was a stall.
    fn heard(&mut self, answer: bool) -> Option<Duration> {
        let silence = std::mem::replace(&mut self.last_heard, Instant::now()).elapsed();
        self.answers_progress |= answer;
        (self.answers_progress && silence >= STALL).then_some(silence)
    }

    /// How long etcd has been silent, if that is long enough to give up on this stream: it
    /// answers progress requests, yet has not said a word within the request timeout.
    fn dead(&self) -> Option<Duration> {
        let silence = self.last_heard.elapsed();
        (self.answers_progress && silence > self.request_timeout + STALL).then_some(silence)
    }
}

/// Whether a watch response is a progress notification (every event up to its revision has
/// been delivered). A creation notice's revision promises nothing, so it is not one.
fn is_progress(response: &etcd_client::WatchResponse) -> bool {
    response.events().is_empty() && !response.created() && !response.canceled()
}

/// The watch id etcd answers a progress request with: the answer is for every watch on the
/// stream, not one of them.
const PROGRESS_ANSWER_ID: i64 = -1;

/// Whether a watch response answers one of our progress requests, as opposed to the progress
/// notification etcd sends on its own to a watch idle for a while (every 10 minutes by
/// default), which carries the watch's id.
///
/// The difference matters behind etcd's gRPC proxy: it drops progress requests but forwards
/// the periodic notifications. Taken for an answer, the first one would make the stall
/// detector judge silences it cannot explain, and give the healthy watch up as dead.
fn answers_progress_request(response: &etcd_client::WatchResponse) -> bool {
    is_progress(response) && response.watch_id() == PROGRESS_ANSWER_ID
}

/// One service's providers and overrides as read from etcd, and the snapshot clients see,
/// kept up to date key by key: an event costs the same whatever the size of the service.
struct ServiceView {
    name: String,
    prefix: String,
    keys: Keys,
    revision: i64,
    providers: HashMap<Arc<str>, Arc<ServiceInfo>>,
    /// Under layouts whose keys name an id, not an address (kratos, go-zero): the address
    /// (`uri`) each id's value gave, and how many ids give each address. Go servers restarted
    /// on the same port announce it under a new id before the old one expires: the address
    /// stays a provider until the last id giving it is gone.
    ids: HashMap<Arc<str>, Arc<str>>,
    ids_per_uri: HashMap<Arc<str>, usize>,
    overrides: HashMap<Arc<str>, Map<String, Value>>,
    /// Instances that went missing across an interruption, each kept until its deadline unless
    /// re-announced (or deleted again once the registry has settled).
    kept: HashMap<Arc<str>, (Arc<ServiceInfo>, Instant)>,
    /// Until then, deletes of providers are treated as lease expiries of the interruption (the
    /// owner is about to put the key back) and kept like missing instances.
    settling_until: Option<Instant>,
    /// What clients see: every provider merged with its override, and the kept instances.
    published: Instances,
}

impl ServiceView {
    fn new(name: &str, prefix: String, keys: Keys) -> Self {
        Self {
            name: name.to_owned(),
            prefix,
            keys,
            revision: 0,
            providers: HashMap::new(),
            ids: HashMap::new(),
            ids_per_uri: HashMap::new(),
            overrides: HashMap::new(),
            kept: HashMap::new(),
            settling_until: None,
            published: Instances::new(name, 0),
        }
    }

    /// Takes a fresh listing after an interruption. Instances it lacks are kept for `grace`
    /// while their owners put them back: an outage longer than the TTL expired their leases,
    /// or etcd lost its data.
    fn replace(&mut self, fresh: ServiceView, grace: Duration) {
        let mut previous = std::mem::replace(self, fresh);
        if previous.revision > self.revision {
            tracing::warn!(
                service = %self.name,
                from = previous.revision,
                to = self.revision,
                "etcd's revision went backwards (data wiped or restored)"
            );
        }
        if grace.is_zero() {
            return;
        }
        // Everything missing now, kept since an earlier interruption or gone in this one, gets
        // the whole grace from now: its owner could not put it back while etcd was out of reach.
        let until = Instant::now() + grace;
        self.settle(grace);
        let earlier = std::mem::take(&mut previous.kept)
            .into_iter()
            .map(|(uri, (info, _))| (uri, info));
        let now_missing = previous
            .providers
            .iter()
            .map(|(uri, info)| (Arc::clone(uri), previous.merged(uri, info)));
        self.kept = earlier
            .chain(now_missing)
            .filter(|(uri, _)| !self.providers.contains_key(uri))
            .map(|(uri, info)| (uri, (info, until)))
            .collect();
        let kept: Vec<Arc<str>> = self.kept.keys().cloned().collect();
        for uri in &kept {
            self.refresh(uri);
        }
        if !kept.is_empty() {
            tracing::warn!(
                service = %self.name,
                missing = kept.len(),
                "instances missing after an interruption are kept for up to {grace:?} while their owners re-register"
            );
        }
    }

    /// Opens (or extends) the window in which deletes of providers are taken for lease
    /// expiries caused by an outage, and kept for `grace`.
    fn settle(&mut self, grace: Duration) {
        if grace.is_zero() {
            return;
        }
        let until = Instant::now() + grace;
        self.settling_until = Some(self.settling_until.map_or(until, |current| current.max(until)));
    }

    /// Completes when a kept instance is due to go or the settling ends; never without either.
    async fn grace_over(&self) {
        let next = self
            .kept
            .values()
            .map(|(_, until)| *until)
            .chain(self.settling_until)
            .min();
        match next {
            Some(until) => tokio::time::sleep_until(until).await,
            None => std::future::pending().await,
        }
    }

    fn end_grace(&mut self) {
        let now = Instant::now();
        if self.settling_until.is_some_and(|until| until <= now) {
            self.settling_until = None;
        }
        let due: Vec<Arc<str>> = self
            .kept
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(uri, _)| Arc::clone(uri))
            .collect();
        for uri in &due {
            self.kept.remove(uri);
            self.refresh(uri);
        }
        if !due.is_empty() {
            tracing::info!(service = %self.name, dropped = due.len(), "instances not re-announced in time are dropped");
        }
    }

    fn put(&mut self, kv: &KeyValue, stats: &Stats) {
        let outcome = match self.keys.classify(&self.prefix, kv.key()) {
            Ok(KeyKind::Provider(uri)) => {
                let outcome = self.put_provider(&uri, kv.value());
                self.refresh(&uri);
                outcome
            }
            Ok(KeyKind::Instance(id)) => self.put_instance(id, kv.value()),
            Ok(KeyKind::Configurator(uri)) => {
                let outcome = self.put_override(uri, kv.value());
                self.refresh(uri);
                outcome
            }
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
        let info = self.keys.decode(&self.name, Some(uri), value)?;
        self.kept.remove(uri);
        self.providers.insert(uri.into(), Arc::new(info));
        Ok(())
    }

    /// A put of the key named by `id`: the instance its value describes is a provider, and
    /// whatever the key described before is not (unless another id still gives it).
    fn put_instance(&mut self, id: &str, value: &[u8]) -> Result<(), String> {
        let decoded = self.keys.decode(&self.name, None, value);
        let uri: Option<Arc<str>> = decoded.as_ref().ok().map(|info| info.uri().into());
        let before = self.ids.get(id).cloned();
        let same = before.is_some() && before == uri;
        if before.is_some() && !same {
            // The key now holds another address, or garbage: it was rewritten on purpose.
            self.release(id, true);
        }
        let info = decoded?;
        let uri = uri.expect("decoded");
        if !same {
            self.ids.insert(id.into(), Arc::clone(&uri));
            *self.ids_per_uri.entry(Arc::clone(&uri)).or_default() += 1;
        }
        self.kept.remove(&*uri);
        self.providers.insert(Arc::clone(&uri), Arc::new(info));
        self.refresh(&uri);
        Ok(())
    }

    /// Forgets that `id` gives its address; the address stops being a provider when no other
    /// id gives it (`withdrawn` as for [`delete`](Self::delete)).
    fn release(&mut self, id: &str, withdrawn: bool) {
        let Some(uri) = self.ids.remove(id) else { return };
        let left = self.ids_per_uri.get_mut(&uri).map_or(0, |count| {
            *count -= 1;
            *count
        });
        if left == 0 {
            self.ids_per_uri.remove(&uri);
            self.remove_provider(&uri, withdrawn);
        }
    }

    fn put_override(&mut self, uri: &str, value: &[u8]) -> Result<(), String> {
        self.overrides.remove(uri);
        let fields = parse_override(value)?;
        self.overrides.insert(uri.into(), fields);
        Ok(())
    }

    /// Whether deletes are being taken for lease expiries of recent trouble.
    fn is_settling(&self) -> bool {
        self.settling_until.is_some_and(|until| Instant::now() < until)
    }

    /// Applies a delete; `withdrawn` when it was made on purpose (its lease still lives), so it
    /// takes effect even while the registry settles.
    fn delete(&mut self, key: &[u8], withdrawn: bool) {
        match self.keys.classify(&self.prefix, key) {
            Ok(KeyKind::Provider(uri)) => self.remove_provider(&uri, withdrawn),
            Ok(KeyKind::Instance(id)) => self.release(id, withdrawn),
            Ok(KeyKind::Configurator(uri)) => {
                self.overrides.remove(uri);
                self.refresh(uri);
            }
            _ => {}
        }
    }

    /// The provider at `uri` is gone; kept for the grace while the registry settles, unless
    /// `withdrawn`.
    fn remove_provider(&mut self, uri: &str, withdrawn: bool) {
        let removed = self.providers.remove(uri);
        let settling = self.settling_until.filter(|_| !withdrawn && self.is_settling());
        match (removed, settling) {
            (Some(info), Some(until)) => {
                let merged = self.merged(uri, &info);
                self.kept.insert(uri.into(), (merged, until));
            }
            _ => {
                self.kept.remove(uri);
            }
        }
        self.refresh(uri);
    }

    /// Brings the published entry at `uri` in line with the provider, its override and the
    /// kept instances.
    fn refresh(&mut self, uri: &str) {
        let effective = match self.providers.get(uri) {
            Some(info) => Some(self.merged(uri, info)),
            None => self.kept.get(uri).map(|(info, _)| Arc::clone(info)),
        };
        match effective {
            Some(info) => {
                self.published.insert(info);
            }
            None => {
                self.published.remove(uri);
            }
        }
    }

    fn snapshot(&self) -> Instances {
        let mut snapshot = self.published.clone();
        snapshot.set_revision(self.revision);
        snapshot
    }

    fn merged(&self, uri: &str, info: &Arc<ServiceInfo>) -> Arc<ServiceInfo> {
        match self.overrides.get(uri) {
            Some(fields) => Arc::new(merge(info, fields)),
            None => Arc::clone(info),
        }
    }
}

/// The fields of an override value, as every watcher merges them: a JSON object no larger
/// than an entry, whose fields fit a service entry, without the identity fields (which it may
/// not change). An error says why the value is skipped.
pub(crate) fn parse_override(value: &[u8]) -> Result<Map<String, Value>, String> {
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
    Ok(fields)
}

/// The provider's entry with an operator's override laid over it.
pub(crate) fn merge(info: &ServiceInfo, fields: &Map<String, Value>) -> ServiceInfo {
    let mut merged = serde_json::to_value(info).expect("ServiceInfo serializes");
    if let Value::Object(object) = &mut merged {
        object.extend(fields.clone());
    }
    serde_json::from_value(merged).unwrap_or_else(|_| info.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fault runs (seed 30): what etcd 3.4 answers about a lease from a member
    /// that has just become leader and not yet applied the entries before its term — among them
    /// the revokes of leases that expired while etcd was frozen. Its leases then never expire:
    /// a TTL of `i64::MAX` nanoseconds, in seconds. Read as "the lease lives", it made lease
    /// expiries look like withdrawals, and clients dropped live instances.
    const LEADER_NOT_CAUGHT_UP: i64 = 9_223_372_036;

    #[test]
    fn a_lease_etcd_reports_as_never_expiring_is_not_proven_alive() {
        assert!(!proves_alive(LEADER_NOT_CAUGHT_UP, 3));
        assert!(!proves_alive(LEADER_NOT_CAUGHT_UP, 10));
    }

    #[test]
    fn only_a_ttl_a_live_lease_can_have_proves_it_alive() {
        assert!(proves_alive(2, 3));
        assert!(proves_alive(3, 3));
        // A new leader extends every lease by its election timeout (at most 50 s).
        assert!(proves_alive(4, 3));
        assert!(proves_alive(3 + 50, 3));
        assert!(!proves_alive(0, 3), "expired, not yet revoked");
        assert!(!proves_alive(-1, 3), "no such lease");
    }
}
