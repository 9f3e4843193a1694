//! How to reach etcd and how to lay out keys: endpoints, prefix, layout, lease TTL, timeouts,
//! credentials and TLS; in code ([`EtcdConfig`]'s builders) or from a jovian config's
//! `[registry]` section ([`EtcdConfig::from_registry_config`]), whose keys this module owns.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use jovian::Error;
use serde::Deserialize;

use crate::keys::Keys;
use crate::layout::Layout;

/// Settings of an [`EtcdRegistry`](crate::EtcdRegistry). `Debug` shows the password as
/// `<redacted>`.
///
/// ```
/// use std::time::Duration;
/// use jovian_registry_etcd::EtcdConfig;
///
/// let config = EtcdConfig::new(["10.0.0.1:2379", "10.0.0.2:2379"])
///     .prefix("jupiter")
///     .ttl(Duration::from_secs(15))
///     .credentials("svc", "secret");
/// ```
///
/// Settings may be added in any release: start from [`EtcdConfig::new`] and its setters (or
/// assign fields); it cannot be written as a struct literal outside this crate.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// `host:port` (or `http(s)://host:port`) of each member.
    pub endpoints: Vec<String>,
    /// The first path segment of every key (`jovian`; `jupiter` to share Go jupiter's registry).
    pub prefix: String,
    /// The lease TTL; registrations vanish this long after the process stops renewing.
    pub ttl: Duration,
    /// How long connecting may take before startup fails.
    pub dial_timeout: Duration,
    /// How long any single request may take.
    pub request_timeout: Duration,
    /// How long a connection may go without receiving anything before it is pinged (HTTP/2
    /// keep-alive), so a frozen or partitioned member is noticed. etcd closes connections that
    /// ping more often than its `--grpc-keepalive-min-time` (5 s by default) allows.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// User and password, when etcd has authentication enabled.
    pub credentials: Option<(String, String)>,
    /// TLS settings, for `https` members.
    pub tls: Option<TlsFiles>,
    /// How long watchers keep instances that went missing across an interruption (an outage
    /// longer than the TTL expired their leases, or etcd lost its data), while their owners
    /// put them back.
    pub relist_grace: Duration,
    /// The largest message accepted from etcd, in bytes: a page of a list or a batch of watch
    /// events. Pages that would be larger are fetched in smaller pieces.
    pub max_message_bytes: usize,
    /// How instances are written as keys and values (jupiter's unless set).
    pub layout: Layout,
}

/// PEM files for TLS to etcd.
///
/// ```
/// use jovian_registry_etcd::{EtcdConfig, TlsFiles};
///
/// let tls = TlsFiles::default().ca("ca.pem").identity("client.pem", "client-key.pem");
/// let config = EtcdConfig::new(["10.0.0.1:2379"]).tls(tls);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsFiles {
    /// CA certificate that signed the members' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate, for members that require one.
    pub cert: Option<PathBuf>,
    /// Client certificate's private key.
    pub key: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host.
    pub domain: Option<String>,
}

/// The lease TTL unless set otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Silence before a keep-alive ping unless set otherwise: above etcd's default
/// `--grpc-keepalive-min-time` of 5 s, so a stock etcd never answers it with GOAWAY.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered unless set otherwise.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The message size limit unless set otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

