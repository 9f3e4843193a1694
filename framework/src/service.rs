//! One registered instance of a service, as stored in the registry: [`ServiceInfo`], and what
//! an entry describes ([`EntryKind`]).
//!
//! The JSON field names are Go jupiter's, so jovian services and jupiter-style Go services can
//! read each other's registry entries. Reading is lenient (unknown fields are ignored, missing
//! ones take defaults, `null` reads as empty) but never panics: anything that does not decode is
//! an [`InvalidEntry`] for the caller to skip and count.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The largest registry value [`ServiceInfo::decode`] accepts. A real entry is a few hundred
/// bytes; anything far larger is garbage and would cost every watcher memory and time.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The [`ServiceInfo::metadata`] key in which an instance says how often it takes an HTTP/2
/// ping while calls are in flight, in milliseconds. jovian's servers write `0` (any time), so
/// jovian's clients notice one frozen within about two seconds; an instance without it is
/// pinged only as stock gRPC servers allow (see `ConnectionOptions::keepalive_interval`).
pub const MIN_PING_INTERVAL_KEY: &str = "http2.min_ping_interval_ms";

/// One instance of a service: where it listens and how clients should treat it.
///
/// ```
/// use jovian::ServiceInfo;
///
/// let info = ServiceInfo::new("greeter", "127.0.0.1:50051").with_zone("z1").with_weight(50);
/// assert_eq!(info.uri(), "grpc://127.0.0.1:50051");
/// let json = info.encode();
/// assert_eq!(ServiceInfo::decode(json.as_bytes()).unwrap(), info);
/// ```
///
/// Fields may be added in any release (jupiter's entry has more): build one with
/// [`ServiceInfo::new`] and the `with_*` setters, or assign fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The service name clients look up.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// The application id (free-form, jupiter's `appId`).
    #[serde(deserialize_with = "null_as_default")]
    pub app_id: String,
    /// The protocol clients speak to this instance: `grpc` for jovian servers.
    #[serde(deserialize_with = "null_as_default")]
    pub scheme: String,
    /// `host:port` clients connect to.
    #[serde(deserialize_with = "null_as_default")]
    pub address: String,
    /// Relative share of traffic for weighted balancing (default 100).
    #[serde(deserialize_with = "lenient_weight")]
    pub weight: u32,
    /// Whether clients may pick this instance; operators turn it off to drain an instance.
    #[serde(deserialize_with = "null_as_default_true")]
    pub enable: bool,
    /// Whether the instance reports itself healthy.
    #[serde(deserialize_with = "null_as_default_true")]
    pub healthy: bool,
    /// Free-form labels.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// Region the instance runs in.
    #[serde(deserialize_with = "null_as_default")]
    pub region: String,
    /// Zone the instance runs in, for zone-preferring clients.
    #[serde(deserialize_with = "null_as_default")]
    pub zone: String,
    /// What the entry describes.
    pub kind: EntryKind,
    /// The instance's release version.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
    /// Run mode (free-form, e.g. `prod`).
    #[serde(deserialize_with = "null_as_default")]
    pub mode: String,
    /// Host the instance runs on.
    #[serde(deserialize_with = "null_as_default")]
    pub hostname: String,
    /// Deployment group: traffic never crosses deployments a client did not select.
    #[serde(deserialize_with = "null_as_default")]
    pub deployment: String,
    /// Traffic group, for clients that select one.
    #[serde(deserialize_with = "null_as_default")]
    pub group: String,
}

impl Default for ServiceInfo {
    fn default() -> Self {
        Self {
            name: String::new(),
            app_id: String::new(),
            scheme: "grpc".to_owned(),
            address: String::new(),
            weight: 100,
            enable: true,
            healthy: true,
            metadata: BTreeMap::new(),
            region: String::new(),
            zone: String::new(),
            kind: EntryKind::Provider,
            version: String::new(),
            mode: String::new(),
            hostname: String::new(),
            deployment: String::new(),
            group: String::new(),
        }
    }
}

/// What a registry entry describes (jupiter's numeric `kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Not known (0, or a number this version does not know).
    Unknown,
    /// A server offering the service (1).
    #[default]
    Provider,
    /// A governor (metrics/admin) endpoint (2).
    Governor,
    /// A client of the service (3).
    Consumer,
}

impl ServiceInfo {
    /// A provider of `name` listening on `address`, with every other field at its default.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            ..Self::default()
        }
    }

    /// `scheme://address`: the key of this instance within its service.
    pub fn uri(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// Whether a client may send calls to this instance.
    pub fn is_available(&self) -> bool {
        self.enable && self.healthy
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets the release version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the traffic group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets the deployment.
    pub fn with_deployment(mut self, deployment: impl Into<String>) -> Self {
        self.deployment = deployment.into();
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds one metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks what a registry needs before storing the entry: a name and an address that
    /// cannot break the key layout, and an encoding no larger than [`MAX_ENTRY_BYTES`].
    pub fn validate(&self) -> Result<(), InvalidEntry> {
        self.validate_fields()?;
        // Watchers refuse a value larger than this (`decode`): an entry that encodes larger
        // would register and never be seen.
        let encoded = self.encode().len();
        if encoded > MAX_ENTRY_BYTES {
            return Err(InvalidEntry(format!(
                "the entry encodes to {encoded} bytes, larger than the {MAX_ENTRY_BYTES}-byte limit"
            )));
        }
        Ok(())
    }

    /// What a reader checks of an entry it decoded or made from a key: everything
    /// [`validate`](Self::validate) checks but the encoded size, which the value read bounds
    /// already (encoding every entry a watcher reads again would cost the watch path).
    pub fn validate_fields(&self) -> Result<(), InvalidEntry> {
        let bad = |what: &str| Err(InvalidEntry(what.to_owned()));
        if self.name.is_empty() {
            return bad("the service name is empty");
        }
        if self.name.contains('/') || self.name.chars().any(char::is_whitespace) {
            return bad("the service name must not contain '/' or whitespace");
        }
        if self.address.is_empty() {
            return bad("the address is empty");
        }
        if self.address.contains('/') || self.scheme.contains('/') {
            return bad("the scheme and address must not contain '/'");
        }
        if self.scheme.is_empty() {
            return bad("the scheme is empty");
        }
        Ok(())
    }

    /// The JSON a registry stores.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("ServiceInfo always serializes")
    }

    /// Reads a registry value. Fails, never panics, on anything that is not a well-formed entry
    /// no larger than [`MAX_ENTRY_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidEntry> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(InvalidEntry(format!(
                "value is {} bytes, larger than the {MAX_ENTRY_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let info: Self = serde_json::from_slice(bytes).map_err(|e| InvalidEntry(e.to_string()))?;
        info.validate_fields()?;
        Ok(info)
    }
}

