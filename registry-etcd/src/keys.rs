//! The etcd key layout.
//!
//! - provider: `/{prefix}/{name}/providers/{scheme}://{address}` → ServiceInfo JSON
//! - governance override: `/{prefix}/{name}/configurators/{scheme}://{address}` → partial JSON
//! - metrics target: `/prometheus/job/{name}/{hostname}/{address}` → the governor's address
//!
//! Every key under `/{prefix}/{name}/` belongs to service `name` alone: the trailing slash keeps
//! `greeter` and `greeter2` apart.

use jovian::ServiceInfo;
use jovian::service::EntryKind;

/// Where the governors' metrics targets are, whatever the prefix (jupiter's layout).
pub(crate) const METRICS_ROOT: &str = "/prometheus/job/";

#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key under a service's prefix is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind<'a> {
    /// A provider entry of the instance at this `scheme://address`.
    Provider(&'a str),
    /// An operator's override of the instance at this `scheme://address`.
    Configurator(&'a str),
    /// Something this registry does not read (consumers, other tools' keys).
    Other,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    /// `/{prefix}/`: every key of every service.
    pub(crate) fn root(&self) -> String {
        format!("/{}/", self.prefix)
    }

    /// The service a key under [`root`](Keys::root) names, if it is a provider's key.
    pub(crate) fn provider_service<'k>(root: &str, key: &'k [u8]) -> Option<&'k str> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(root)?;
        let (name, rest) = rest.split_once('/')?;
        (!name.is_empty() && rest.starts_with("providers/")).then_some(name)
    }

    /// `/{prefix}/{name}/`: every key of one service.
    pub(crate) fn service(&self, name: &str) -> String {
        format!("/{}/{name}/", self.prefix)
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

    /// The key and value a registration writes.
    pub(crate) fn entry(&self, info: &ServiceInfo) -> (String, String) {
        match info.kind {
            EntryKind::Governor => (
                format!("/prometheus/job/{}/{}/{}", info.name, info.hostname, info.address),
                info.address.clone(),
            ),
            _ => (self.provider(info), info.encode()),
        }
    }

    /// `/{prefix}/{name}/configurators/{uri}`: where operators override the instance at `uri`.
    pub(crate) fn configurator(&self, name: &str, uri: &str) -> String {
        format!("{}configurators/{uri}", self.service(name))
    }

    /// The app, hostname and address a key under [`METRICS_ROOT`] names, if it is well formed.
    pub(crate) fn metrics_target(key: &[u8]) -> Option<(&str, &str, &str)> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(METRICS_ROOT)?;
        let mut parts = rest.splitn(3, '/');
        let (app, hostname, address) = (parts.next()?, parts.next()?, parts.next()?);
        (!app.is_empty() && !address.is_empty() && !address.contains('/')).then_some((app, hostname, address))
    }

    pub(crate) fn provider(&self, info: &ServiceInfo) -> String {
        format!("{}providers/{}", self.service(&info.name), info.uri())
    }

    /// Classifies a key found under `service_prefix`; an error says why the key is unusable.
    pub(crate) fn classify<'k>(service_prefix: &str, key: &'k [u8]) -> Result<KeyKind<'k>, &'static str> {
        let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8")?;
        let Some(rest) = key.strip_prefix(service_prefix) else {
            return Ok(KeyKind::Other);
        };
        let (kind, uri): (fn(&'k str) -> KeyKind<'k>, &str) = if let Some(uri) = rest.strip_prefix("providers/") {
            (KeyKind::Provider, uri)
        } else if let Some(uri) = rest.strip_prefix("configurators/") {
            (KeyKind::Configurator, uri)
        } else {
            return Ok(KeyKind::Other);
        };
        match uri.split_once("://") {
            Some((scheme, address)) if !scheme.is_empty() && !address.is_empty() && !address.contains('/') => {
                Ok(kind(uri))
            }
            _ => Err("the key has no scheme://address part"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_design() {
        let keys = Keys::new("jovian".into());
        let mut info = ServiceInfo::new("greeter", "127.0.0.1:50051");
        assert_eq!(keys.entry(&info).0, "/jovian/greeter/providers/grpc://127.0.0.1:50051");
        info.kind = EntryKind::Governor;
        info.hostname = "host-a".into();
        info.address = "127.0.0.1:9090".into();
        assert_eq!(
            keys.entry(&info),
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
        let keys = Keys::new("jovian".into());
        assert_eq!(
            keys.configurator("greeter", "grpc://h:1"),
            "/jovian/greeter/configurators/grpc://h:1"
        );
    }

    #[test]
    fn classifies_keys_and_rejects_odd_ones() {
        let p = "/jovian/greeter/";
        assert_eq!(
            Keys::classify(p, b"/jovian/greeter/providers/grpc://h:1"),
            Ok(KeyKind::Provider("grpc://h:1"))
        );
        assert_eq!(
            Keys::classify(p, b"/jovian/greeter/configurators/grpc://h:1"),
            Ok(KeyKind::Configurator("grpc://h:1"))
        );
        assert_eq!(Keys::classify(p, b"/jovian/greeter/consumers/x"), Ok(KeyKind::Other));
        assert_eq!(
            Keys::classify(p, b"/jovian/greeter2/providers/grpc://h:1"),
            Ok(KeyKind::Other)
        );
        assert!(Keys::classify(p, b"/jovian/greeter/providers/").is_err());
        assert!(Keys::classify(p, b"/jovian/greeter/providers/grpc://").is_err());
        assert!(Keys::classify(p, b"/jovian/greeter/providers/h:1").is_err());
        assert!(Keys::classify(p, b"/jovian/greeter/providers/\xff\xfe").is_err());
    }
}
