//! The writer side: one lease per registry, kept alive, and every key kept in place.
//!
//! A background keeper renews the lease every TTL/3 and watches the registry's own keys for
//! deletes. Whatever goes wrong (keep-alive stream ends, a renewal answers TTL 0, no renewal
//! within the TTL, a key deleted by someone else, etcd restarted or wiped) ends in the same
//! repair, retried forever with back-off and jitter: keep the lease if etcd still knows it,
//! else take a new one, and put every key again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions, WatchFilterType, WatchOptions, WatchStream};
use jovian::{Error, Result};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::call::{CallError, once, with_client};
use crate::stats::Stats;

pub(crate) struct Session {
    client: Client,
    ttl: Duration,
    request_timeout: Duration,
    writer: Mutex<Writer>,
    /// Wakes the keeper when the set of keys changed, so it watches the new set.
    keys_changed: Notify,
    stopped: CancellationToken,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Writer {
    lease: Option<i64>,
    /// Every key this registry wrote, with its value: what a repair puts back.
    entries: BTreeMap<String, String>,
    /// The revision from which deletes of our keys are watched, so a rebuilt watch has no gap.
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
            writer: Mutex::new(Writer::default()),
            keys_changed: Notify::new(),
            stopped,
            stats,
        })
    }

    pub(crate) async fn put(self: &Arc<Self>, key: String, value: String) -> Result<()> {
        let mut writer = self.writer.lock().await;
        if writer.closed {
            return Err(Error::Closed);
        }
        let lease = match writer.lease {
            Some(lease) => lease,
            None => self.grant().await.map_err(|e| e.into_error("lease grant"))?,
        };
        writer.lease = Some(lease);
        let revision = match self.put_key(&key, &value, lease).await {
            Ok(revision) => revision,
            Err(lost) if lost.is_lease_not_found() => {
                self.repair(&mut writer).await.map_err(|e| e.into_error("register"))?;
                let lease = writer.lease.expect("repair leaves a lease");
                self.put_key(&key, &value, lease)
                    .await
                    .map_err(|e| e.into_error("register"))?
            }
            Err(error) => return Err(error.into_error("register")),
        };
        if writer.watch_from == 0 {
            writer.watch_from = revision;
        }
        writer.entries.insert(key, value);
        if !writer.keeper_running {
            writer.keeper_running = true;
            tokio::spawn(Arc::clone(self).keep());
        }
        self.keys_changed.notify_one();
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let mut writer = self.writer.lock().await;
        if writer.closed {
            return Err(Error::Closed);
        }
        writer.entries.remove(key);
        with_client(&self.client, self.request_timeout, |mut c| async move {
            c.delete(key, None).await
        })
        .await
        .map_err(|e| e.into_error("unregister"))?;
        Ok(())
    }

    /// Revokes the lease, which deletes every key bound to it, and stops the keeper.
    pub(crate) async fn close(&self) -> Result<()> {
        let mut writer = self.writer.lock().await;
        if writer.closed {
            return Ok(());
        }
        writer.closed = true;
        writer.entries.clear();
        self.stopped.cancel();
        if let Some(lease) = writer.lease.take() {
            match with_client(&self.client, self.request_timeout, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
            {
                Err(error) if !error.is_lease_not_found() => return Err(error.into_error("close")),
                _ => {}
            }
        }
        Ok(())
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
                let mut writer = self.writer.lock().await;
                if writer.closed {
                    return;
                }
                match self.repair(&mut writer).await {
                    Ok(()) => {
                        tracing::info!(keys = writer.entries.len(), "etcd registration restored");
                        backoff.reset();
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "restoring the etcd registration failed; retrying")
                    }
                }
            }
        }
    }

    /// Renews the lease every TTL/3 and puts back keys others delete, until something needs
    /// a repair or the key set changes.
    async fn hold(&self) -> Interrupted {
        let (lease, keys, watch_from) = {
            let writer = self.writer.lock().await;
            if writer.closed {
                return Interrupted::Stopped;
            }
            (
                writer.lease,
                writer.entries.keys().cloned().collect::<Vec<_>>(),
                writer.watch_from,
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
        let mut deletes = match self.watch_deletes(&keys, watch_from).await {
            Ok(stream) => stream,
            Err(error) => return trouble("watching our keys", &error),
        };
        let mut renew = tokio::time::interval(self.ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        renewed_at = Instant::now();
                    }
                    Ok(Some(_)) => return Interrupted::Trouble("the lease expired or was revoked".into()),
                    Ok(None) => return Interrupted::Trouble("the keep-alive stream ended".into()),
                    Err(error) => return trouble("keep-alive stream", &error),
                },
                () = tokio::time::sleep_until(renewed_at + self.ttl) => {
                    return Interrupted::Trouble("no keep-alive was answered within the TTL".into());
                }
                message = next_message(&mut deletes) => match message {
                    Ok(Some(response)) if response.canceled() || response.compact_revision() > 0 => {
                        return Interrupted::Trouble("the watch on our keys was cancelled".into());
                    }
                    Ok(Some(response)) => {
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            if let Err(error) = self.put_back(kv.key(), kv.mod_revision(), lease).await {
                                return trouble("putting back a deleted key", &error);
                            }
                        }
                    }
                    Ok(None) => return Interrupted::Trouble("the watch on our keys ended".into()),
                    Err(error) => return trouble("watch on our keys", &error),
                },
            }
        }
    }

    /// Puts back one of our keys that someone else deleted.
    async fn put_back(&self, key: &[u8], deleted_at: i64, lease: i64) -> Result<(), CallError> {
        let mut writer = self.writer.lock().await;
        writer.watch_from = writer.watch_from.max(deleted_at + 1);
        let Some(value) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| writer.entries.get(k))
            .cloned()
        else {
            return Ok(()); // unregistered by us meanwhile
        };
        let key = String::from_utf8_lossy(key).into_owned();
        self.put_key(&key, &value, lease).await?;
        self.stats.put_back();
        tracing::info!(%key, "put back a registration someone deleted");
        Ok(())
    }

    /// Keeps the lease if etcd still knows it, else takes a new one, and puts every key again.
    async fn repair(&self, writer: &mut Writer) -> Result<(), CallError> {
        let alive = match writer.lease {
            Some(lease) => self.lease_alive(lease).await?,
            None => false,
        };
        if !alive {
            writer.lease = Some(self.grant().await?);
            if !writer.entries.is_empty() {
                self.stats.reregistered();
            }
        }
        let lease = writer.lease.expect("set above");
        let mut first_revision = None;
        for (key, value) in &writer.entries {
            let revision = self.put_key(key, value, lease).await?;
            first_revision.get_or_insert(revision);
        }
        if let Some(revision) = first_revision {
            writer.watch_from = revision;
        }
        Ok(())
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
        Ok(answer.ttl() > 0)
    }

    /// Writes one key bound to `lease`; returns the revision of the write.
    async fn put_key(&self, key: &str, value: &str, lease: i64) -> Result<i64, CallError> {
        let put = |mut c: Client| async move { c.put(key, value, Some(PutOptions::new().with_lease(lease))).await };
        let response = with_client(&self.client, self.request_timeout, put).await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// One watch stream reporting deletes of each of `keys` from revision `from` on.
    async fn watch_deletes(&self, keys: &[String], from: i64) -> Result<Option<WatchStream>, CallError> {
        let Some((first, rest)) = keys.split_first() else {
            return Ok(None);
        };
        let options = || {
            WatchOptions::new()
                .with_start_revision(from)
                .with_filters([WatchFilterType::NoPut])
        };
        let watch = |mut c: Client| async move { c.watch(first.as_str(), Some(options())).await };
        let mut stream = with_client(&self.client, self.request_timeout, watch).await?;
        for key in rest {
            once(self.request_timeout, stream.watch(key.as_str(), Some(options()))).await?;
        }
        Ok(Some(stream))
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
