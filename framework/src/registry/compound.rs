//! A registry made of several ("sources"): it registers in every one and discovers from all of
//! them, which is how a fleet moves between etcd clusters, prefixes or key layouts without
//! downtime (jupiter's compound registry).
//!
//! The semantics are documented on [`Compound`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MetricsTarget;
use crate::service::EntryKind;
use crate::{Discovery, Error, Instances, InstancesWatch, Registrar, Registry, Result, ServiceInfo};

/// How long one attempt on one source may take unless set otherwise.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between background retries unless set otherwise.
pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A [`Registry`] over several registries ("sources"): it registers in every one and discovers
/// from all of them.
///
/// ```no_run
/// # async fn demo(old: std::sync::Arc<dyn jovian::Registry>, new: std::sync::Arc<dyn jovian::Registry>) -> jovian::Result<()> {
/// use jovian::registry::Compound;
///
/// // the old cluster first: where both have an instance, its entry is the one clients see
/// let registry = Compound::builder().source("old", old).source("new", new).build()?;
/// jovian::App::new().registry(registry) /* .serve(..) */ .run().await
/// # }
/// ```
///
/// # What it promises
///
/// - **Registering** goes to every source at once, each attempt bounded by
///   [`attempt_timeout`](CompoundBuilder::attempt_timeout). It succeeds when at least one source
///   took the entry; the sources that did not (down, frozen, refusing) get it again in the
///   background, with back-off, until they take it, the entry is unregistered, or the compound
///   is closed ([`Compound::pending`] says what is still owed where). So a source that is down
///   when an App starts neither fails the start nor holds it up for longer than one attempt, and
///   the App appears there once the source is back. Once a source has taken an entry, keeping it
///   (renewing the lease, healing after an outage) is that source's own job, as with it alone:
///   the etcd registry restores its keys after any etcd trouble. Only when *no* source takes an
///   entry does `register` fail, with every source's reason (one source: its error as it is),
///   and nothing is retried.
/// - **Unregistering** goes to every source at once and forgets what was still owed; it fails
///   if any source failed (the entry then expires there with its lease), so an App's `stop`
///   reports it, as it would for that source alone.
/// - **Discovery** merges the sources. An instance (`scheme://address`) is live while any
///   source lists it; the same instance in several sources is one instance. Its entry is the one
///   from the first source that lists it, in the order the sources were added (add the source
///   you migrate *from* first, so its entries and overrides stay in force until you flip the
///   order), except availability, which is the strictest: an instance disabled (`enable:
///   false`, an operator's drain) or unhealthy in any source that lists it is disabled in the
///   merge, so a drain written in only one cluster still drains.
/// - A **watch** follows every source. A source that cannot be watched when the watch starts is
///   retried in the background and merged in when it answers; one that goes down keeps its last
///   snapshot (as its own watch does), so the compound keeps publishing the other sources'
///   changes and merges the source back when it returns. A watch fails to start only when no
///   source can be watched, and ends when the compound is closed (or every source is). The
///   price of "live while any source lists it": an instance that leaves while a source is down
///   stays in that source's last snapshot until the source returns; clients eject it once it
///   stops answering.
/// - `list`, `services` and `metrics_targets` ask every source, bounded by the attempt timeout,
///   and merge what answered; they fail only when no source answered.
/// - **Closing** the compound closes every source: it owns them. Dropping it drops them (when it
///   held the last reference, that is a crash for each: their entries expire with their leases).
///
/// Snapshot revisions are the compound's own: a watch counts its changes; a list carries the
/// highest revision of the sources that answered. Neither compares with a source's revision.
pub struct Compound {
    shared: Arc<Shared>,
}

/// Builds a [`Compound`]: its sources, in priority order, and its timings.
pub struct CompoundBuilder {
    sources: Vec<(String, Arc<dyn Registry>)>,
    attempt_timeout: Duration,
    max_retry_delay: Duration,
}

/// A registration a source has not taken yet: it is retried in the background.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The source's name, as given to [`CompoundBuilder::source`].
    pub source: String,
    /// The entry owed to it.
    pub entry: ServiceInfo,
    /// Why the last attempt failed.
    pub error: String,
}

