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
//!
//! Only the codec differs: registration (lease, keep-alive, repair) and watching (list then
//! watch, grace after trouble, garbage skipped and counted) are the same under every layout.
//! What a layout cannot hold (weight, zone, metadata, enable...) takes its default when read;
//! `docs/etcd.md` says what each layout keeps and loses.

use std::borrow::Cow;

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
}

/// The key template of the etcd-naming layout unless configured: the target is the service
/// name itself, as in etcd's documentation (`service + "/" + addr`).
pub const DEFAULT_ETCD_NAMING_TEMPLATE: &str = "{name}/{addr}";
/// The key template of the plain layout unless configured.
pub const DEFAULT_PLAIN_TEMPLATE: &str = "/{prefix}/{name}/{addr}";

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

    /// The same layout with another key template; the jupiter layout has none and stays as
    /// it is (the config refuses a `key_template` with it).
    pub fn key_template(self, template: impl Into<String>) -> Self {
        match self {
            Layout::Jupiter => Layout::Jupiter,
            Layout::EtcdNaming { .. } => Layout::EtcdNaming {
                key_template: template.into(),
            },
            Layout::Plain { .. } => Layout::Plain {
                key_template: template.into(),
            },
        }
    }

    /// The name the config gives it: `jupiter`, `etcd-naming` or `plain`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Jupiter => "jupiter",
            Layout::EtcdNaming { .. } => "etcd-naming",
            Layout::Plain { .. } => "plain",
        }
    }

    /// Whether operators' overrides (`configurators`, `jovianctl disable/weight`) exist under it.
    pub fn has_overrides(&self) -> bool {
        matches!(self, Layout::Jupiter)
    }
}

/// A key template resolved for one prefix: every key is `{root}{name}{separator}{addr}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    /// Everything before `{name}`, with `{prefix}` filled in; may be empty.
    pub(crate) root: String,
    /// Everything between `{name}` and `{addr}`; holds a `/`, so no service's keys are under
    /// another's (names cannot hold one).
    pub(crate) separator: String,
}

impl Template {
    /// Reads `template`; an error says what is wrong with it.
    pub(crate) fn parse(template: &str, prefix: &str, naming: bool) -> Result<Self, String> {
        let Some(head) = template.strip_suffix("{addr}") else {
            return Err("it must end with {addr}".into());
        };
        if naming && !head.ends_with('/') {
            return Err("it must end with /{addr}: etcd's naming keys are {target}/{addr}".into());
        }
        let head = head.replace("{prefix}", prefix);
        let Some((root, separator)) = head.split_once("{name}") else {
            return Err("it must hold {name}".into());
        };
        if separator.contains("{name}") {
            return Err("it must hold {name} once".into());
        }
        if !separator.contains('/') {
            return Err("it needs a / between {name} and {addr}, so services never share keys".into());
        }
        if [root, separator]
            .iter()
            .any(|part| part.contains('{') || part.contains('}'))
        {
            return Err("the only placeholders are {prefix}, {name} and {addr}".into());
        }
        Ok(Self {
            root: root.to_owned(),
            separator: separator.to_owned(),
        })
    }

    /// The service and address a key names, if it has this template's shape.
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
        let plain = Template::parse(DEFAULT_PLAIN_TEMPLATE, "jovian", false).unwrap();
        assert_eq!((plain.root.as_str(), plain.separator.as_str()), ("/jovian/", "/"));
        let naming = Template::parse(DEFAULT_ETCD_NAMING_TEMPLATE, "jovian", true).unwrap();
        assert_eq!((naming.root.as_str(), naming.separator.as_str()), ("", "/"));
        let schema = Template::parse("etcd:///{name}/{addr}", "x", false).unwrap();
        assert_eq!(
            schema.split("etcd:///greeter/10.0.0.1:80"),
            Some(("greeter", "10.0.0.1:80"))
        );
        assert_eq!(schema.split("etcd:///greeter"), None);
        assert_eq!(schema.split("other/greeter/1"), None);
        for (bad, naming) in [
            ("{name}/{addr}/x", false),
            ("/{prefix}/{addr}", false),
            ("{name}{addr}", false),
            ("{name}:{addr}", true),
            ("{name}/{name}/{addr}", false),
            ("{name}/{zone}/{addr}", false),
        ] {
            assert!(Template::parse(bad, "p", naming).is_err(), "{bad} accepted");
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
}
