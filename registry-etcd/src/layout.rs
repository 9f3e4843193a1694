//! Layouts: how an instance is written as an etcd key and value, so that one etcd can be shared
//! with services written on other stacks.
//!
//! - [`Layout::Jupiter`] (the default): `/{prefix}/{name}/providers/{scheme}://{addr}` →
//!   the whole [`ServiceInfo`] as JSON, with operators' overrides under `configurators/`.
//! - [`Layout::EtcdNaming`]: the format of etcd's own gRPC naming package
//!   (`go.etcd.io/etcd/client/v3/naming/endpoints`), which stock grpc-go clients resolve with
//!   `etcd:///{target}`: `{target}/{addr}` → `{"Op":0,"Addr":"{addr}","Metadata":null}`.
//! - [`Layout::Plain`]: `host:port` as the value, under a key template
//!   (`/{prefix}/{name}/{addr}` unless configured): hand-rolled clientv3 registrations.
//! - [`Layout::Kratos`]: go-kratos' etcd registry (`contrib/registry/etcd`):
//!   `/microservices/{name}/{id}` → the JSON of kratos' `registry.ServiceInstance`.
//! - [`Layout::GoZero`]: go-zero's etcd discovery (`core/discov`, what zrpc servers publish):
//!   `{name}/{id}` → `host:port`.
//!
//! The last two name an instance by an id, not its address: the address is in the value, so
//! readers map each key to the address its value gave (`KeyKind::Instance`). jovian writes a
//! fixed id derived from the address (kratos: the address itself; go-zero: a number hashed
//! from it), so its keys survive lease replacement and are known without asking etcd.
//!
//! Only the codec differs: registration (lease, keep-alive, repair) and watching (list then
//! watch, grace after trouble, garbage skipped and counted) are the same under every layout.
//! What a layout cannot hold (weight, zone, metadata, enable...) takes its default when read;
//! `docs/etcd.md` says what each layout keeps and loses.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jovian::ServiceInfo;
use serde_json::Value;

/// How instances are stored in etcd.
///
/// ```
/// use jovian_registry_etcd::{EtcdConfig, Layout};
///
/// // Keys `services/{name}/{addr}`: grpc-go dials `etcd:///services/{name}` (but see
/// // docs/etcd.md: a target with a `/` is refused as an :authority by jovian's server).
/// let config = EtcdConfig::new(["127.0.0.1:2379"])
///     .layout(Layout::etcd_naming().key_template("services/{name}/{addr}"));
/// assert_eq!(config.layout.name(), "etcd-naming");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// Go jupiter's layout: every field of an entry, and governance overrides.
    #[default]
    Jupiter,
    /// etcd's gRPC naming format (`endpoints.Update` JSON) under `key_template`, which must end
    /// in `/{addr}`: the part before is the target grpc-go dials (`etcd:///{target}`).
    EtcdNaming {
        /// The key of an instance: `{name}` (once), `{prefix}` (optional), ending `/{addr}`.
        key_template: String,
    },
    /// `host:port` as the value, under `key_template`.
    Plain {
        /// The key of an instance: `{name}` (once), `{prefix}` (optional), ending `{addr}`,
        /// with a `/` between `{name}` and `{addr}`.
        key_template: String,
    },
    /// go-kratos' etcd registry: kratos' `ServiceInstance` JSON under `key_template`, which
    /// must end in `{name}/{id}`: the part before `{name}/` is kratos' namespace (its
    /// `etcd.Namespace` option, `/microservices` by default).
    Kratos {
        /// The key of an instance: `{namespace}/{name}/{id}`, `{prefix}` allowed in the
        /// namespace.
        key_template: String,
    },
    /// go-zero's etcd discovery (zrpc's `Etcd` config): `host:port` under `key_template`,
    /// which must end in `/{id}`: the part before is go-zero's `Etcd.Key`.
    GoZero {
        /// The key of an instance: `{name}` (once), `{prefix}` (optional), ending `/{id}`.
        key_template: String,
    },
}