struct Shared {
    sources: Vec<Source>,
    attempt_timeout: Duration,
    max_retry_delay: Duration,
    /// Cancelled on close or drop: ends background retries and every watch.
    stopped: CancellationToken,
    state: Mutex<State>,
}

struct Source {
    name: String,
    registry: Arc<dyn Registry>,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// What this compound registered and has not unregistered, by entry.
    registered: BTreeMap<EntryId, ServiceInfo>,
    /// Per source (by index): the entries it has not taken yet, and the last error.
    owed: BTreeMap<(usize, EntryId), (ServiceInfo, String)>,
    /// Sources whose retry task runs.
    retrying: BTreeSet<usize>,
}

/// Which entry a registration is: a provider and a governor of the same name and address are
/// different entries (they live under different keys).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    governor: bool,
    name: String,
    uri: String,
}

impl EntryId {
    fn of(info: &ServiceInfo) -> Self {
        Self {
            governor: info.kind == EntryKind::Governor,
            name: info.name.clone(),
            uri: info.uri(),
        }
    }
}

impl Compound {
    /// A builder with no source yet.
    pub fn builder() -> CompoundBuilder {
        CompoundBuilder {
            sources: Vec::new(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_retry_delay: DEFAULT_MAX_RETRY_DELAY,
        }
    }

    /// The sources' names, in priority order.
    pub fn sources(&self) -> Vec<&str> {
        self.shared.sources.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every registration some source has not taken yet (it is being retried), sorted by
    /// source order, then service and address. Empty when every source holds everything.
    pub fn pending(&self) -> Vec<Pending> {
        let state = self.shared.lock();
        state
            .owed
            .iter()
            .map(|((index, _), (entry, error))| Pending {
                source: self.shared.sources[*index].name.clone(),
                entry: entry.clone(),
                error: error.clone(),
            })
            .collect()
    }
}

impl CompoundBuilder {
    /// Adds a source, after those already added: where two sources list the same instance,
    /// the entry of the one added first is what clients see.
    pub fn source(mut self, name: impl Into<String>, registry: impl Registry) -> Self {
        self.sources.push((name.into(), Arc::new(registry)));
        self
    }

    /// How long one register, unregister, list, watch or services call on one source may take
    /// before the compound treats that source as down for this call (5 s unless set). Keep it
    /// above the sources' own request timeouts, so that they report their own errors.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The longest pause between background attempts at a source that is down (5 s unless
    /// set); attempts start 100 ms apart and back off, with jitter, to this.
    pub fn max_retry_delay(mut self, delay: Duration) -> Self {
        self.max_retry_delay = delay;
        self
    }

    /// The compound. Fails when it has no source, or two sources share a name.
    pub fn build(self) -> Result<Compound> {
        if self.sources.is_empty() {
            return Err(Error::Config {
                key: "compound sources".into(),
                expected: "at least one registry (CompoundBuilder::source)".into(),
                found: "none".into(),
            });
        }
        let mut names = BTreeSet::new();
        for (name, _) in &self.sources {
            if !names.insert(name.as_str()) {
                return Err(Error::Config {
                    key: "compound sources".into(),
                    expected: "a distinct name for every source".into(),
                    found: format!("`{name}` twice"),
                });
            }
        }
        let sources = self
            .sources
            .into_iter()
            .map(|(name, registry)| Source { name, registry })
            .collect();
        Ok(Compound {
            shared: Arc::new(Shared {
                sources,
                attempt_timeout: self.attempt_timeout,
                max_retry_delay: self.max_retry_delay.max(FIRST_RETRY_DELAY),
                stopped: CancellationToken::new(),
                state: Mutex::new(State::default()),
            }),
        })
    }
}

impl Drop for Compound {
    /// Stops the background work; the sources are dropped with the compound.
    fn drop(&mut self) {
        self.shared.stopped.cancel();
    }
}

impl fmt::Debug for Compound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compound")
            .field("sources", &self.sources())
            .field("pending", &self.pending().len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("compound state lock")
    }

    fn ensure_open(&self) -> Result<()> {
        match self.lock().closed {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }

    /// Runs `call` on every source at once, each bounded by the attempt timeout.
    async fn on_every_source<'a, T, F, Fut>(&'a self, operation: &'static str, call: F) -> Vec<Result<T>>
    where
        F: Fn(&'a Arc<dyn Registry>) -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        join_all(
            self.sources
                .iter()
                .map(|source| attempt(operation, &source.name, self.attempt_timeout, call(&source.registry))),
        )
        .await
    }

    /// The error when no source answered: one source's own error, or every source's reason.
    fn none_answered(&self, operation: &'static str, errors: Vec<(usize, Error)>) -> Error {
        if errors.iter().all(|(_, e)| matches!(e, Error::Closed)) {
            return Error::Closed;
        }
        if errors.len() == 1 {
            return errors.into_iter().next().expect("one error").1;
        }
        let reasons: Vec<String> = errors
            .iter()
            .map(|(index, error)| format!("source `{}`: {error}", self.sources[*index].name))
            .collect();
        Error::registry(
            operation,
            format!(
                "no source of the compound registry answered ({}); bring at least one back",
                reasons.join("; ")
            ),
        )
    }

    /// Per source, what it answered (`None` where it failed); an error when none answered.
    fn answered<T>(&self, operation: &'static str, results: Vec<Result<T>>) -> Result<Vec<Option<T>>> {
        let mut answered = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(value) => answered.push(Some(value)),
                Err(error) => {
                    tracing::debug!(source = %self.sources[index].name, operation, %error, "a source of the compound registry did not answer");
                    answered.push(None);
                    failed.push((index, error));
                }
            }
        }
        match answered.iter().any(Option::is_some) {
            true => Ok(answered),
            false => Err(self.none_answered(operation, failed)),
        }
    }

    /// Owes `info` to `source` and makes sure the source's retry task runs.
    fn owe(self: &Arc<Self>, source: usize, info: &ServiceInfo, error: String) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.owed.insert((source, EntryId::of(info)), (info.clone(), error));
        if state.retrying.insert(source) {
            tokio::spawn(Arc::clone(self).retry(source));
        }
    }

    /// Gives `source` what it is owed, again and again with back-off, until it owes nothing.
    async fn retry(self: Arc<Self>, index: usize) {
        let source = &self.sources[index];
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let jittered = delay.mul_f64(rand::random_range(0.5..1.0));
            tokio::select! {
                () = self.stopped.cancelled() => return,
                () = tokio::time::sleep(jittered) => {}
            }
            delay = (delay * 2).min(self.max_retry_delay);
            let batch: Vec<(EntryId, ServiceInfo)> = {
                let mut state = self.lock();
                let batch: Vec<_> = state
                    .owed
                    .range((index, min_id())..)
                    .take_while(|((i, _), _)| *i == index)
                    .map(|((_, id), (info, _))| (id.clone(), info.clone()))
                    .collect();
                if batch.is_empty() {
                    state.retrying.remove(&index);
                    return;
                }
                batch
            };
            for (id, info) in batch {
                let outcome = attempt(
                    "register",
                    &source.name,
                    self.attempt_timeout,
                    source.registry.register(&info),
                )
                .await;
                let key = (index, id);
                let undo = {
                    let mut state = self.lock();
                    match outcome {
                        Ok(()) => {
                            delay = FIRST_RETRY_DELAY;
                            if state.owed.get(&key).is_some_and(|(owed, _)| *owed == info) {
                                state.owed.remove(&key);
                                tracing::info!(source = %source.name, entry = %info, "registered in a source that was down");
                            }
                            // Unregistered while this attempt was in flight: take it back out.
                            !state.closed && !state.registered.contains_key(&key.1)
                        }
                        Err(Error::Closed) => {
                            // Closed for good: it will never take anything again.
                            state.owed.retain(|(i, _), _| *i != index);
                            state.retrying.remove(&index);
                            tracing::warn!(source = %source.name, "source closed; no longer registering there");
                            return;
                        }
                        Err(error) => {
                            if let Some(owed) = state.owed.get_mut(&key).filter(|(owed, _)| *owed == info) {
                                owed.1 = error.to_string();
                            }
                            false
                        }
                    }
                };
                if undo {
                    let withdrawing = source.registry.unregister(&info);
                    if let Err(error) = attempt("unregister", &source.name, self.attempt_timeout, withdrawing).await {
                        tracing::warn!(source = %source.name, entry = %info, %error, "could not withdraw a registration made after its unregister");
                    }
                }
            }
        }
    }
}

