//! What operators' tools (`jovianctl`) read: an instance's entry as stored with its override
//! and owning lease, and the governors' metrics targets (also what
//! [`Discovery::metrics_targets`](jovian::Discovery::metrics_targets) answers); and the one thing they write, an
//! override merged into the one already there.
//!
//! These read etcd directly at the moment they are called (no watch, no grace): they show what
//! etcd holds, where [`Discovery`](jovian::Discovery) shows what clients see.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp};
use jovian::service::EntryKind;
use jovian::{Error, MetricsTarget, Result, ServiceInfo};
use serde_json::{Map, Value};

use crate::EtcdRegistry;
use crate::call::{CallError, with_client};
use crate::keys::{KeyKind, Keys, METRICS_ROOT};
use crate::watch::{merge, parse_override};

/// One instance's keys as etcd holds them: the provider entry, the operator's override, the
/// entry clients merge from both, and the lease the entry lives on.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryRecord {
    /// `scheme://address`: the instance within its service.
    pub uri: String,
    /// The provider key (`/{prefix}/{name}/providers/{uri}` in the jupiter layout).
    pub provider_key: String,
    /// The override key, `/{prefix}/{name}/configurators/{uri}` (whether or not it exists);
    /// empty under a layout without overrides.
    pub override_key: String,
    /// The provider entry as its owner wrote it; `None` when only an override exists (the
    /// instance is gone or not yet registered) or the value does not decode.
    pub provider: Option<ServiceInfo>,
    /// The override's value as written, when there is one.
    pub override_raw: Option<String>,
    /// The override's fields as watchers merge them (identity fields dropped); `None` when
    /// there is none or watchers skip it (the reason is in [`override_error`](Self::override_error)).
    pub override_fields: Option<Map<String, Value>>,
    /// Why watchers skip the override, if they do.
    pub override_error: Option<String>,
    /// The provider entry with the override laid over it: what clients see.
    pub merged: Option<ServiceInfo>,
    /// The lease the provider entry is bound to.
    pub lease: Option<LeaseInfo>,
}

/// A lease as etcd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// Time left before it expires unless renewed; `None` when etcd no longer knows it.
    pub ttl_left: Option<Duration>,
    /// The TTL it was granted with.
    pub granted: Duration,
}

/// One instance's keys as read: the provider entry with its lease id, the override's value,
/// and the provider's key when it names an id rather than the address (kratos, go-zero).
type Found = (Option<(ServiceInfo, i64)>, Option<String>, Option<String>);

/// Attempts at a read-modify-write of an override before giving up on contention.
const OVERRIDE_ATTEMPTS: usize = 16;

impl EtcdRegistry {
    /// Every instance key of service `name` (providers and overrides), sorted by `uri`, with
    /// each provider's lease looked up (one request per distinct lease).
    pub async fn entries(&self, name: &str) -> Result<Vec<EntryRecord>> {
        self.ensure_open()?;
        let prefix = self.keys.service(name);
        let (kvs, _) = self
            .get_prefix(&prefix, 0)
            .await
            .map_err(|e| Error::registry("read entries", format!("{prefix}: {e}")))?;
        let mut records: BTreeMap<String, Found> = BTreeMap::new();
        for kv in &kvs {
            match self.keys.classify(&prefix, kv.key()) {
                Ok(KeyKind::Provider(uri)) => {
                    let info = self.keys.decode(name, Some(&uri), kv.value()).ok();
                    records.entry(uri.into_owned()).or_default().0 = info.map(|info| (info, kv.lease()));
                }
                Ok(KeyKind::Instance(_)) => {
                    // A value that does not decode names no instance: nothing to show it under.
                    if let Ok(info) = self.keys.decode(name, None, kv.value()) {
                        let record = records.entry(info.uri()).or_default();
                        record.2 = Some(String::from_utf8_lossy(kv.key()).into_owned());
                        record.0 = Some((info, kv.lease()));
                    }
                }
                Ok(KeyKind::Configurator(uri)) => {
                    let raw = String::from_utf8_lossy(kv.value()).into_owned();
                    records.entry(uri.to_owned()).or_default().1 = Some(raw);
                }
                _ => {}
            }
        }
        let lease_ids: HashSet<i64> = records
            .values()
            .filter_map(|(provider, _, _)| provider.as_ref().map(|(_, lease)| *lease))
            .filter(|lease| *lease != 0)
            .collect();
        let mut leases = HashMap::new();
        for id in lease_ids {
            leases.insert(id, self.lease_info(id).await?);
        }
        Ok(records
            .into_iter()
            .map(|(uri, (provider, override_raw, key))| {
                let parsed = override_raw.as_ref().map(|raw| parse_override(raw.as_bytes()));
                let override_fields = parsed.clone().and_then(Result::ok);
                let override_error = parsed.and_then(Result::err);
                let lease = provider.as_ref().and_then(|(_, id)| leases.get(id).copied());
                let provider = provider.map(|(info, _)| info);
                let merged = provider.as_ref().map(|info| match &override_fields {
                    Some(fields) => merge(info, fields),
                    None => info.clone(),
                });
                EntryRecord {
                    provider_key: key.unwrap_or_else(|| self.keys.provider_key(name, &uri)),
                    override_key: self.keys.configurator(name, &uri).unwrap_or_default(),
                    uri,
                    provider,
                    override_raw,
                    override_fields,
                    override_error,
                    merged,
                    lease,
                }
            })
            .collect())
    }

