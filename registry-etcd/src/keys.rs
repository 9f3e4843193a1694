//! The etcd key layout, for the configured [`Layout`](crate::Layout).
//!
//! - provider (jupiter): `/{prefix}/{name}/providers/{scheme}://{address}` → ServiceInfo JSON
//! - governance override (jupiter): `/{prefix}/{name}/configurators/{scheme}://{address}` →
//!   partial JSON
//! - provider (etcd-naming, plain): `{root}{name}{separator}{address}` from the key template →
//!   etcd's naming JSON, or the bare address
//! - instance (kratos, go-zero): `{root}{name}{separator}{id}` from the key template → kratos'
//!   `ServiceInstance` JSON, or the bare address: the address is in the value only
//! - metrics target (every layout): `/prometheus/job/{name}/{hostname}/{address}` → the
//!   governor's address
//!
//! Every key under a service's prefix (`/{prefix}/{name}/`, `{root}{name}{separator}`) belongs
//! to service `name` alone: the `/` it ends with (or holds) keeps `greeter` and `greeter2` apart.

use std::borrow::Cow;

use jovian::service::EntryKind;
use jovian::{InvalidEntry, ServiceInfo};

use crate::layout::{self, GRPC, Layout, Shape, Template};

/// Where the governors' metrics targets are, whatever the prefix (jupiter's layout).
pub(crate) const METRICS_ROOT: &str = "/prometheus/job/";

#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    codec: Codec,
}

#[derive(Clone, Debug)]
enum Codec {
    Jupiter,
    Naming(Template),
    Plain(Template),
    Kratos(Template),
    GoZero(Template),
}