impl EtcdConfig {
    /// Defaults for `endpoints`: prefix `jovian`, TTL 10 s, 3 s dial and request timeouts,
    /// a keep-alive ping after 10 s of silence answered within 5 s (a stock etcd accepts it),
    /// instances missing after an interruption kept 10 s, messages up to 16 MiB.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "jovian".to_owned(),
            ttl: DEFAULT_TTL,
            dial_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(3),
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            credentials: None,
            tls: None,
            relist_grace: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            layout: Layout::Jupiter,
        }
    }

    /// Sets the key/value layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the lease TTL (whole seconds, at least 1; etcd may raise very small ones).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the dial timeout.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the HTTP/2 keep-alive interval and timeout.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets user and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Sets how long instances missing after an interruption are kept; zero drops them at once.
    pub fn relist_grace(mut self, grace: Duration) -> Self {
        self.relist_grace = grace;
        self
    }

    /// Sets the largest message accepted from etcd.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets TLS files.
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The settings a jovian config's `[registry]` section gives (`kind = "etcd"`, the
    /// default); every key is listed in `docs/configuration.md`.
    ///
    /// ```
    /// let config = jovian::Config::from_toml(
    ///     "[registry]\nendpoints = [\"10.0.0.1:2379\"]\nttl = \"15s\"\nlayout = \"etcd-naming\"",
    /// )
    /// .unwrap();
    /// let etcd = jovian_registry_etcd::EtcdConfig::from_registry_config(&config.registry).unwrap();
    /// assert_eq!(etcd.ttl, std::time::Duration::from_secs(15));
    /// assert_eq!(etcd.endpoints, ["10.0.0.1:2379"]);
    /// assert_eq!(etcd.layout, jovian_registry_etcd::Layout::etcd_naming());
    /// ```
    ///
    /// Fails with [`Error::Config`] naming the key (`registry.ttl`), what it takes and what was
    /// there: an unknown key, a value of the wrong type, settings that cannot go together (a
    /// password without a user, a `key_template` for the jupiter layout, a template without
    /// `{name}`), or another `kind`.
    pub fn from_registry_config(registry: &jovian::config::RegistryConfig) -> Result<Self, Error> {
        if registry.kind != KIND {
            return Err(config_error(
                "registry.kind",
                "\"etcd\" for the etcd registry (jovian_registry_etcd::from_config builds \"memory\" too)",
                &format!("{:?}", registry.kind),
            ));
        }
        let section: Section = registry.settings()?;
        let mut config = Self::new(section.endpoints)
            .prefix(section.prefix)
            .ttl(section.ttl)
            .dial_timeout(section.dial_timeout)
            .request_timeout(section.request_timeout)
            .keepalive(section.keepalive_interval, section.keepalive_timeout)
            .relist_grace(section.relist_grace)
            .max_message_bytes(section.max_message_bytes);
        if let Some(user) = &section.user {
            config = config.credentials(user.clone(), section.password.clone().unwrap_or_default());
        }
        if section.user.is_none() && section.password.is_some() {
            return Err(config_error(
                "registry.user",
                "the etcd user the password belongs to",
                "a password but no user",
            ));
        }
        config.tls = section.tls.as_ref().map(|tls| TlsFiles {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            domain: tls.server_name.clone(),
        });
        config.layout = match (section.layout, section.key_template) {
            (LayoutName::Jupiter, None) => Layout::Jupiter,
            (LayoutName::Jupiter, Some(template)) => {
                return Err(config_error(
                    "registry.key_template",
                    "no template with layout \"jupiter\" (its keys are fixed); set layout = \"etcd-naming\", \"plain\", \"kratos\" or \"go-zero\"",
                    &format!("{template:?}"),
                ));
            }
            (LayoutName::EtcdNaming, template) => {
                Layout::etcd_naming().key_template(template.unwrap_or_else(|| DEFAULT_ETCD_NAMING_TEMPLATE.into()))
            }
            (LayoutName::Plain, template) => {
                Layout::plain().key_template(template.unwrap_or_else(|| DEFAULT_PLAIN_TEMPLATE.into()))
            }
            (LayoutName::Kratos, template) => {
                Layout::kratos().key_template(template.unwrap_or_else(|| DEFAULT_KRATOS_TEMPLATE.into()))
            }
            (LayoutName::GoZero, template) => {
                Layout::go_zero().key_template(template.unwrap_or_else(|| DEFAULT_GO_ZERO_TEMPLATE.into()))
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The keys of this config's layout; an error names the template that does not work.
    pub(crate) fn keys(&self) -> Result<Keys, Error> {
        Keys::new(self.clean_prefix(), &self.layout).map_err(|reason| {
            let template = self.layout.template().unwrap_or_default();
            let example = match self.layout {
                Layout::EtcdNaming { .. } => DEFAULT_ETCD_NAMING_TEMPLATE,
                Layout::Kratos { .. } => DEFAULT_KRATOS_TEMPLATE,
                Layout::GoZero { .. } => DEFAULT_GO_ZERO_TEMPLATE,
                _ => DEFAULT_PLAIN_TEMPLATE,
            };
            config_error(
                "registry.key_template",
                &format!("a {} key template like \"{example}\" ({reason})", self.layout.name()),
                &format!("{template:?}"),
            )
        })
    }

    /// The prefix without surrounding slashes.
    pub(crate) fn clean_prefix(&self) -> String {
        self.prefix.trim_matches('/').to_owned()
    }

    pub(crate) fn endpoints_display(&self) -> String {
        self.endpoints.join(",")
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(config_error("registry.endpoints", "at least one host:port", "none"));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl.subsec_nanos() != 0 {
            return Err(config_error(
                "registry.ttl",
                "a whole number of seconds, at least 1",
                &format!("{:?}", self.ttl),
            ));
        }
        for (key, value) in [
            ("registry.dial_timeout", self.dial_timeout),
            ("registry.request_timeout", self.request_timeout),
            ("registry.keepalive_interval", self.keepalive_interval),
            ("registry.keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(config_error(key, "a duration greater than zero, like \"3s\"", "0s"));
            }
        }
        if self.max_message_bytes < 64 << 10 {
            return Err(config_error(
                "registry.max_message_bytes",
                "at least 65536 (one registry entry)",
                &self.max_message_bytes.to_string(),
            ));
        }
        if self.clean_prefix().is_empty() {
            return Err(config_error(
                "registry.prefix",
                "a non-empty path segment",
                "an empty prefix",
            ));
        }
        self.keys()?;
        Ok(())
    }

    /// etcd-client options. Request timeouts are applied per call by the registry, not here:
    /// a channel-wide timeout would also cut off long-lived watch and keep-alive streams.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(self.keepalive_interval, self.keepalive_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader ends its streams instead of serving stale
            // watches and refusing writes: the client moves to a member that has a leader.
            .with_require_leader(true);
        if let Some((user, password)) = &self.credentials {
            // Auth tokens expire (etcd's --auth-token-ttl); a registry lives far longer.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options()?);
        }
        Ok(options)
    }

    /// Endpoint URLs with the scheme TLS calls for.
    pub(crate) fn endpoint_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https://" } else { "http://" };
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}{e}")
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, jovian::config::REDACTED)),
            )
            .field("tls", &self.tls)
            .field("relist_grace", &self.relist_grace)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("layout", &self.layout)
            .finish()
    }
}