    /// The keys of one instance of `name` at `uri` (`scheme://address`); `None` when it has
    /// neither a provider entry nor an override.
    pub async fn entry(&self, name: &str, uri: &str) -> Result<Option<EntryRecord>> {
        Ok(self.entries(name).await?.into_iter().find(|record| record.uri == uri))
    }

    /// What etcd says about lease `id`.
    pub async fn lease_info(&self, id: i64) -> Result<LeaseInfo> {
        let ask = |mut c: Client| async move { c.lease_time_to_live(id, None).await };
        let answer = with_client(&self.watcher.client, self.config.request_timeout, ask)
            .await
            .map_err(|e| e.into_error("read a lease"))?;
        Ok(LeaseInfo {
            id,
            ttl_left: u64::try_from(answer.ttl()).ok().map(Duration::from_secs),
            granted: Duration::from_secs(u64::try_from(answer.granted_ttl()).unwrap_or(0)),
        })
    }

    /// Lays `patch` over the override of `name`'s instance at `uri` (creating it if there is
    /// none) and returns the override as written. Fields not in `patch` are kept. The write is
    /// a compare-and-swap on the key's revision, retried if someone else wrote meanwhile, so
    /// concurrent operators never lose each other's fields. Fails without writing when the
    /// existing value is not a JSON object, or when the result would be skipped by watchers.
    pub async fn update_override(
        &self,
        name: &str,
        uri: &str,
        patch: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        self.ensure_open()?;
        let Some(key) = self.keys.configurator(name, uri) else {
            return Err(Error::registry(
                "write an override",
                format!(
                    "the {} layout has no governance overrides; only registry.layout = \"jupiter\" does",
                    self.config.layout.name()
                ),
            ));
        };
        let failed = |e: CallError| match e.is_permission_denied() {
            // Said plainly, with the key: operators often run read-only credentials.
            true => Error::PermissionDenied {
                operation: "write an override",
                detail: format!("permission denied writing {key} ({e})"),
            },
            false => Error::registry("write an override", format!("{key}: {e}")),
        };
        for _ in 0..OVERRIDE_ATTEMPTS {
            let get = |mut c: Client| {
                let key = key.clone();
                async move { c.get(key, None).await }
            };
            let found = with_client(&self.watcher.client, self.config.request_timeout, get)
                .await
                .map_err(failed)?;
            let existing = found.kvs().first();
            let mut fields = match existing {
                None => Map::new(),
                Some(kv) => match serde_json::from_slice::<Value>(kv.value()) {
                    Ok(Value::Object(fields)) => fields,
                    _ => {
                        return Err(Error::registry(
                            "write an override",
                            format!(
                                "{key} holds {:?}, not a JSON object; fix it or delete it (etcdctl del '{key}') first",
                                String::from_utf8_lossy(kv.value())
                            ),
                        ));
                    }
                },
            };
            fields.extend(patch.clone());
            let value = serde_json::to_string(&fields).expect("a JSON object serializes");
            parse_override(value.as_bytes())
                .map_err(|reason| Error::registry("write an override", format!("{key}: {reason}")))?;
            let compare = match existing {
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some(kv) => Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
            };
            let txn = |mut c: Client| {
                let txn = Txn::new()
                    .when([compare.clone()])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                async move { c.txn(txn).await }
            };
            let written = with_client(&self.watcher.client, self.config.request_timeout, txn)
                .await
                .map_err(failed)?;
            if written.succeeded() {
                return Ok(fields);
            }
        }
        Err(Error::registry(
            "write an override",
            format!("{key} kept changing under {OVERRIDE_ATTEMPTS} attempts; try again"),
        ))
    }