fn min_id() -> EntryId {
    EntryId {
        governor: false,
        name: String::new(),
        uri: String::new(),
    }
}

/// Awaits `call` for at most `timeout`; running out is a timeout naming the source.
async fn attempt<T>(
    operation: &'static str,
    source: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::RegistryTimeout {
            operation,
            after: timeout,
            detail: format!("source `{source}` of the compound registry did not answer"),
        }),
    }
}

#[async_trait]
impl Registrar for Compound {
    async fn register(&self, info: &ServiceInfo) -> Result<()> {
        let shared = &self.shared;
        shared.ensure_open()?;
        info.validate().map_err(|source| Error::InvalidServiceInfo {
            service: info.to_string(),
            source,
        })?;
        let results = shared.on_every_source("register", |r| r.register(info)).await;
        let id = EntryId::of(info);
        let (mut took, mut failed) = (0, Vec::new());
        {
            let mut state = shared.lock();
            if state.closed {
                return Err(Error::Closed);
            }
            for (index, result) in results.into_iter().enumerate() {
                match result {
                    Ok(()) => {
                        took += 1;
                        state.owed.remove(&(index, id.clone()));
                    }
                    Err(error) => failed.push((index, error)),
                }
            }
            if took > 0 {
                state.registered.insert(id, info.clone());
            }
        }
        if took == 0 {
            return Err(shared.none_answered("register", failed));
        }
        for (index, error) in failed {
            if matches!(error, Error::Closed) {
                continue;
            }
            tracing::warn!(
                source = %shared.sources[index].name,
                entry = %info,
                %error,
                "a source of the compound registry did not take the registration; retrying it in the background"
            );
            shared.owe(index, info, error.to_string());
        }
        Ok(())
    }