/// The key template of the etcd-naming layout unless configured: the target is the service
/// name itself, as in etcd's documentation (`service + "/" + addr`).
pub const DEFAULT_ETCD_NAMING_TEMPLATE: &str = "{name}/{addr}";
/// The key template of the plain layout unless configured.
pub const DEFAULT_PLAIN_TEMPLATE: &str = "/{prefix}/{name}/{addr}";
/// The key template of the kratos layout unless configured: kratos' default namespace,
/// `/microservices` (`contrib/registry/etcd`'s `New`).
pub const DEFAULT_KRATOS_TEMPLATE: &str = "/microservices/{name}/{id}";
/// The key template of the go-zero layout unless configured: the service name is go-zero's
/// `Etcd.Key` (zrpc's examples use names like `greeter.rpc`).
pub const DEFAULT_GO_ZERO_TEMPLATE: &str = "{name}/{id}";

impl Layout {
    /// The etcd-naming layout with its default template, `{name}/{addr}`.
    pub fn etcd_naming() -> Self {
        Layout::EtcdNaming {
            key_template: DEFAULT_ETCD_NAMING_TEMPLATE.to_owned(),
        }
    }

    /// The plain layout with its default template, `/{prefix}/{name}/{addr}`.
    pub fn plain() -> Self {
        Layout::Plain {
            key_template: DEFAULT_PLAIN_TEMPLATE.to_owned(),
        }
    }

    /// The kratos layout with its default template, `/microservices/{name}/{id}`.
    pub fn kratos() -> Self {
        Layout::Kratos {
            key_template: DEFAULT_KRATOS_TEMPLATE.to_owned(),
        }
    }

    /// The go-zero layout with its default template, `{name}/{id}`.
    pub fn go_zero() -> Self {
        Layout::GoZero {
            key_template: DEFAULT_GO_ZERO_TEMPLATE.to_owned(),
        }
    }

    /// The same layout with another key template; the jupiter layout has none and stays as
    /// it is (the config refuses a `key_template` with it).
    pub fn key_template(self, template: impl Into<String>) -> Self {
        let key_template = template.into();
        match self {
            Layout::Jupiter => Layout::Jupiter,
            Layout::EtcdNaming { .. } => Layout::EtcdNaming { key_template },
            Layout::Plain { .. } => Layout::Plain { key_template },
            Layout::Kratos { .. } => Layout::Kratos { key_template },
            Layout::GoZero { .. } => Layout::GoZero { key_template },
        }
    }

    /// The name the config gives it: `jupiter`, `etcd-naming`, `plain`, `kratos` or `go-zero`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Jupiter => "jupiter",
            Layout::EtcdNaming { .. } => "etcd-naming",
            Layout::Plain { .. } => "plain",
            Layout::Kratos { .. } => "kratos",
            Layout::GoZero { .. } => "go-zero",
        }
    }

    /// The key template, `None` for the jupiter layout.
    pub fn template(&self) -> Option<&str> {
        match self {
            Layout::Jupiter => None,
            Layout::EtcdNaming { key_template }
            | Layout::Plain { key_template }
            | Layout::Kratos { key_template }
            | Layout::GoZero { key_template } => Some(key_template),
        }
    }

    /// The id jovian gives an instance at `address` under the go-zero layout: go-zero names
    /// keys `{Key}/{id}` with a decimal number (the lease id, or its `Etcd.ID` option); jovian
    /// uses a positive number hashed from the address (FNV-1a), so the key is the same across
    /// lease replacements and restarts at the same address.
    pub fn go_zero_id(address: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in address.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        match (hash & i64::MAX as u64) as i64 {
            0 => 1,
            id => id,
        }
    }

    /// Whether operators' overrides (`configurators`, `jovianctl disable/weight`) exist under it.
    pub fn has_overrides(&self) -> bool {
        matches!(self, Layout::Jupiter)
    }
}

/// A key template resolved for one prefix: every key is `{root}{name}{separator}{tail}`,
/// the tail an address or, under the kratos and go-zero layouts, an instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    /// Everything before `{name}`, with `{prefix}` filled in; may be empty.
    pub(crate) root: String,
    /// Everything between `{name}` and the tail; holds a `/`, so no service's keys are under
    /// another's (names cannot hold one).
    pub(crate) separator: String,
}