    /// Every governor's metrics target (`/prometheus/job/...`), sorted by app, hostname and
    /// target, each with the provider entries of its App (same lease, same app id) for labels.
    /// Reads the targets and every provider under the prefix at one revision. What
    /// [`Discovery::metrics_targets`](jovian::Discovery::metrics_targets) answers.
    pub(crate) async fn read_metrics_targets(&self) -> Result<Vec<MetricsTarget>> {
        self.ensure_open()?;
        let (targets, revision) = self
            .get_prefix(METRICS_ROOT, 0)
            .await
            .map_err(|e| Error::registry("read metrics targets", format!("{METRICS_ROOT}: {e}")))?;
        let root = self.keys.root();
        let (all, _) = self
            .get_prefix(&root, revision)
            .await
            .map_err(|e| Error::registry("read metrics targets", format!("{root}: {e}")))?;
        let mut by_lease: HashMap<i64, Vec<ServiceInfo>> = HashMap::new();
        for kv in &all {
            let Some(name) = self.keys.provider_service(kv.key()).filter(|_| kv.lease() != 0) else {
                continue;
            };
            let uri = match self.keys.classify(&self.keys.service(name), kv.key()) {
                Ok(KeyKind::Provider(uri)) => Some(uri),
                Ok(KeyKind::Instance(_)) => None,
                _ => continue,
            };
            if let Ok(info) = self.keys.decode(name, uri.as_deref(), kv.value())
                && info.kind == EntryKind::Provider
            {
                by_lease.entry(kv.lease()).or_default().push(info);
            }
        }
        let mut found: Vec<MetricsTarget> = targets
            .iter()
            .filter_map(|kv| {
                let (app, hostname, address) = Keys::metrics_target(kv.key())?;
                let value = String::from_utf8_lossy(kv.value()).trim().to_owned();
                let mut instances: Vec<ServiceInfo> = by_lease
                    .get(&kv.lease())
                    .into_iter()
                    .flatten()
                    .filter(|info| info.app_id == app || info.app_id.is_empty())
                    .cloned()
                    .collect();
                instances.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
                let target = if value.is_empty() { address.to_owned() } else { value };
                Some(MetricsTarget::new(app, hostname, target).with_instances(instances))
            })
            .collect();
        found.sort_by(|a, b| (&a.app, &a.hostname, &a.target).cmp(&(&b.app, &b.hostname, &b.target)));
        Ok(found)
    }

    /// Every key under `prefix` at `revision` (0: the latest), and the revision read.
    async fn get_prefix(&self, prefix: &str, revision: i64) -> Result<(Vec<KeyValue>, i64), CallError> {
        let max = self.config.max_message_bytes;
        let (from, end) = (Keys::range_start(prefix), Keys::prefix_end(prefix));
        let get = |c: Client| {
            let options = GetOptions::new().with_range(end.clone()).with_revision(revision);
            let from = from.clone();
            async move {
                c.kv_client()
                    .max_decoding_message_size(max)
                    .get(from, Some(options))
                    .await
            }
        };
        let mut listed = with_client(&self.watcher.client, self.config.request_timeout, get).await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        Ok((listed.take_kvs(), revision))
    }
}