/// A registry value that is not a usable [`ServiceInfo`]; the reason says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid service entry: {0}")]
pub struct InvalidEntry(pub String);

impl Serialize for EntryKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(match self {
            EntryKind::Unknown => 0,
            EntryKind::Provider => 1,
            EntryKind::Governor => 2,
            EntryKind::Consumer => 3,
        })
    }
}

impl<'de> Deserialize<'de> for EntryKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<u64>::deserialize(deserializer)? {
            Some(1) => EntryKind::Provider,
            Some(2) => EntryKind::Governor,
            Some(3) => EntryKind::Consumer,
            _ => EntryKind::Unknown,
        })
    }
}

impl fmt::Display for ServiceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.uri())
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn null_as_default_true<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(true))
}

/// Go jupiter stores the weight as a float; accept any finite non-negative number.
fn lenient_weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match Option::<f64>::deserialize(deserializer)? {
        None => Ok(100),
        Some(w) if w.is_finite() && w >= 0.0 => Ok(w.round().min(f64::from(u32::MAX)) as u32),
        Some(w) => Err(serde::de::Error::custom(format!(
            "weight {w} is not a non-negative number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_design_example_with_jupiter_field_names() {
        let json = r#"{"name":"greeter","appId":"","scheme":"grpc","address":"127.0.0.1:50051","weight":100,
            "enable":true,"healthy":true,"metadata":{"version":"1.2.0"},"region":"","zone":"z1",
            "kind":1,"version":"v1","mode":"","hostname":"host-a","deployment":"","group":""}"#;
        let info = ServiceInfo::decode(json.as_bytes()).unwrap();
        assert_eq!(info.address, "127.0.0.1:50051");
        assert_eq!(info.zone, "z1");
        assert_eq!(info.kind, EntryKind::Provider);
        assert_eq!(info.metadata["version"], "1.2.0");
        assert_eq!(info.hostname, "host-a");
        let round_trip: serde_json::Value = serde_json::from_str(&info.encode()).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(round_trip, original);
    }

    #[test]
    fn missing_and_null_fields_take_defaults_and_unknown_fields_are_ignored() {
        let json = br#"{"name":"a","address":"h:1","metadata":null,"services":{"x":1},"weight":2.6}"#;
        let info = ServiceInfo::decode(json).unwrap();
        assert_eq!(info.scheme, "grpc");
        assert_eq!(info.weight, 3);
        assert!(info.enable && info.healthy);
        assert!(info.metadata.is_empty());
        let no_weight = ServiceInfo::decode(br#"{"name":"a","address":"h:1"}"#).unwrap();
        assert_eq!(no_weight.weight, 100);
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let huge = format!(
            r#"{{"name":"a","address":"h:1","zone":"{}"}}"#,
            "z".repeat(MAX_ENTRY_BYTES)
        );
        for bad in [
            &b"not json"[..],
            b"",
            b"[]",
            b"null",
            br#"{"name":"a","address":"h:1","weight":"heavy"}"#,
            br#"{"name":"a","address":"h:1","weight":-1}"#,
            br#"{"name":"a","address":"h:1","enable":"yes"}"#,
            br#"{"name":"a"}"#,
            br#"{"name":"a/b","address":"h:1"}"#,
            b"\xff\xfe\x00",
            huge.as_bytes(),
        ] {
            assert!(
                ServiceInfo::decode(bad).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_entry_too_large_once_encoded_is_refused_before_any_registry_stores_it() {
        // Found by the fuzz check's round trip: under the limit as read, over it as written
        // back with the defaults it left out. A registrar would have stored what no watcher
        // reads.
        let head = r#"{"name":"a","address":"h:1","zone":""#;
        let zone = "z".repeat(MAX_ENTRY_BYTES - head.len() - 2);
        let value = format!(r#"{head}{zone}"}}"#);
        assert_eq!(value.len(), MAX_ENTRY_BYTES);
        let read = ServiceInfo::decode(value.as_bytes()).expect("within the limit as read");
        let error = read.validate().unwrap_err();
        assert!(error.0.contains("encodes to"), "{error}");
        let fits = ServiceInfo::new("a", "h:1").with_zone("z".repeat(MAX_ENTRY_BYTES - 1000));
        fits.validate().unwrap();
        let encoded = fits.encode();
        assert_eq!(ServiceInfo::decode(encoded.as_bytes()), Ok(fits));
    }

    #[test]
    fn unknown_kind_numbers_read_as_unknown() {
        let info = ServiceInfo::decode(br#"{"name":"a","address":"h:1","kind":9}"#).unwrap();
        assert_eq!(info.kind, EntryKind::Unknown);
    }
}
