//! The subcommands.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jovian::{Change, Discovery, ServiceInfo};
use jovian_registry_etcd::{EntryRecord, EtcdRegistry, LeaseInfo};
use serde_json::{Map, Value, json};

use crate::format::{or_dash, short_uri, started, table};
use crate::{CliError, Command, Target, parse_address, rfc3339};

pub(crate) async fn run(shared: Arc<EtcdRegistry>, command: Command) -> Result<(), CliError> {
    let registry = shared.as_ref();
    match command {
        Command::Services { json } => services(registry, json).await,
        Command::List { name, json } => list(registry, &name, json).await,
        Command::Watch { name, count, duration } => watch(registry, &name, count, duration).await,
        Command::Describe { name, address, json } => describe(registry, &name, &address, json).await,
        Command::Disable(target) => govern(registry, &target, json!({"enable": false})).await,
        Command::Enable(target) => govern(registry, &target, json!({"enable": true})).await,
        Command::Weight { target, weight } => govern(registry, &target, json!({"weight": weight})).await,
        Command::Drain { target, wait } => drain(registry, &target, wait).await,
        Command::Sd { listen } => crate::sd::serve(shared.clone(), listen).await,
    }
}

async fn services(registry: &EtcdRegistry, json: bool) -> Result<(), CliError> {
    let names = registry.services().await?;
    if json {
        println!("{}", Value::from(names));
    } else if names.is_empty() {
        eprintln!("no service is registered under /{}/", prefix(registry));
    } else {
        for name in names {
            println!("{name}");
        }
    }
    Ok(())
}

async fn list(registry: &EtcdRegistry, name: &str, json: bool) -> Result<(), CliError> {
    let records = registry_entries(registry, name).await?;
    let instances: Vec<&EntryRecord> = records.iter().filter(|r| r.merged.is_some()).collect();
    if json {
        let array: Vec<Value> = instances.iter().map(|r| instance_json(r)).collect();
        println!("{}", serde_json::to_string_pretty(&array).expect("JSON serializes"));
    } else {
        let header = [
            "ADDRESS",
            "ZONE/REGION",
            "GROUP",
            "VERSION",
            "WEIGHT",
            "ENABLE",
            "HEALTHY",
            "STARTED",
            "LEASE TTL",
            "OVERRIDES",
        ];
        let rows: Vec<Vec<String>> = instances
            .iter()
            .map(|record| {
                let info = record.merged.as_ref().expect("filtered on merged");
                vec![
                    short_uri(info),
                    zone_region(info),
                    or_dash(&info.group),
                    or_dash(&info.version),
                    info.weight.to_string(),
                    info.enable.to_string(),
                    info.healthy.to_string(),
                    started(info).unwrap_or_else(|| "-".into()),
                    lease_left(record.lease.as_ref()),
                    overrides_text(record),
                ]
            })
            .collect();
        print!("{}", table(&header, &rows));
    }
    let orphans: Vec<&str> = records
        .iter()
        .filter(|r| r.merged.is_none())
        .map(|r| r.uri.as_str())
        .collect();
    if !orphans.is_empty() {
        eprintln!(
            "overrides of instances not registered now (kept for when they come back): {}",
            orphans.join(", ")
        );
    }
    Ok(())
}

async fn watch(
    registry: &EtcdRegistry,
    name: &str,
    count: Option<usize>,
    duration: Option<Duration>,
) -> Result<(), CliError> {
    let mut watch = registry.watch(name).await?;
    let mut seen = watch.current();
    println!(
        "{} watching {name}: {} instances at revision {}",
        now(),
        seen.len(),
        seen.revision()
    );
    let mut current: Vec<_> = seen.iter().cloned().collect();
    current.sort_by_key(|info| info.uri());
    for info in current {
        println!("{} present {} {}", now(), info.uri(), summary(&info));
    }
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let until = async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let mut changes = 0;
    while count.is_none_or(|count| changes < count) {
        let next = tokio::select! {
            next = watch.changed() => next.map_err(|_| CliError("the registry watch ended".into()))?,
            _ = tokio::signal::ctrl_c() => break,
            () = &mut until => break,
        };
        let mut lines: Vec<(String, String)> = next
            .changes_since(&seen)
            .map(|change| (change.info().uri(), change_line(&change)))
            .collect();
        lines.sort();
        for (_, line) in lines {
            println!("{} {line}", now());
            changes += 1;
            if count.is_some_and(|count| changes >= count) {
                break;
            }
        }
        seen = next;
    }
    Ok(())
}

