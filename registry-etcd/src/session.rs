//! The writer side: one lease per registry, kept alive, and every key kept in place.
//!
//! A background keeper renews the lease every TTL/3 and watches the registry's own keys.
//! Whatever goes wrong (keep-alive stream ends, a renewal answers TTL 0, no renewal within the
//! TTL, etcd restarted or wiped) ends in the same repair, retried forever with back-off and
//! jitter: keep the lease if etcd still knows it, else take a new one, and put every key again.
//! A key someone else deleted or overwrote is put back as it was, on our lease.
//!
//! Keys are repaired one by one: a key etcd refuses (a permission revoked, say) is reported and
//! retried on its own while the lease and every other key are kept alive.
//!
//! No lock is held across a request to etcd, so unregistering and closing never queue behind a
//! repair that waits on an unreachable etcd: each is one request, bounded by the request
//! timeout, and closing skips revoking a lease etcd cannot be reached to revoke (it expires on
//! its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions, WatchStream};
use jovian::{Error, Result};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::call::{CallError, once, with_client};
use crate::stats::Stats;

pub(crate) struct Session {
    client: Client,
    ttl: Duration,
    request_timeout: Duration,
    state: Mutex<State>,
    /// Serialises lease grants, so that concurrent registrations share one new lease.
    granting: tokio::sync::Mutex<()>,
    /// Wakes the keeper when the set of keys changed, so it watches the new set.
    keys_changed: Notify,
    /// Set while etcd is known to be unreachable, so that closing does not wait on it again.
    unreachable: AtomicBool,
    stopped: CancellationToken,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct State {
    lease: Option<i64>,
    /// Every key this registry wrote, with its value: what a repair puts back.
    entries: BTreeMap<String, String>,
    /// Keys the last repair could not write; retried while the lease is kept alive.
    unwritten: BTreeSet<String>,
    /// The revision from which changes to our keys are watched, so a rebuilt watch has no gap.
    watch_from: i64,
    keeper_running: bool,
    closed: bool,
}

/// Why the keeper stopped holding the lease.
enum Interrupted {
    Stopped,
    KeysChanged,
    Trouble(String),
}

/// Repairs are retried at least this often, so keys return soon after etcd does.
const MAX_REPAIR_DELAY: Duration = Duration::from_secs(1);
/// How often keys etcd refused are tried again while the lease is held.
const UNWRITTEN_RETRY: Duration = Duration::from_secs(2);

impl Session {
    pub(crate) fn new(
        client: Client,
        ttl: Duration,
        request_timeout: Duration,
        stopped: CancellationToken,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            ttl,
            request_timeout,
            state: Mutex::new(State::default()),
            granting: tokio::sync::Mutex::new(()),
            keys_changed: Notify::new(),
            unreachable: AtomicBool::new(false),
            stopped,
            stats,
        })
    }

    /// Writes `key` on the lease (taking one if there is none yet) and keeps it there.
    pub(crate) async fn put(self: &Arc<Self>, key: String, value: String) -> Result<()> {
        self.ensure_open()?;
        let lease = self.lease().await.map_err(|e| self.failed(e, "lease grant"))?;
        let revision = match self.put_key(&key, &value, lease).await {
            Ok(revision) => revision,
            Err(lost) if lost.is_lease_not_found() => {
                // The lease is gone (expired, revoked, etcd wiped): a new one, every other key
                // back on it, then this one.
                self.repair().await.map_err(|e| self.failed(e, "register"))?;
                let lease = self.lease().await.map_err(|e| self.failed(e, "register"))?;
                self.put_key(&key, &value, lease)
                    .await
                    .map_err(|e| self.failed(e, "register"))?
            }
            Err(error) => return Err(self.failed(error, "register")),
        };
        let start_keeper = {
            let mut state = self.state.lock().expect("session state lock");
            if state.closed {
                return Err(Error::Closed);
            }
            if state.watch_from == 0 {
                state.watch_from = revision;
            }
            state.entries.insert(key, value);
            !std::mem::replace(&mut state.keeper_running, true)
        };
        if start_keeper {
            tokio::spawn(Arc::clone(self).keep());
        }
        self.keys_changed.notify_one();
        Ok(())
    }

    /// Forgets `key` and deletes it: one request, bounded by the request timeout.
    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        {
            let mut state = self.state.lock().expect("session state lock");
            if state.closed {
                return Err(Error::Closed);
            }
            state.entries.remove(key);
            state.unwritten.remove(key);
        }
        self.keys_changed.notify_one();
        with_client(&self.client, self.request_timeout, |mut c| async move {
            c.delete(key, None).await
        })
        .await
        .map_err(|e| self.failed(e, "unregister"))?;
        Ok(())
    }

    /// Revokes the lease, which deletes every key bound to it, and stops the keeper. When etcd
    /// is known to be unreachable it only stops: the lease then expires on its own.
    pub(crate) async fn close(&self) -> Result<()> {
        let lease = {
            let mut state = self.state.lock().expect("session state lock");
            if state.closed {
                return Ok(());
            }
            state.closed = true;
            state.entries.clear();
            state.lease.take()
        };
        self.stopped.cancel();
        let Some(lease) = lease else { return Ok(()) };
        if self.unreachable.load(Ordering::Relaxed) {
            tracing::warn!(
                lease,
                "etcd is unreachable; not waiting to revoke the lease, which expires within its TTL"
            );
            return Ok(());
        }
        match with_client(&self.client, self.request_timeout, |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await
        {
            Err(error) if !error.is_lease_not_found() => Err(error.into_error("close")),
            _ => Ok(()),
        }
    }

    /// Holds the lease until stopped, repairing after every interruption.
    async fn keep(self: Arc<Self>) {
        let mut backoff = Backoff::new(MAX_REPAIR_DELAY);
        loop {
            let reason = match self.hold().await {
                Interrupted::Stopped => return,
                Interrupted::KeysChanged => continue,
                Interrupted::Trouble(reason) => reason,
            };
            tracing::warn!(%reason, "etcd registration interrupted; restoring the lease and every key");
            loop {
                tokio::select! {
                    () = self.stopped.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.repair().await {
                    Ok(()) => {
                        self.unreachable.store(false, Ordering::Relaxed);
                        tracing::info!("etcd registration restored");
                        backoff.reset();
                        break;
                    }
                    Err(error) => {
                        if error.is_unreachable() {
                            self.unreachable.store(true, Ordering::Relaxed);
                        }
                        tracing::debug!(%error, "restoring the etcd registration failed; retrying")
                    }
                }
            }
        }
    }

    /// Renews the lease every TTL/3, puts back keys others delete or overwrite, and retries
    /// keys etcd refused, until something needs a repair or the key set changes.
    async fn hold(&self) -> Interrupted {
        let (lease, keys, watch_from) = {
            let state = self.state.lock().expect("session state lock");
            if state.closed {
                return Interrupted::Stopped;
            }
            (
                state.lease,
                state.entries.keys().cloned().collect::<Vec<_>>(),
                state.watch_from,
            )
        };
        let Some(lease) = lease else {
            tokio::select! {
                () = self.stopped.cancelled() => return Interrupted::Stopped,
                () = self.keys_changed.notified() => return Interrupted::KeysChanged,
            }
        };
        let trouble = |what: &str, error: &dyn std::fmt::Display| Interrupted::Trouble(format!("{what}: {error}"));
        let keep_alive = |mut c: Client| async move { c.lease_keep_alive(lease).await };
        let (mut keeper, mut acks) = match with_client(&self.client, self.request_timeout, keep_alive).await {
            Ok(pair) => pair,
            Err(error) => return trouble("opening the keep-alive stream", &error),
        };
        let mut changes = match self.watch_keys(&keys, watch_from).await {
            Ok(stream) => stream,
            Err(error) => return trouble("watching our keys", &error),
        };
        let mut renew = tokio::time::interval(self.ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_unwritten = tokio::time::interval(UNWRITTEN_RETRY);
        retry_unwritten.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed_at = Instant::now();
        loop {
            tokio::select! {
                () = self.stopped.cancelled() => return Interrupted::Stopped,
                () = self.keys_changed.notified() => return Interrupted::KeysChanged,
                _ = renew.tick() => {
                    if let Err(error) = keeper.keep_alive().await {
                        return trouble("sending a keep-alive", &error);
                    }
                }
                ack = acks.message() => match ack {
                    Ok(Some(ack)) if ack.ttl() > 0 => {
                        self.stats.lease_renewed();
                        self.unreachable.store(false, Ordering::Relaxed);
                        renewed_at = Instant::now();
                    }
                    Ok(Some(_)) => return Interrupted::Trouble("the lease expired or was revoked".into()),
                    Ok(None) => return Interrupted::Trouble("the keep-alive stream ended".into()),
                    Err(error) => return trouble("keep-alive stream", &error),
                },
                () = tokio::time::sleep_until(renewed_at + self.ttl) => {
                    self.unreachable.store(true, Ordering::Relaxed);
                    return Interrupted::Trouble("no keep-alive was answered within the TTL".into());
                }
                _ = retry_unwritten.tick() => {
                    if let Err(error) = self.write_unwritten(lease).await {
                        return trouble("writing a key etcd refused before", &error);
                    }
                }
                message = next_message(&mut changes) => match message {
                    Ok(Some(response)) if response.canceled() || response.compact_revision() > 0 => {
                        return Interrupted::Trouble("the watch on our keys was cancelled".into());
                    }
                    Ok(Some(response)) => {
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            self.note_seen(kv.mod_revision());
                            let ours = event.event_type() == EventType::Put
                                && kv.lease() == lease
                                && self.holds(kv.key(), kv.value());
                            if ours {
                                continue;
                            }
                            match self.put_back(kv.key(), lease).await {
                                Ok(()) => {}
                                Err(error) if error.is_unreachable() || error.is_lease_not_found() => {
                                    return trouble("putting back a changed key", &error);
                                }
                                Err(error) => self.refused(&String::from_utf8_lossy(kv.key()), &error),
                            }
                        }
                    }
                    Ok(None) => return Interrupted::Trouble("the watch on our keys ended".into()),
                    Err(error) => return trouble("watch on our keys", &error),
                },
            }
        }
    }

    /// Puts back one of our keys that someone else deleted or overwrote.
    async fn put_back(&self, key: &[u8], lease: i64) -> Result<(), CallError> {
        let Ok(key) = std::str::from_utf8(key) else {
            return Ok(());
        };
        if self.restore(key, lease).await?.is_some() {
            self.stats.put_back();
            tracing::info!(%key, "put back a registration someone deleted or overwrote");
        }
        Ok(())
    }

    /// Keeps the lease if etcd still knows it, else takes a new one, and puts every key again,
    /// one by one. A key etcd refuses is reported and left for [`Self::write_unwritten`]; only
    /// trouble with etcd itself fails the repair.
    async fn repair(&self) -> Result<(), CallError> {
        let current = self.state.lock().expect("session state lock").lease;
        let alive = match current {
            Some(lease) => self.lease_alive(lease).await?,
            None => false,
        };
        let lease = match current {
            Some(lease) if alive => lease,
            _ => self.replace_lease(current).await?,
        };
        let keys: Vec<String> = self
            .state
            .lock()
            .expect("session state lock")
            .entries
            .keys()
            .cloned()
            .collect();
        let mut first_write = None;
        for key in keys {
            match self.restore(&key, lease).await {
                Ok(revision) => {
                    self.state.lock().expect("session state lock").unwritten.remove(&key);
                    first_write = first_write.or(revision);
                }
                Err(error) if error.is_unreachable() || error.is_lease_not_found() => return Err(error),
                Err(error) => self.refused(&key, &error),
            }
        }
        if let Some(revision) = first_write {
            // Changes to our keys since the repair began are watched; earlier ones are repaired.
            self.state.lock().expect("session state lock").watch_from = revision;
        }
        Ok(())
    }

    /// Tries again the keys etcd refused; fails only on trouble with etcd itself.
    async fn write_unwritten(&self, lease: i64) -> Result<(), CallError> {
        let keys: Vec<String> = {
            let state = self.state.lock().expect("session state lock");
            state.unwritten.iter().cloned().collect()
        };
        for key in keys {
            match self.restore(&key, lease).await {
                Ok(_) => {
                    self.state.lock().expect("session state lock").unwritten.remove(&key);
                    tracing::info!(%key, "a registration etcd refused before is written");
                }
                Err(error) if error.is_unreachable() || error.is_lease_not_found() => return Err(error),
                Err(error) => self.refused(&key, &error),
            }
        }
        Ok(())
    }

    /// Writes our value of `key` on `lease`, returning the write's revision; `None` if the key
    /// is no longer ours. Should `key` be unregistered while the write was under way, it is
    /// deleted again, so a repair can never bring back a key its owner removed.
    async fn restore(&self, key: &str, lease: i64) -> Result<Option<i64>, CallError> {
        let Some(value) = self.value_of(key) else {
            return Ok(None);
        };
        let revision = self.put_key(key, &value, lease).await?;
        if self.value_of(key).is_none() {
            with_client(&self.client, self.request_timeout, |mut c| async move {
                c.delete(key, None).await
            })
            .await?;
            return Ok(None);
        }
        Ok(Some(revision))
    }

    fn refused(&self, key: &str, error: &CallError) {
        let first = self
            .state
            .lock()
            .expect("session state lock")
            .unwritten
            .insert(key.to_owned());
        self.stats.key_refused();
        if first {
            tracing::error!(%key, %error, "etcd refused a registration; the others are kept alive and it is retried");
        }
    }

    fn value_of(&self, key: &str) -> Option<String> {
        self.state.lock().expect("session state lock").entries.get(key).cloned()
    }

    /// Whether `value` is what we hold for `key`.
    fn holds(&self, key: &[u8], value: &[u8]) -> bool {
        let state = self.state.lock().expect("session state lock");
        std::str::from_utf8(key)
            .ok()
            .and_then(|k| state.entries.get(k))
            .is_some_and(|ours| ours.as_bytes() == value)
    }

    /// Watches of our keys resume after `revision`.
    fn note_seen(&self, revision: i64) {
        let mut state = self.state.lock().expect("session state lock");
        state.watch_from = state.watch_from.max(revision + 1);
    }

    /// The current lease, granting the first one.
    async fn lease(&self) -> Result<i64, CallError> {
        if let Some(lease) = self.state.lock().expect("session state lock").lease {
            return Ok(lease);
        }
        let _granting = self.granting.lock().await;
        if let Some(lease) = self.state.lock().expect("session state lock").lease {
            return Ok(lease);
        }
        let lease = self.grant().await?;
        self.state.lock().expect("session state lock").lease = Some(lease);
        Ok(lease)
    }

    /// A new lease in place of `lost`, unless another task already replaced it.
    async fn replace_lease(&self, lost: Option<i64>) -> Result<i64, CallError> {
        let _granting = self.granting.lock().await;
        if let Some(lease) = self.state.lock().expect("session state lock").lease
            && Some(lease) != lost
        {
            return Ok(lease);
        }
        let lease = self.grant().await?;
        let mut state = self.state.lock().expect("session state lock");
        state.lease = Some(lease);
        if !state.entries.is_empty() {
            self.stats.reregistered();
        }
        drop(state);
        self.keys_changed.notify_one();
        Ok(lease)
    }

    async fn grant(&self) -> Result<i64, CallError> {
        let ttl = self.ttl.as_secs() as i64;
        let granted = with_client(&self.client, self.request_timeout, |mut c| async move {
            c.lease_grant(ttl, None).await
        })
        .await?;
        tracing::debug!(lease = granted.id(), ttl, "lease granted");
        Ok(granted.id())
    }

    async fn lease_alive(&self, lease: i64) -> Result<bool, CallError> {
        let time_to_live = |mut c: Client| async move { c.lease_time_to_live(lease, None).await };
        let answer = with_client(&self.client, self.request_timeout, time_to_live).await?;
        // The same etcd bug that can make a lost lease look alive to a watcher (see
        // `proves_alive`) would leave our keys on a dead lease here: only a TTL a live lease
        // can have keeps it; anything else takes a new lease and puts every key back.
        Ok(crate::watch::proves_alive(answer.ttl(), answer.granted_ttl()))
    }

    /// Writes one key bound to `lease`; returns the revision of the write.
    async fn put_key(&self, key: &str, value: &str, lease: i64) -> Result<i64, CallError> {
        let put = |mut c: Client| async move { c.put(key, value, Some(PutOptions::new().with_lease(lease))).await };
        let response = with_client(&self.client, self.request_timeout, put).await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// One watch stream reporting every change to each of `keys` from revision `from` on.
    async fn watch_keys(&self, keys: &[String], from: i64) -> Result<Option<WatchStream>, CallError> {
        let Some((first, rest)) = keys.split_first() else {
            return Ok(None);
        };
        let options = || WatchOptions::new().with_start_revision(from);
        let watch = |mut c: Client| async move { c.watch(first.as_str(), Some(options())).await };
        let mut stream = with_client(&self.client, self.request_timeout, watch).await?;
        for key in rest {
            once(self.request_timeout, stream.watch(key.as_str(), Some(options()))).await?;
        }
        Ok(Some(stream))
    }

    fn ensure_open(&self) -> Result<()> {
        match self.state.lock().expect("session state lock").closed {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }

    /// The error a caller of `operation` sees, noting an unreachable etcd on the way.
    fn failed(&self, error: CallError, operation: &'static str) -> Error {
        if error.is_unreachable() {
            self.unreachable.store(true, Ordering::Relaxed);
        }
        error.into_error(operation)
    }
}

/// The next message of an optional stream; never completes without one.
async fn next_message(
    stream: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}
