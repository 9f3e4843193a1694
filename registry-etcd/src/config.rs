//! How to reach etcd: endpoints, prefix, lease TTL, timeouts, credentials and TLS.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use jovian::Error;

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
#[derive(Clone)]
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
}

/// PEM files for TLS to etcd.
#[derive(Clone, Debug, Default)]
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
        }
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

    /// The settings a jovian config's `[registry]` section gives.
    ///
    /// ```
    /// let config = jovian::Config::from_toml("[registry]\nendpoints = [\"10.0.0.1:2379\"]\nttl = \"15s\"").unwrap();
    /// let etcd = jovian_registry_etcd::EtcdConfig::from_registry_config(&config.registry).unwrap();
    /// assert_eq!(etcd.ttl, std::time::Duration::from_secs(15));
    /// assert_eq!(etcd.endpoints, ["10.0.0.1:2379"]);
    /// ```
    ///
    /// Fails on settings that cannot go together (a password without a user).
    pub fn from_registry_config(registry: &jovian::config::RegistryConfig) -> Result<Self, Error> {
        let mut config = Self::new(registry.endpoints.clone())
            .prefix(registry.prefix.clone())
            .ttl(registry.ttl)
            .dial_timeout(registry.dial_timeout)
            .request_timeout(registry.request_timeout)
            .keepalive(registry.keepalive_interval, registry.keepalive_timeout)
            .max_message_bytes(registry.max_message_bytes);
        if let Some(user) = &registry.user {
            config = config.credentials(user.clone(), registry.password.clone().unwrap_or_default());
        }
        if registry.user.is_none() && registry.password.is_some() {
            return Err(config_error(
                "registry.user",
                "the etcd user the password belongs to",
                "a password but no user",
            ));
        }
        config.tls = registry.tls.as_ref().map(|tls| TlsFiles {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            domain: tls.server_name.clone(),
        });
        Ok(config)
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
            .finish()
    }
}

impl TlsFiles {
    fn options(&self) -> Result<TlsOptions, Error> {
        let mut options = TlsOptions::new();
        if let Some(ca) = &self.ca {
            options = options.ca_certificate(Certificate::from_pem(read_pem("registry.tls.ca", ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("registry.tls.cert", cert)?;
                let key = read_pem("registry.tls.key", key)?;
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

fn read_pem(key: &str, path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| config_error(key, "a readable PEM file", &format!("{}: {e}", path.display())))
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

    #[test]
    fn the_registry_section_maps_over_and_keeps_the_password_secret() {
        let config = jovian::Config::from_toml(
            "[registry]\nendpoints = \"a:1,b:2\"\nkeepalive_interval = \"20s\"\nuser = \"svc\"\npassword = \"hunter2\"",
        )
        .unwrap();
        let etcd = EtcdConfig::from_registry_config(&config.registry).unwrap();
        assert_eq!(etcd.endpoints, ["a:1", "b:2"]);
        assert_eq!(etcd.keepalive_interval, Duration::from_secs(20));
        let debug = format!("{etcd:?}");
        assert!(!debug.contains("hunter2") && debug.contains("svc"), "{debug}");
    }

    #[test]
    fn a_password_without_a_user_names_the_missing_key() {
        let config = jovian::Config::from_toml("[registry]\npassword = \"hunter2\"").unwrap();
        let error = EtcdConfig::from_registry_config(&config.registry).unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "registry.user"),
            "{error}"
        );
    }
}