async fn describe(registry: &EtcdRegistry, name: &str, address: &str, json: bool) -> Result<(), CliError> {
    let uri = parse_address(address).map_err(CliError)?;
    let record = find(registry, name, &uri).await?;
    if json {
        let value = json!({
            "service": name,
            "uri": record.uri,
            "provider_key": record.provider_key,
            "override_key": record.override_key,
            "entry": record.provider,
            "override": record.override_raw.as_ref().map(|raw| serde_json::from_str::<Value>(raw).unwrap_or(Value::String(raw.clone()))),
            "override_error": record.override_error,
            "merged": record.merged,
            "pickable": record.merged.as_ref().map(ServiceInfo::is_available),
            "lease": record.lease.as_ref().map(lease_json),
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON serializes"));
        return Ok(());
    }
    println!("instance:  {} (service {name})", record.uri);
    match &record.provider {
        Some(_) => println!("entry key: {}", record.provider_key),
        None => println!("entry key: {} (absent: not registered now)", record.provider_key),
    }
    match &record.lease {
        Some(lease) => println!(
            "lease:     {:x} ({}), {} left of {} granted",
            lease.id,
            lease.id,
            lease.ttl_left.map_or("expired".into(), |t| format!("{}s", t.as_secs())),
            format_args!("{}s", lease.granted.as_secs())
        ),
        None => println!("lease:     none"),
    }
    match (&record.override_raw, &record.override_error) {
        (None, _) => println!("override:  none ({})", record.override_key),
        (Some(raw), None) => println!("override:  {raw} ({})", record.override_key),
        (Some(raw), Some(error)) => println!("override:  {raw} ({}) IGNORED by clients: {error}", record.override_key),
    }
    if let Some(merged) = &record.merged {
        println!(
            "pickable:  {}",
            if merged.is_available() {
                "yes"
            } else {
                "no (enable or healthy is false)"
            }
        );
    }
    if let Some(provider) = &record.provider {
        println!("entry, as registered:");
        println!("{}", serde_json::to_string_pretty(provider).expect("JSON serializes"));
    }
    if let Some(merged) = record.merged.as_ref().filter(|_| record.override_fields.is_some()) {
        println!("merged, as clients see it:");
        println!("{}", serde_json::to_string_pretty(merged).expect("JSON serializes"));
    }
    Ok(())
}

/// Writes `patch` over the instance's override and reports what the override now is.
async fn govern(registry: &EtcdRegistry, target: &Target, patch: Value) -> Result<(), CliError> {
    let (uri, record) = checked_target(registry, target).await?;
    let Value::Object(patch) = patch else {
        unreachable!("patches are objects")
    };
    let written = registry.update_override(&target.name, &uri, &patch).await?;
    let before = record.and_then(|r| r.override_raw).unwrap_or_else(|| "none".to_owned());
    println!(
        "{} {uri}: override {} (was {before}) at {}",
        target.name,
        Value::Object(written),
        override_key(registry, &target.name, &uri)
    );
    Ok(())
}

async fn drain(registry: &EtcdRegistry, target: &Target, wait: Duration) -> Result<(), CliError> {
    let (uri, _) = checked_target(registry, target).await?;
    let mut watch = registry.watch(&target.name).await?;
    let patch: Map<String, Value> = [("enable".to_owned(), Value::Bool(false))].into_iter().collect();
    let written = registry.update_override(&target.name, &uri, &patch).await?;
    println!("{} {uri}: override {}", target.name, Value::Object(written));
    let started = tokio::time::Instant::now();
    let unpickable = |snapshot: &jovian::Instances| snapshot.get(&uri).is_none_or(|info| !info.is_available());
    match tokio::time::timeout(wait, watch.wait_for(unpickable)).await {
        Ok(Ok(snapshot)) => {
            println!(
                "drained: this tool's own watch of the registry (the merged entry every client computes) shows {uri} \
                 not pickable at revision {}, {} ms after the write; clients following the registry stop picking it \
                 once their watch reaches that revision. Calls already in flight on it are not tracked.",
                snapshot.revision(),
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(CliError(format!(
            "the override is written, but this tool's watch did not see {uri} become unpickable within {wait:?}; \
             check `jovianctl describe {} {uri}` and that the override is not ignored",
            target.name
        ))),
    }
}

/// The instance a governance command names, checked to exist unless `--force`.
async fn checked_target(registry: &EtcdRegistry, target: &Target) -> Result<(String, Option<EntryRecord>), CliError> {
    let uri = parse_address(&target.address).map_err(CliError)?;
    if target.force {
        return Ok((uri.clone(), registry.entry(&target.name, &uri).await?));
    }
    let record = find(registry, &target.name, &uri).await?;
    if record.provider.is_none() {
        return Err(CliError(format!(
            "{} {uri} is not registered now (only its override is in etcd); pass --force to write the override anyway",
            target.name
        )));
    }
    Ok((uri, Some(record)))
}

/// The instance's keys, or an error naming what is unknown and what is known.
async fn find(registry: &EtcdRegistry, name: &str, uri: &str) -> Result<EntryRecord, CliError> {
    let records = registry_entries(registry, name).await?;
    let known: Vec<String> = records.iter().map(|r| r.uri.clone()).collect();
    records.into_iter().find(|r| r.uri == uri).ok_or_else(|| {
        CliError(format!(
            "unknown instance {uri} of service {name}: its instances are {}; `jovianctl list {name}` shows them \
             (pass --force to write an override for an instance not registered yet)",
            known.join(", ")
        ))
    })
}

/// Every key of `name`, or an error saying the service is unknown.
async fn registry_entries(registry: &EtcdRegistry, name: &str) -> Result<Vec<EntryRecord>, CliError> {
    let records = registry.entries(name).await?;
    if records.is_empty() {
        let known = registry.services().await.unwrap_or_default();
        return Err(CliError(format!(
            "unknown service {name}: nothing is registered under /{}/{name}/; registered services: {}",
            prefix(registry),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(records)
}

fn instance_json(record: &EntryRecord) -> Value {
    let info = record.merged.as_ref().expect("only registered instances");
    json!({
        "uri": record.uri,
        "address": info.address,
        "scheme": info.scheme,
        "zone": info.zone,
        "region": info.region,
        "group": info.group,
        "version": info.version,
        "weight": info.weight,
        "enable": info.enable,
        "healthy": info.healthy,
        "pickable": info.is_available(),
        "started_at": started(info),
        "lease": record.lease.as_ref().map(lease_json),
        "override": record.override_fields,
        "override_error": record.override_error,
        "entry": info,
    })
}

fn lease_json(lease: &LeaseInfo) -> Value {
    json!({
        "id": lease.id,
        "ttl_left_seconds": lease.ttl_left.map(|t| t.as_secs()),
        "granted_seconds": lease.granted.as_secs(),
    })
}

fn zone_region(info: &ServiceInfo) -> String {
    match (info.zone.as_str(), info.region.as_str()) {
        ("", "") => "-".into(),
        (zone, region) => format!("{}/{}", or_dash(zone), or_dash(region)),
    }
}

fn lease_left(lease: Option<&LeaseInfo>) -> String {
    match lease {
        None => "-".into(),
        Some(LeaseInfo { ttl_left: None, .. }) => "expired".into(),
        Some(LeaseInfo {
            ttl_left: Some(left),
            granted,
            ..
        }) => format!("{}s/{}s", left.as_secs(), granted.as_secs()),
    }
}

fn overrides_text(record: &EntryRecord) -> String {
    match (&record.override_fields, &record.override_raw) {
        (Some(fields), _) if !fields.is_empty() => Value::Object(fields.clone()).to_string(),
        (None, Some(_)) => "ignored (invalid)".into(),
        _ => "-".into(),
    }
}

/// One watch line: what changed, and how.
fn change_line(change: &Change<'_>) -> String {
    match change {
        Change::Added(info) => format!("added {} {}", info.uri(), summary(info)),
        Change::Removed(info) => format!("removed {}", info.uri()),
        Change::Updated { old, new } => {
            let before = serde_json::to_value(&***old).expect("ServiceInfo serializes");
            let after = serde_json::to_value(&***new).expect("ServiceInfo serializes");
            let mut diffs = Vec::new();
            if let (Value::Object(before), Value::Object(after)) = (&before, &after) {
                for (field, value) in after {
                    if before.get(field) != Some(value) {
                        let old = before.get(field).map_or("-".into(), Value::to_string);
                        diffs.push(format!("{field} {old} -> {value}"));
                    }
                }
            }
            format!("updated {} {}", new.uri(), diffs.join(", "))
        }
    }
}

fn summary(info: &ServiceInfo) -> String {
    format!(
        "weight={} enable={} healthy={} zone={} version={}",
        info.weight,
        info.enable,
        info.healthy,
        or_dash(&info.zone),
        or_dash(&info.version)
    )
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

fn prefix(registry: &EtcdRegistry) -> String {
    registry.config().prefix.trim_matches('/').to_owned()
}

fn override_key(registry: &EtcdRegistry, name: &str, uri: &str) -> String {
    format!("/{}/{name}/configurators/{uri}", prefix(registry))
}