/// The registry kind this crate reads.
pub(crate) const KIND: &str = "etcd";

use crate::layout::{
    DEFAULT_ETCD_NAMING_TEMPLATE, DEFAULT_GO_ZERO_TEMPLATE, DEFAULT_KRATOS_TEMPLATE, DEFAULT_PLAIN_TEMPLATE,
};

/// The `[registry]` section as etcd reads it: every key with its default, none other.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Section {
    #[serde(deserialize_with = "endpoint_list")]
    endpoints: Vec<String>,
    prefix: String,
    layout: LayoutName,
    key_template: Option<String>,
    #[serde(with = "jovian::config::positive_duration")]
    ttl: Duration,
    #[serde(with = "jovian::config::positive_duration")]
    dial_timeout: Duration,
    #[serde(with = "jovian::config::positive_duration")]
    request_timeout: Duration,
    #[serde(with = "jovian::config::positive_duration")]
    keepalive_interval: Duration,
    #[serde(with = "jovian::config::positive_duration")]
    keepalive_timeout: Duration,
    #[serde(with = "jovian::config::duration")]
    relist_grace: Duration,
    max_message_bytes: usize,
    user: Option<String>,
    password: Option<String>,
    tls: Option<jovian::client::ClientTls>,
}

/// `registry.layout` as written.
#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LayoutName {
    #[default]
    Jupiter,
    EtcdNaming,
    Plain,
    Kratos,
    GoZero,
}

impl Default for Section {
    fn default() -> Self {
        let defaults = EtcdConfig::new(["127.0.0.1:2379"]);
        Self {
            endpoints: defaults.endpoints,
            prefix: defaults.prefix,
            layout: LayoutName::Jupiter,
            key_template: None,
            ttl: defaults.ttl,
            dial_timeout: defaults.dial_timeout,
            request_timeout: defaults.request_timeout,
            keepalive_interval: defaults.keepalive_interval,
            keepalive_timeout: defaults.keepalive_timeout,
            relist_grace: defaults.relist_grace,
            max_message_bytes: defaults.max_message_bytes,
            user: None,
            password: None,
            tls: None,
        }
    }
}

/// Endpoints as a list, or as one comma-separated string as every etcd tool takes
/// (`JOVIAN_REGISTRY__ENDPOINTS=10.0.0.1:2379,10.0.0.2:2379`).
fn endpoint_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let raw = Raw::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("expected a list of host:port, or one comma-separated string"))?;
    let list = match raw {
        Raw::List(list) => list,
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(list
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect())
}

impl TlsFiles {
    /// Checks the members' certificates against this CA (PEM).
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM) and its key (PEM).
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Verifies this name instead of the endpoint's host.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn options(&self) -> Result<TlsOptions, Error> {
        let mut options = TlsOptions::new();
        if let Some(ca) = &self.ca {
            options = options.ca_certificate(Certificate::from_pem(jovian::config::read_pem("registry.tls.ca", ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = jovian::config::read_pem("registry.tls.cert", cert)?;
                let key = jovian::config::read_pem("registry.tls.key", key)?;
                options = options.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(config_error(
                    "registry.tls.key",
                    "a key file to go with tls.cert",
                    "none",
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "registry.tls.cert",
                    "a certificate to go with tls.key",
                    "none",
                ));
            }
        }
        if let Some(domain) = &self.domain {
            options = options.domain_name(domain.clone());
        }
        Ok(options)
    }
}