/// What a template must look like, by layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Ends `{addr}`.
    Plain,
    /// Ends `/{addr}`: etcd's naming keys are `{target}/{addr}`.
    Naming,
    /// Ends `{name}/{id}`: kratos' keys are `{namespace}/{name}/{id}`.
    Kratos,
    /// Ends `/{id}`: go-zero's keys are `{Key}/{id}`.
    GoZero,
}

impl Template {
    /// Reads `template` for a layout of `shape`; an error says what is wrong with it.
    pub(crate) fn parse(template: &str, prefix: &str, shape: Shape) -> Result<Self, String> {
        let tail = match shape {
            Shape::Plain | Shape::Naming => "{addr}",
            Shape::Kratos | Shape::GoZero => "{id}",
        };
        let Some(head) = template.strip_suffix(tail) else {
            return Err(format!("it must end with {tail}"));
        };
        match shape {
            Shape::Naming if !head.ends_with('/') => {
                return Err("it must end with /{addr}: etcd's naming keys are {target}/{addr}".into());
            }
            Shape::Kratos if !head.ends_with("{name}/") => {
                return Err("it must end with {name}/{id}: kratos' keys are {namespace}/{name}/{id}".into());
            }
            Shape::GoZero if !head.ends_with('/') => {
                return Err("it must end with /{id}: go-zero's keys are {Key}/{id}".into());
            }
            _ => {}
        }
        let head = head.replace("{prefix}", prefix);
        let Some((root, separator)) = head.split_once("{name}") else {
            return Err("it must hold {name}".into());
        };
        if separator.contains("{name}") {
            return Err("it must hold {name} once".into());
        }
        if !separator.contains('/') {
            return Err(format!(
                "it needs a / between {{name}} and {tail}, so services never share keys"
            ));
        }
        if [root, separator]
            .iter()
            .any(|part| part.contains('{') || part.contains('}'))
        {
            return Err(format!("the only placeholders are {{prefix}}, {{name}} and {tail}"));
        }
        Ok(Self {
            root: root.to_owned(),
            separator: separator.to_owned(),
        })
    }

    /// The service and the tail (address or id) a key names, if it has this template's shape.
    pub(crate) fn split<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(self.root.as_str())?;
        let at = rest.find(self.separator.as_str())?;
        let (name, address) = (&rest[..at], &rest[at + self.separator.len()..]);
        (!name.is_empty() && !name.contains('/')).then_some((name, address))
    }
}

/// The scheme every instance has under a layout that does not store one.
pub(crate) const GRPC: &str = "grpc";

/// The `scheme://address` of an instance stored without a scheme.
pub(crate) fn grpc_uri(address: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{GRPC}://{address}"))
}