    async fn unregister(&self, info: &ServiceInfo) -> Result<()> {
        let shared = &self.shared;
        {
            let mut state = shared.lock();
            if state.closed {
                return Err(Error::Closed);
            }
            let id = EntryId::of(info);
            state.registered.remove(&id);
            state.owed.retain(|(_, owed), _| *owed != id);
        }
        let results = shared.on_every_source("unregister", |r| r.unregister(info)).await;
        let failed: Vec<(usize, Error)> = results
            .into_iter()
            .enumerate()
            .filter_map(|(index, result)| result.err().map(|e| (index, e)))
            .filter(|(_, e)| !matches!(e, Error::Closed))
            .collect();
        match failed.is_empty() {
            true => Ok(()),
            false => Err(shared.none_answered("unregister", failed)),
        }
    }

    async fn close(&self) -> Result<()> {
        let shared = &self.shared;
        {
            let mut state = shared.lock();
            if std::mem::replace(&mut state.closed, true) {
                return Ok(());
            }
            state.registered.clear();
            state.owed.clear();
        }
        shared.stopped.cancel();
        let results = join_all(shared.sources.iter().map(|s| s.registry.close())).await;
        let failed: Vec<(usize, Error)> = results
            .into_iter()
            .enumerate()
            .filter_map(|(index, result)| result.err().map(|e| (index, e)))
            .collect();
        match failed.is_empty() {
            true => Ok(()),
            false => Err(shared.none_answered("close", failed)),
        }
    }
}