pub(crate) fn config_error(key: &str, expected: &str, found: &str) -> Error {
    Error::Config {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(toml: &str) -> Result<EtcdConfig, Error> {
        EtcdConfig::from_registry_config(&jovian::Config::from_toml(toml).unwrap().registry)
    }

    fn key_of(error: &Error) -> &str {
        match error {
            Error::Config { key, .. } => key,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn the_registry_section_maps_over_and_keeps_the_password_secret() {
        let etcd = from_toml(
            "[registry]\nendpoints = \"a:1,b:2\"\nkeepalive_interval = \"20s\"\nuser = \"svc\"\npassword = \"hunter2\"",
        )
        .unwrap();
        assert_eq!(etcd.endpoints, ["a:1", "b:2"]);
        assert_eq!(etcd.keepalive_interval, Duration::from_secs(20));
        let debug = format!("{etcd:?}");
        assert!(!debug.contains("hunter2") && debug.contains("svc"), "{debug}");
    }

    #[test]
    fn defaults_fill_what_the_section_leaves_out() {
        let etcd = from_toml("").unwrap();
        assert_eq!(etcd.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(etcd.prefix, "jovian");
        assert_eq!(etcd.ttl, DEFAULT_TTL);
        assert_eq!(etcd.layout, Layout::Jupiter);
        let plain = from_toml("[registry]\nlayout = \"plain\"\nrelist_grace = \"0s\"").unwrap();
        assert_eq!(plain.layout, Layout::plain());
        assert_eq!(plain.relist_grace, Duration::ZERO, "no grace is a choice");
        let naming = from_toml("[registry]\nlayout = \"etcd-naming\"\nkey_template = \"svc/{name}/{addr}\"").unwrap();
        assert_eq!(naming.layout, Layout::etcd_naming().key_template("svc/{name}/{addr}"));
        let kratos = from_toml("[registry]\nlayout = \"kratos\"").unwrap();
        assert_eq!(kratos.layout, Layout::kratos());
        let kratos = from_toml("[registry]\nlayout = \"kratos\"\nkey_template = \"/{prefix}/{name}/{id}\"").unwrap();
        assert_eq!(kratos.layout, Layout::kratos().key_template("/{prefix}/{name}/{id}"));
        let go_zero = from_toml("[registry]\nlayout = \"go-zero\"").unwrap();
        assert_eq!(go_zero.layout, Layout::go_zero());
    }

    #[test]
    fn a_wrong_value_names_the_key_and_what_it_takes() {
        for (toml, key, says) in [
            ("[registry]\nttl = \"soon\"", "registry.ttl", "500ms"),
            ("[registry]\nttl = \"0ms\"", "registry.ttl", "greater than zero"),
            (
                "[registry]\nttl = \"1500ms\"",
                "registry.ttl",
                "whole number of seconds",
            ),
            (
                "[registry]\ndial_timeout = 0",
                "registry.dial_timeout",
                "greater than zero",
            ),
            (
                "[registry]\nrequest_timeout = \"0s\"",
                "registry.request_timeout",
                "greater than zero",
            ),
            ("[registry]\nendpont = [\"x\"]", "registry.endpont", "endpoints"),
            ("[registry]\nendpoints = 7", "registry.endpoints", "host:port"),
            ("[registry]\nlayout = \"flat\"", "registry.layout", "etcd-naming"),
            (
                "[registry]\nkey_template = \"{name}/{addr}\"",
                "registry.key_template",
                "jupiter",
            ),
            (
                "[registry]\nlayout = \"plain\"\nkey_template = \"/x/{addr}\"",
                "registry.key_template",
                "{name}",
            ),
            (
                "[registry]\nlayout = \"etcd-naming\"\nkey_template = \"{name}:{addr}\"",
                "registry.key_template",
                "/{addr}",
            ),
            (
                "[registry]\nlayout = \"kratos\"\nkey_template = \"/microservices/{name}-{id}\"",
                "registry.key_template",
                "{name}/{id}",
            ),
            (
                "[registry]\nlayout = \"kratos\"\nkey_template = \"/microservices/{name}/{addr}\"",
                "registry.key_template",
                "end with {id}",
            ),
            (
                "[registry]\nlayout = \"go-zero\"\nkey_template = \"{name}.rpc:{id}\"",
                "registry.key_template",
                "/{id}",
            ),
            ("[registry]\nlayout = \"gozero\"", "registry.layout", "go-zero"),
            ("[registry]\npassword = \"hunter2\"", "registry.user", "user"),
            ("[registry]\nkind = \"zookeeper\"", "registry.kind", "etcd"),
        ] {
            let error = from_toml(toml).unwrap_err();
            assert_eq!(key_of(&error), key, "{toml}: {error}");
            assert!(error.to_string().contains(says), "{toml}: {error}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }
}