/// What a key under a service's prefix is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind<'a> {
    /// A provider entry of the instance at this `scheme://address`.
    Provider(Cow<'a, str>),
    /// A provider entry named by this id (kratos, go-zero): its value says where it is.
    Instance(&'a str),
    /// An operator's override of the instance at this `scheme://address`.
    Configurator(&'a str),
    /// Something this registry does not read (consumers, other tools' keys).
    Other,
}

impl Keys {
    /// The keys of `layout` under `prefix`; an error says what is wrong with its template.
    pub(crate) fn new(prefix: String, layout: &Layout) -> Result<Self, String> {
        let codec = match layout {
            Layout::Jupiter => Codec::Jupiter,
            Layout::EtcdNaming { key_template } => {
                Codec::Naming(Template::parse(key_template, &prefix, Shape::Naming)?)
            }
            Layout::Plain { key_template } => Codec::Plain(Template::parse(key_template, &prefix, Shape::Plain)?),
            Layout::Kratos { key_template } => Codec::Kratos(Template::parse(key_template, &prefix, Shape::Kratos)?),
            Layout::GoZero { key_template } => Codec::GoZero(Template::parse(key_template, &prefix, Shape::GoZero)?),
        };
        Ok(Self { prefix, codec })
    }

    /// The jupiter layout under `prefix`.
    #[cfg(test)]
    pub(crate) fn jupiter(prefix: &str) -> Self {
        Self::new(prefix.to_owned(), &Layout::Jupiter).expect("jupiter has no template")
    }

    fn template(&self) -> Option<&Template> {
        match &self.codec {
            Codec::Jupiter => None,
            Codec::Naming(template) | Codec::Plain(template) | Codec::Kratos(template) | Codec::GoZero(template) => {
                Some(template)
            }
        }
    }

    /// Whether keys name an instance id rather than its address.
    fn keyed_by_id(&self) -> bool {
        matches!(self.codec, Codec::Kratos(_) | Codec::GoZero(_))
    }

    /// Every key of every service starts with this (`/{prefix}/`, or the template's root,
    /// which may be empty: every key in etcd).
    pub(crate) fn root(&self) -> String {
        match self.template() {
            None => format!("/{}/", self.prefix),
            Some(template) => template.root.clone(),
        }
    }

    /// Where a range over [`root`](Keys::root) starts: etcd reads no empty key, so "every
    /// key" starts at `\0`.
    pub(crate) fn range_start(prefix: &str) -> Vec<u8> {
        match prefix.is_empty() {
            true => vec![0],
            false => prefix.as_bytes().to_vec(),
        }
    }

    /// The service a key under [`root`](Keys::root) names, if it is a provider's key.
    pub(crate) fn provider_service<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let key = std::str::from_utf8(key).ok()?;
        match self.template() {
            None => {
                let rest = key.strip_prefix(&format!("/{}/", self.prefix))?;
                let (name, rest) = rest.split_once('/')?;
                (!name.is_empty() && rest.starts_with("providers/")).then_some(name)
            }
            Some(template) => {
                let (name, address) = template.split(key)?;
                (!address.is_empty() && !address.contains('/')).then_some(name)
            }
        }
    }

    /// Every key of one service starts with this (`/{prefix}/{name}/`,
    /// `{root}{name}{separator}`).
    pub(crate) fn service(&self, name: &str) -> String {
        match self.template() {
            None => format!("/{}/{name}/", self.prefix),
            Some(template) => format!("{}{name}{}", template.root, template.separator),
        }
    }

    /// The first key after every key that starts with `prefix`: the end of its range.
    pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
        let mut end = prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return end;
            }
        }
        vec![0] // every key: etcd reads "\0" as the end of the keyspace
    }

    /// The key and value a registration writes; an error when the layout cannot store the
    /// entry at all (a scheme other than gRPC where the layout stores none).
    pub(crate) fn entry(&self, info: &ServiceInfo) -> Result<(String, String), InvalidEntry> {
        if info.kind == EntryKind::Governor {
            return Ok((
                format!("{METRICS_ROOT}{}/{}/{}", info.name, info.hostname, info.address),
                info.address.clone(),
            ));
        }
        let key = self.provider_key(&info.name, &info.uri());
        match &self.codec {
            Codec::Jupiter => Ok((key, info.encode())),
            _ if info.scheme != GRPC => Err(InvalidEntry(format!(
                "the {} layout stores gRPC instances only (scheme {GRPC}), not scheme {:?}",
                self.layout_name(),
                info.scheme
            ))),
            Codec::Naming(_) => Ok((key, layout::encode_naming(&info.address))),
            Codec::Plain(_) | Codec::GoZero(_) => Ok((key, info.address.clone())),
            Codec::Kratos(_) => Ok((key, layout::encode_kratos(info))),
        }
    }

    fn layout_name(&self) -> &'static str {
        match self.codec {
            Codec::Jupiter => "jupiter",
            Codec::Naming(_) => "etcd-naming",
            Codec::Plain(_) => "plain",
            Codec::Kratos(_) => "kratos",
            Codec::GoZero(_) => "go-zero",
        }
    }

    /// The provider key of `name`'s instance at `uri` (`scheme://address`), as jovian writes
    /// it (under the kratos and go-zero layouts, Go servers choose ids of their own).
    pub(crate) fn provider_key(&self, name: &str, uri: &str) -> String {
        let address = uri.split_once("://").map_or(uri, |(_, address)| address);
        match &self.codec {
            Codec::Jupiter => format!("{}providers/{uri}", self.service(name)),
            Codec::GoZero(_) => format!("{}{}", self.service(name), Layout::go_zero_id(address)),
            Codec::Naming(_) | Codec::Plain(_) | Codec::Kratos(_) => format!("{}{address}", self.service(name)),
        }
    }

    /// `/{prefix}/{name}/configurators/{uri}`: where operators override the instance at `uri`;
    /// `None` under a layout without overrides.
    pub(crate) fn configurator(&self, name: &str, uri: &str) -> Option<String> {
        matches!(self.codec, Codec::Jupiter).then(|| format!("{}configurators/{uri}", self.service(name)))
    }

    /// The app, hostname and address a key under [`METRICS_ROOT`] names, if it is well formed.
    pub(crate) fn metrics_target(key: &[u8]) -> Option<(&str, &str, &str)> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(METRICS_ROOT)?;
        let mut parts = rest.splitn(3, '/');
        let (app, hostname, address) = (parts.next()?, parts.next()?, parts.next()?);
        (!app.is_empty() && !address.is_empty() && !address.contains('/')).then_some((app, hostname, address))
    }

    /// Classifies a key found under `service_prefix`; an error says why the key is unusable.
    pub(crate) fn classify<'k>(&self, service_prefix: &str, key: &'k [u8]) -> Result<KeyKind<'k>, &'static str> {
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8")?;
        let Some(rest) = key.strip_prefix(service_prefix) else {
            return Ok(KeyKind::Other);
        };
        if self.template().is_some() {
            return match (!rest.is_empty() && !rest.contains('/'), self.keyed_by_id()) {
                (true, false) => Ok(KeyKind::Provider(layout::grpc_uri(rest))),
                (true, true) => Ok(KeyKind::Instance(rest)),
                (false, false) => Err("the key has no host:port after the service's prefix"),
                (false, true) => Err("the key has no instance id (one path segment) after the service's prefix"),
            };
        }
        let (provider, uri) = if let Some(uri) = rest.strip_prefix("providers/") {
            (true, uri)
        } else if let Some(uri) = rest.strip_prefix("configurators/") {
            (false, uri)
        } else {
            return Ok(KeyKind::Other);
        };
        match uri.split_once("://") {
            // jupiter's service-wide configurators (`grpc:///routes/1`, `grpc://host/providers/1`:
            // routes and provider/consumer configs its console writes) are no instance's
            // override and no garbage either: left alone, as a jupiter client without the
            // balancer reading them does.
            Some((scheme, address)) if !provider && !scheme.is_empty() && address.contains('/') => Ok(KeyKind::Other),
            Some((scheme, address)) if !scheme.is_empty() && !address.is_empty() && !address.contains('/') => {
                Ok(match provider {
                    true => KeyKind::Provider(Cow::Borrowed(uri)),
                    false => KeyKind::Configurator(uri),
                })
            }
            _ => Err("the key has no scheme://address part"),
        }
    }

    /// The entry a provider value of service `name` holds, at `uri` when its key names one
    /// (`None` for a [`KeyKind::Instance`]); an error says why the value is unusable (it does
    /// not decode, or describes another instance than its key).
    pub(crate) fn decode(&self, name: &str, uri: Option<&str>, value: &[u8]) -> Result<ServiceInfo, String> {
        let info = match &self.codec {
            Codec::Jupiter => ServiceInfo::decode(value).map_err(|e| e.to_string())?,
            Codec::Naming(_) => {
                let (address, labels) = layout::decode_naming(value)?;
                layout::bare_instance(name, address, labels)
            }
            Codec::Plain(_) | Codec::GoZero(_) => layout::bare_instance(name, layout::decode_plain(value)?, Vec::new()),
            Codec::Kratos(_) => {
                let kratos = layout::decode_kratos(value)?;
                let mut info = ServiceInfo::new(kratos.name, kratos.address);
                info.version = kratos.version;
                info.metadata = kratos.metadata;
                info
            }
        };
        info.validate_fields().map_err(|e| e.to_string())?;
        let wrong_uri = uri.is_some_and(|uri| info.uri() != uri);
        if info.name != name || wrong_uri {
            let key = uri.unwrap_or("an instance id");
            return Err(format!("the value describes {info}, not the key's {name}@{key}"));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let keys = Keys::jupiter("jovian");
        let mut info = ServiceInfo::new("greeter", "127.0.0.1:50051");
        assert_eq!(
            keys.entry(&info).unwrap().0,
            "/jovian/greeter/providers/grpc://127.0.0.1:50051"
        );
        info.kind = EntryKind::Governor;
        info.hostname = "host-a".into();
        info.address = "127.0.0.1:9090".into();
        assert_eq!(
            keys.entry(&info).unwrap(),
            (
                "/prometheus/job/greeter/host-a/127.0.0.1:9090".into(),
                "127.0.0.1:9090".into()
            )
        );
    }

    #[test]
    fn metrics_target_keys_parse_back() {
        assert_eq!(
            Keys::metrics_target(b"/prometheus/job/app/host-a/127.0.0.1:9090"),
            Some(("app", "host-a", "127.0.0.1:9090"))
        );
        assert_eq!(
            Keys::metrics_target(b"/prometheus/job/app//127.0.0.1:9090"),
            Some(("app", "", "127.0.0.1:9090"))
        );
        assert_eq!(Keys::metrics_target(b"/prometheus/job/app/host-a"), None);
        assert_eq!(Keys::metrics_target(b"/prometheus/job/app/h/a/b"), None);
        assert_eq!(Keys::metrics_target(b"/jovian/app/h/a"), None);
        let keys = Keys::jupiter("jovian");
        assert_eq!(
            keys.configurator("greeter", "grpc://h:1").unwrap(),
            "/jovian/greeter/configurators/grpc://h:1"
        );
    }

    #[test]
    fn classifies_keys_and_rejects_odd_ones() {
        let p = "/jovian/greeter/";
        let keys = Keys::jupiter("jovian");
        assert_eq!(
            keys.classify(p, b"/jovian/greeter/providers/grpc://h:1"),
            Ok(KeyKind::Provider("grpc://h:1".into()))
        );
        assert_eq!(
            keys.classify(p, b"/jovian/greeter/configurators/grpc://h:1"),
            Ok(KeyKind::Configurator("grpc://h:1"))
        );
        assert_eq!(keys.classify(p, b"/jovian/greeter/consumers/x"), Ok(KeyKind::Other));
        for jupiters in [
            &b"/jovian/greeter/configurators/grpc:///routes/1"[..],
            b"/jovian/greeter/configurators/grpc://h:1/providers/1",
        ] {
            assert_eq!(keys.classify(p, jupiters), Ok(KeyKind::Other));
        }
        assert!(keys.classify(p, b"/jovian/greeter/configurators/grpc://").is_err());
        assert!(keys.classify(p, b"/jovian/greeter/providers/grpc:///routes/1").is_err());
        assert_eq!(
            keys.classify(p, b"/jovian/greeter2/providers/grpc://h:1"),
            Ok(KeyKind::Other)
        );
        assert!(keys.classify(p, b"/jovian/greeter/providers/").is_err());
        assert!(keys.classify(p, b"/jovian/greeter/providers/grpc://").is_err());
        assert!(keys.classify(p, b"/jovian/greeter/providers/h:1").is_err());
        assert!(keys.classify(p, b"/jovian/greeter/providers/\xff\xfe").is_err());
    }

    #[test]
    fn other_layouts_split_keys_by_their_template() {
        let naming = Keys::new("jovian".into(), &Layout::etcd_naming()).unwrap();
        let info = ServiceInfo::new("greeter", "127.0.0.1:1");
        assert_eq!(
            naming.entry(&info).unwrap(),
            (
                "greeter/127.0.0.1:1".into(),
                r#"{"Op":0,"Addr":"127.0.0.1:1","Metadata":null}"#.into()
            )
        );
        assert_eq!(naming.root(), "");
        assert_eq!(naming.provider_service(b"greeter/127.0.0.1:1"), Some("greeter"));
        assert_eq!(naming.provider_service(b"/jovian/greeter/providers/grpc://h:1"), None);
        assert_eq!(naming.configurator("greeter", "grpc://h:1"), None);
        let mut http = info.clone();
        http.scheme = "http".into();
        assert!(naming.entry(&http).is_err(), "a scheme the layout cannot store");

        let plain = Keys::new("jovian".into(), &Layout::plain()).unwrap();
        assert_eq!(
            plain.entry(&info).unwrap(),
            ("/jovian/greeter/127.0.0.1:1".into(), "127.0.0.1:1".into())
        );
        let p = plain.service("greeter");
        assert_eq!(
            plain.classify(&p, b"/jovian/greeter/127.0.0.1:1"),
            Ok(KeyKind::Provider("grpc://127.0.0.1:1".into()))
        );
        assert_eq!(plain.classify(&p, b"/jovian/greeter2/127.0.0.1:1"), Ok(KeyKind::Other));
        assert!(plain.classify(&p, b"/jovian/greeter/").is_err());
        assert!(plain.classify(&p, b"/jovian/greeter/a/b").is_err());
        assert_eq!(
            plain.decode("greeter", Some("grpc://127.0.0.1:1"), b"127.0.0.1:1"),
            Ok(info.clone())
        );
        assert!(
            plain
                .decode("greeter", Some("grpc://127.0.0.1:1"), b"127.0.0.1:2")
                .is_err()
        );
    }

    #[test]
    fn id_layouts_name_instances_by_id_and_read_the_address_from_the_value() {
        let info = ServiceInfo::new("greeter", "127.0.0.1:1");
        let kratos = Keys::new("jovian".into(), &Layout::kratos()).unwrap();
        let (key, value) = kratos.entry(&info).unwrap();
        assert_eq!(key, "/microservices/greeter/127.0.0.1:1");
        let p = kratos.service("greeter");
        assert_eq!(
            kratos.classify(&p, key.as_bytes()),
            Ok(KeyKind::Instance("127.0.0.1:1"))
        );
        assert_eq!(
            kratos.classify(&p, b"/microservices/greeter/0b6e-uuid"),
            Ok(KeyKind::Instance("0b6e-uuid"))
        );
        assert!(kratos.classify(&p, b"/microservices/greeter/a/b").is_err());
        assert_eq!(kratos.decode("greeter", None, value.as_bytes()), Ok(info.clone()));
        assert!(
            kratos.decode("other", None, value.as_bytes()).is_err(),
            "another service's value"
        );
        assert_eq!(kratos.provider_service(b"/microservices/greeter/x"), Some("greeter"));
        assert_eq!(kratos.configurator("greeter", "grpc://127.0.0.1:1"), None);

        let go_zero = Keys::new("jovian".into(), &Layout::go_zero()).unwrap();
        let (key, value) = go_zero.entry(&info).unwrap();
        assert_eq!(key, format!("greeter/{}", Layout::go_zero_id("127.0.0.1:1")));
        assert_eq!(value, "127.0.0.1:1");
        assert_eq!(go_zero.provider_key("greeter", &info.uri()), key);
        let p = go_zero.service("greeter");
        assert_eq!(
            go_zero.classify(&p, b"greeter/7587869577416597000"),
            Ok(KeyKind::Instance("7587869577416597000"))
        );
        assert_eq!(go_zero.decode("greeter", None, b"127.0.0.1:1"), Ok(info));
    }
}