#[async_trait]
impl Discovery for Compound {
    async fn list(&self, name: &str) -> Result<Instances> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let results = shared.on_every_source("list", |r| r.list(name)).await;
        let snapshots = shared.answered("list", results)?;
        let revision = snapshots.iter().flatten().map(Instances::revision).max().unwrap_or(0);
        let mut merged = Instances::new(name, revision);
        let uris: BTreeSet<String> = snapshots
            .iter()
            .flatten()
            .flat_map(|s| s.iter().map(|i| i.uri()))
            .collect();
        for uri in uris {
            if let Some(info) = merge_entry(&snapshots, &uri) {
                merged.insert(info);
            }
        }
        Ok(merged)
    }

    async fn watch(&self, name: &str) -> Result<InstancesWatch> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let results = shared.on_every_source("watch", |r| r.watch(name)).await;
        let watches = shared.answered("watch", results)?;
        let mut merger = Merger::new(name, shared.sources.len());
        let mut watches = watches;
        for (index, watch) in watches.iter_mut().enumerate() {
            if let Some(watch) = watch {
                merger.apply(index, Some(watch.current()));
            }
        }
        let (publisher, watch) = InstancesWatch::channel(merger.merged.clone());
        let stop = shared.stopped.child_token();
        let (updates, received) = mpsc::channel(shared.sources.len() * 2);
        for (index, started) in watches.into_iter().enumerate() {
            let source = Arc::clone(&shared.sources[index].registry);
            let follow = Follow {
                index,
                source_name: shared.sources[index].name.clone(),
                source,
                service: name.to_owned(),
                updates: updates.clone(),
                stop: stop.clone(),
                attempt_timeout: shared.attempt_timeout,
                max_retry_delay: shared.max_retry_delay,
            };
            tokio::spawn(follow.run(started));
        }
        tokio::spawn(merger.run(publisher, received, stop));
        Ok(watch)
    }

    async fn services(&self) -> Result<Vec<String>> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let results = shared.on_every_source("services", |r| r.services()).await;
        let names = shared.answered("services", results)?;
        let union: BTreeSet<String> = names.into_iter().flatten().flatten().collect();
        Ok(union.into_iter().collect())
    }

    async fn metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        let shared = &self.shared;
        shared.ensure_open()?;
        let results = shared.on_every_source("metrics_targets", |r| r.metrics_targets()).await;
        let found = shared.answered("metrics_targets", results)?;
        // One group per governor address: the first source that lists it wins.
        let mut by_target: BTreeMap<String, MetricsTarget> = BTreeMap::new();
        for target in found.into_iter().flatten().flatten() {
            by_target.entry(target.target.clone()).or_insert(target);
        }
        let mut targets: Vec<MetricsTarget> = by_target.into_values().collect();
        targets.sort_by(|a, b| (&a.app, &a.hostname, &a.target).cmp(&(&b.app, &b.hostname, &b.target)));
        Ok(targets)
    }
}

/// The merged entry of the instance at `uri`: the first source's entry, with availability the
/// strictest of every source that lists it. `None` when no source lists it.
fn merge_entry(snapshots: &[Option<Instances>], uri: &str) -> Option<Arc<ServiceInfo>> {
    let mut entries = snapshots.iter().flatten().filter_map(|s| s.get(uri));
    let first = entries.next()?;
    let (mut enable, mut healthy) = (first.enable, first.healthy);
    for other in entries {
        enable &= other.enable;
        healthy &= other.healthy;
    }
    if enable == first.enable && healthy == first.healthy {
        return Some(Arc::clone(first));
    }
    let mut merged = ServiceInfo::clone(first);
    merged.enable = enable;
    merged.healthy = healthy;
    Some(Arc::new(merged))
}

/// One compound watch's state: each source's latest snapshot and the merge of them all.
struct Merger {
    /// Per source; `None` until it is watched, and after its watch ended.
    snapshots: Vec<Option<Instances>>,
    ended: Vec<bool>,
    merged: Instances,
    changes: i64,
}

impl Merger {
    fn new(service: &str, sources: usize) -> Self {
        Self {
            snapshots: vec![None; sources],
            ended: vec![false; sources],
            merged: Instances::new(service, 0),
            changes: 0,
        }
    }