/// The value etcd's `endpoints.Manager.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr})`
/// writes, byte for byte: Go's `json.Marshal` of `internal.Update{Op: 0, Addr, Metadata: nil}`.
pub(crate) fn encode_naming(address: &str) -> String {
    format!(r#"{{"Op":0,"Addr":{},"Metadata":null}}"#, go_json_string(address))
}

/// A string as Go's `encoding/json` writes it: as JSON does, and `<`, `>`, `&`, U+2028 and
/// U+2029 escaped too (Go's HTML-safe default).
fn go_json_string(text: &str) -> String {
    let json = serde_json::to_string(text).expect("a string serializes");
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Reads an etcd-naming value as etcd's Go resolver does: a JSON object whose fields are
/// matched without regard to case, `Op` a number 0-255 (not checked further: the resolver
/// takes every put for an add), `Addr` the address; `Metadata`, when an object, gives its
/// string values as labels. Returns the address and labels; an error says why the value is
/// unusable.
pub(crate) fn decode_naming(value: &[u8]) -> Result<(String, Vec<(String, String)>), String> {
    if value.len() > jovian::MAX_ENTRY_BYTES {
        return Err(format!("value of {} bytes is larger than the limit", value.len()));
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(value) else {
        return Err(r#"an etcd-naming value is a JSON object like {"Op":0,"Addr":"host:port"}"#.into());
    };
    let mut address = None;
    let mut labels = Vec::new();
    for (field, value) in fields {
        if field.eq_ignore_ascii_case("op") {
            // Go reads null into a number as "leave it zero".
            let fits = value.is_null() || value.as_u64().is_some_and(|op| op <= 255);
            if !fits {
                return Err(format!("Op is {value}, not a number 0-255"));
            }
        } else if field.eq_ignore_ascii_case("addr") {
            match value {
                Value::String(text) => address = Some(text),
                Value::Null => address = None,
                other => return Err(format!("Addr is {other}, not a string")),
            }
        } else if field.eq_ignore_ascii_case("metadata")
            && let Value::Object(metadata) = value
        {
            labels = metadata
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                .collect();
        }
    }
    match address {
        Some(address) if !address.is_empty() => Ok((address, labels)),
        _ => Err("the value has no Addr".into()),
    }
}

/// Reads a plain value: the address, surrounding whitespace ignored.
pub(crate) fn decode_plain(value: &[u8]) -> Result<String, String> {
    if value.len() > jovian::MAX_ENTRY_BYTES {
        return Err(format!("value of {} bytes is larger than the limit", value.len()));
    }
    let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8")?.trim();
    if text.is_empty() {
        return Err("the value is empty, not host:port".into());
    }
    Ok(text.to_owned())
}

/// The value go-kratos' etcd registry writes for a gRPC server of `info`, byte for byte: Go's
/// `json.Marshal` of `registry.ServiceInstance{ID, Name, Version, Metadata, Endpoints}`
/// (`contrib/registry/etcd/service.go`): fields in that order, no spaces, `null` for no
/// metadata (a kratos App given none), map keys sorted, Go's escaping. The id is the address
/// (see the module) and the one endpoint `grpc://{address}`, as a kratos gRPC server without
/// TLS announces itself.
pub(crate) fn encode_kratos(info: &ServiceInfo) -> String {
    let metadata = match info.metadata.is_empty() {
        true => "null".to_owned(),
        false => {
            let fields: Vec<String> = info
                .metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", go_json_string(k), go_json_string(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    };
    format!(
        r#"{{"id":{},"name":{},"version":{},"metadata":{metadata},"endpoints":[{}]}}"#,
        go_json_string(&info.address),
        go_json_string(&info.name),
        go_json_string(&info.version),
        go_json_string(&format!("{GRPC}://{}", info.address)),
    )
}

/// What jovian takes from a kratos value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KratosInstance {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) version: String,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// Reads a kratos value as kratos' own gRPC clients do: Go's `json.Unmarshal` into
/// `registry.ServiceInstance` (field names in any case, unknown fields ignored, a field of the
/// wrong type fails the value), then the host of the first endpoint whose scheme is `grpc`
/// (`endpoint.ParseEndpoint(in.Endpoints, "grpc")` of its discovery resolver). An error says
/// why the value is unusable; an instance with no `grpc://` endpoint (an HTTP-only server) is
/// one.
pub(crate) fn decode_kratos(value: &[u8]) -> Result<KratosInstance, String> {
    if value.len() > jovian::MAX_ENTRY_BYTES {
        return Err(format!("value of {} bytes is larger than the limit", value.len()));
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(value) else {
        return Err(
            r#"a kratos value is a JSON object like {"id":"..","name":"..","endpoints":["grpc://host:port"]}"#.into(),
        );
    };
    let text = |field: &str, value: Value| match value {
        Value::String(text) => Ok(text),
        Value::Null => Ok(String::new()),
        other => Err(format!("{field} is {other}, not a string")),
    };
    let mut instance = KratosInstance {
        name: String::new(),
        address: String::new(),
        version: String::new(),
        metadata: BTreeMap::new(),
    };
    let mut endpoints = Vec::new();
    for (field, value) in fields {
        match field.to_ascii_lowercase().as_str() {
            "id" => drop(text("id", value)?),
            "name" => instance.name = text("name", value)?,
            "version" => instance.version = text("version", value)?,
            "metadata" => match value {
                Value::Null => instance.metadata.clear(),
                Value::Object(labels) => {
                    instance.metadata = labels
                        .into_iter()
                        .map(|(k, v)| Ok((k, text("a metadata value", v)?)))
                        .collect::<Result<_, String>>()?;
                }
                other => return Err(format!("metadata is {other}, not an object of strings")),
            },
            "endpoints" => match value {
                Value::Null => endpoints.clear(),
                Value::Array(list) => {
                    endpoints = list
                        .into_iter()
                        .map(|e| text("an endpoint", e))
                        .collect::<Result<_, String>>()?;
                }
                other => return Err(format!("endpoints is {other}, not a list of strings")),
            },
            _ => {}
        }
    }
    let Some(endpoint) = endpoints
        .iter()
        .find(|e| scheme_of(e).is_some_and(|s| s.eq_ignore_ascii_case(GRPC)))
    else {
        return Err(format!(
            "no grpc:// endpoint among {endpoints:?} (kratos' gRPC clients skip such an instance too)"
        ));
    };
    let rest = &endpoint[endpoint.find("://").map_or(0, |at| at + 3)..];
    let host = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if host.is_empty() {
        return Err(format!("the endpoint {endpoint:?} has no host:port"));
    }
    instance.address = host.to_owned();
    Ok(instance)
}

/// The scheme of a `scheme://...` URL.
fn scheme_of(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

/// An instance read from a layout that stores only its address (and maybe labels).
pub(crate) fn bare_instance(name: &str, address: String, labels: Vec<(String, String)>) -> ServiceInfo {
    let mut info = ServiceInfo::new(name, address);
    info.metadata.extend(labels);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_and_bad_ones_say_why() {
        let plain = Template::parse(DEFAULT_PLAIN_TEMPLATE, "jovian", Shape::Plain).unwrap();
        assert_eq!((plain.root.as_str(), plain.separator.as_str()), ("/jovian/", "/"));
        let naming = Template::parse(DEFAULT_ETCD_NAMING_TEMPLATE, "jovian", Shape::Naming).unwrap();
        assert_eq!((naming.root.as_str(), naming.separator.as_str()), ("", "/"));
        let schema = Template::parse("etcd:///{name}/{addr}", "x", Shape::Plain).unwrap();
        assert_eq!(
            schema.split("etcd:///greeter/10.0.0.1:80"),
            Some(("greeter", "10.0.0.1:80"))
        );
        assert_eq!(schema.split("etcd:///greeter"), None);
        assert_eq!(schema.split("other/greeter/1"), None);
        let kratos = Template::parse(DEFAULT_KRATOS_TEMPLATE, "jovian", Shape::Kratos).unwrap();
        assert_eq!(
            (kratos.root.as_str(), kratos.separator.as_str()),
            ("/microservices/", "/")
        );
        let go_zero = Template::parse("{prefix}/{name}.rpc/{id}", "jovian", Shape::GoZero).unwrap();
        assert_eq!(
            (go_zero.root.as_str(), go_zero.separator.as_str()),
            ("jovian/", ".rpc/")
        );
        assert_eq!(go_zero.split("jovian/greeter.rpc/42"), Some(("greeter", "42")));
        for (bad, shape) in [
            ("{name}/{addr}/x", Shape::Plain),
            ("/{prefix}/{addr}", Shape::Plain),
            ("{name}{addr}", Shape::Plain),
            ("{name}:{addr}", Shape::Naming),
            ("{name}/{name}/{addr}", Shape::Plain),
            ("{name}/{zone}/{addr}", Shape::Plain),
            ("/microservices/{name}/{addr}", Shape::Kratos),
            ("/microservices/{name}.x/{id}", Shape::Kratos),
            ("/microservices/{id}", Shape::Kratos),
            ("{name}:{id}", Shape::GoZero),
            ("{name}/{addr}", Shape::GoZero),
        ] {
            assert!(Template::parse(bad, "p", shape).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn naming_values_are_gos_bytes_and_read_as_go_reads_them() {
        assert_eq!(
            encode_naming("127.0.0.1:50051"),
            r#"{"Op":0,"Addr":"127.0.0.1:50051","Metadata":null}"#
        );
        assert_eq!(
            encode_naming("a<b>&c"),
            r#"{"Op":0,"Addr":"a\u003cb\u003e\u0026c","Metadata":null}"#
        );
        assert_eq!(
            decode_naming(br#"{"Op":0,"Addr":"h:1","Metadata":{"v":"2","n":3}}"#),
            Ok(("h:1".into(), vec![("v".into(), "2".into())]))
        );
        assert_eq!(decode_naming(br#"{"addr":"h:1"}"#), Ok(("h:1".into(), vec![])));
        for bad in [
            &br#"{"Op":"add","Addr":"h:1"}"#[..],
            br#"{"Op":0}"#,
            br#"{"Op":0,"Addr":""}"#,
            br#"{"Addr":7}"#,
            b"h:1",
            b"\xff",
        ] {
            assert!(
                decode_naming(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(decode_plain(b" h:1\n"), Ok("h:1".into()));
        assert!(decode_plain(b"").is_err() && decode_plain(b"\xff").is_err());
    }

    /// What kratos v2.9.1's App writes through contrib/registry/etcd for a gRPC server given
    /// an id, name, version and metadata (Go's `json.Marshal` of `registry.ServiceInstance`).
    #[test]
    fn kratos_values_are_gos_bytes_and_read_as_kratos_reads_them() {
        let mut info = ServiceInfo::new("greeter", "127.0.0.1:9000");
        assert_eq!(
            encode_kratos(&info),
            r#"{"id":"127.0.0.1:9000","name":"greeter","version":"","metadata":null,"endpoints":["grpc://127.0.0.1:9000"]}"#
        );
        info.version = "v1<2>".into();
        info.metadata.insert("zone".into(), "z&1".into());
        info.metadata.insert("app".into(), "a".into());
        assert_eq!(
            encode_kratos(&info),
            r#"{"id":"127.0.0.1:9000","name":"greeter","version":"v1\u003c2\u003e","metadata":{"app":"a","zone":"z\u00261"},"endpoints":["grpc://127.0.0.1:9000"]}"#
        );
        let read = decode_kratos(encode_kratos(&info).as_bytes()).unwrap();
        assert_eq!(
            (read.name.as_str(), read.address.as_str(), read.version.as_str()),
            ("greeter", "127.0.0.1:9000", "v1<2>")
        );
        assert_eq!(read.metadata, info.metadata);
        // A kratos App with an HTTP and a gRPC server, written by Go: the gRPC endpoint is it.
        let go = br#"{"id":"5f0a-uuid","Name":"greeter","version":"v2","metadata":{"k":"v"},"endpoints":["http://10.0.0.1:8000","grpc://10.0.0.1:9000?isSecure=false"],"extra":1}"#;
        let read = decode_kratos(go).unwrap();
        assert_eq!(
            (read.name.as_str(), read.address.as_str()),
            ("greeter", "10.0.0.1:9000")
        );
        for bad in [
            &br#"{"id":"1","name":"greeter","endpoints":["http://10.0.0.1:8000"]}"#[..],
            br#"{"id":"1","name":"greeter","endpoints":null}"#,
            br#"{"id":"1","name":"greeter","endpoints":["grpc://"]}"#,
            br#"{"id":"1","name":"greeter","endpoints":"grpc://h:1"}"#,
            br#"{"id":"1","name":"greeter","metadata":{"n":1},"endpoints":["grpc://h:1"]}"#,
            br#"{"id":1,"name":"greeter","endpoints":["grpc://h:1"]}"#,
            br#"null"#,
            b"grpc://h:1",
        ] {
            assert!(
                decode_kratos(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn go_zero_ids_are_positive_and_fixed_per_address() {
        let id = Layout::go_zero_id("127.0.0.1:8080");
        assert!(id > 0);
        assert_eq!(id, Layout::go_zero_id("127.0.0.1:8080"));
        assert_ne!(id, Layout::go_zero_id("127.0.0.1:8081"));
    }
}