    /// Takes source `index`'s new snapshot (`None`: it is gone) and re-merges only the
    /// instances that changed in it, so a change costs the same whatever the service's size.
    fn apply(&mut self, index: usize, next: Option<Instances>) {
        let empty = Instances::new(self.merged.service(), 0);
        let touched: Vec<String> = {
            let before = self.snapshots[index].as_ref().unwrap_or(&empty);
            let after = next.as_ref().unwrap_or(&empty);
            after.changes_since(before).map(|change| change.info().uri()).collect()
        };
        self.snapshots[index] = next;
        for uri in touched {
            match merge_entry(&self.snapshots, &uri) {
                Some(info) if self.merged.get(&uri) != Some(&info) => {
                    self.merged.insert(info);
                }
                Some(_) => {}
                None => {
                    self.merged.remove(&uri);
                }
            }
        }
    }

    /// Merges every update until the watch is dropped, the compound stops, or every source's
    /// watch has ended.
    async fn run(
        mut self,
        publisher: crate::InstancesPublisher,
        mut updates: mpsc::Receiver<(usize, Option<Instances>)>,
        stop: CancellationToken,
    ) {
        let _stop_followers = stop.clone().drop_guard();
        loop {
            let update = tokio::select! {
                () = stop.cancelled() => return,
                () = publisher.unwatched() => return,
                update = updates.recv() => update,
            };
            let Some(mut update) = update else { return };
            loop {
                let (index, next) = update;
                if next.is_none() {
                    self.ended[index] = true;
                }
                self.apply(index, next);
                // Apply everything already queued before publishing once.
                match updates.try_recv() {
                    Ok(more) => update = more,
                    Err(_) => break,
                }
            }
            self.changes += 1;
            self.merged.set_revision(self.changes);
            publisher.publish(self.merged.clone());
            if self.ended.iter().all(|ended| *ended) {
                return;
            }
        }
    }
}

/// Follows one source's watch for a compound watch, starting it (with back-off) if it could
/// not be started at first.
struct Follow {
    index: usize,
    source_name: String,
    source: Arc<dyn Registry>,
    service: String,
    updates: mpsc::Sender<(usize, Option<Instances>)>,
    stop: CancellationToken,
    attempt_timeout: Duration,
    max_retry_delay: Duration,
}

impl Follow {
    async fn run(self, started: Option<InstancesWatch>) {
        let mut watch = match started {
            Some(watch) => watch,
            None => match self.start().await {
                Some(mut watch) => {
                    tracing::info!(source = %self.source_name, service = %self.service, "watching a source that was down");
                    if !self.send(Some(watch.current())).await {
                        return;
                    }
                    watch
                }
                None => return,
            },
        };
        loop {
            let changed = tokio::select! {
                () = self.stop.cancelled() => return,
                changed = watch.changed() => changed,
            };
            match changed {
                Ok(snapshot) => {
                    if !self.send(Some(snapshot)).await {
                        return;
                    }
                }
                Err(_) => {
                    // The source was closed: its instances are no longer seen through it.
                    self.send(None).await;
                    return;
                }
            }
        }
    }

    /// Starts the source's watch, retrying with back-off; `None` when stopped, or when the
    /// source is closed for good (which is then reported as the end of its watch).
    async fn start(&self) -> Option<InstancesWatch> {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let jittered = delay.mul_f64(rand::random_range(0.5..1.0));
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(jittered) => {}
            }
            delay = (delay * 2).min(self.max_retry_delay);
            let watching = self.source.watch(&self.service);
            match attempt("watch", &self.source_name, self.attempt_timeout, watching).await {
                Ok(watch) => return Some(watch),
                Err(Error::Closed) => {
                    self.send(None).await;
                    return None;
                }
                Err(error) => {
                    tracing::debug!(source = %self.source_name, service = %self.service, %error, "source still cannot be watched");
                }
            }
        }
    }

    /// Hands a snapshot to the merger; false once the compound watch is gone.
    async fn send(&self, snapshot: Option<Instances>) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            sent = self.updates.send((self.index, snapshot)) => sent.is_ok(),
        }
    }
}
