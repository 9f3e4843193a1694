//! Configuration precedence (defaults < file < environment < code), error messages, and that
//! nothing is read unless asked, with the environment and working directory sandboxed by
//! figment's `Jail`.

// `Jail` closures must return figment's (large) error type.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use figment::Jail;
use jovian::{App, Config, Discovery, Error, Registrar};
use jovian_registry_etcd::{EtcdConfig, Layout};

fn check<T>(result: jovian::Result<T>) -> Result<T, figment::Error> {
    result.map_err(|e| figment::Error::from(e.to_string()))
}

/// The `[registry]` section as the etcd registry reads it.
fn etcd(config: &Config) -> Result<EtcdConfig, figment::Error> {
    check(EtcdConfig::from_registry_config(&config.registry))
}

#[test]
fn file_then_environment_then_code() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "jovian.toml",
            r#"
            name = "from-file"
            drain_delay = "2s"
            shutdown_deadline = "7s"
            [registry]
            ttl = "4s"
            endpoints = ["10.0.0.1:2379"]
            [clients.greeter]
            policy = "p2c"
            "#,
        )?;
        let config = check(Config::load())?;
        assert_eq!(config.name, "from-file");
        assert_eq!(config.drain_delay, Duration::from_secs(2));
        assert_eq!(etcd(&config)?.endpoints, vec!["10.0.0.1:2379"]);
        assert_eq!(
            etcd(&config)?.prefix,
            "jovian",
            "defaults fill what the file leaves out"
        );

        jail.set_env("JOVIAN_DRAIN_DELAY", "3s");
        jail.set_env("JOVIAN_REGISTRY__TTL", "5s");
        jail.set_env("JOVIAN_CLIENTS__GREETER__ZONE", "z1");
        let config = check(Config::load())?;
        assert_eq!(
            config.drain_delay,
            Duration::from_secs(3),
            "the environment beats the file"
        );
        assert_eq!(etcd(&config)?.ttl, Duration::from_secs(5), "__ nests");
        assert_eq!(
            config.shutdown_deadline,
            Duration::from_secs(7),
            "the file still counts"
        );
        let client = check(config.client("greeter").map(|_| config.clone()))?.clients["greeter"].clone();
        assert_eq!(
            (client.policy, client.zone.as_deref()),
            (jovian::config::PolicyName::P2c, Some("z1"))
        );

        let app = App::from_config(check(Config::load())?)
            .drain_delay(Duration::from_secs(4))
            .name("from-code");
        let resolved = check(app.resolved_config())?;
        assert_eq!(
            resolved.drain_delay,
            Duration::from_secs(4),
            "code beats the environment"
        );
        assert_eq!(resolved.name, "from-code");
        assert_eq!(resolved.shutdown_deadline, Duration::from_secs(7));
        Ok(())
    });
}

#[test]
fn jovian_config_names_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file("elsewhere.toml", "name = \"elsewhere\"")?;
        jail.set_env("JOVIAN_CONFIG", "elsewhere.toml");
        assert_eq!(check(Config::load())?.name, "elsewhere");
        jail.set_env("JOVIAN_CONFIG", "missing.toml");
        let error = Config::load().unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "JOVIAN_CONFIG"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn a_wrong_type_names_the_key_whether_in_the_file_or_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("jovian.toml", "[registry]\nttl = \"soon\"")?;
        let config = check(Config::load())?;
        let error = EtcdConfig::from_registry_config(&config.registry).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "registry.ttl"),
            "{message}"
        );
        assert!(message.contains("\"2s\"") && message.contains("soon"), "{message}");

        jail.create_file("jovian.toml", "")?;
        jail.set_env("JOVIAN_GOVERNOR__ENABLED", "sometimes");
        let error = Config::load().unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "governor.enabled"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn the_annotated_example_config_is_valid() {
    let config = Config::from_toml(include_str!("../../examples/jovian.toml")).expect("examples/jovian.toml parses");
    assert_eq!(config.name, "greeter");
    config.client("greeter").expect("its client section is valid");
    assert!(config.servers.contains_key("greeter"));
    EtcdConfig::from_registry_config(&config.registry).expect("its registry section is valid for etcd");
}

/// Every key of `[clients.NAME]` and `[servers.NAME]` (taken from the types, so a new setting
/// is a new key) is shown in the annotated example, set or commented out.
#[test]
fn the_annotated_example_config_shows_every_client_and_server_key() {
    let example = include_str!("../../examples/jovian.toml");
    let shown = |key: &str| {
        example
            .lines()
            .map(|line| line.trim_start_matches(['#', ' ']))
            .any(|line| {
                line.starts_with(&format!("{key} ="))
                    || line.starts_with(&format!("[clients.greeter.{key}"))
                    || line.starts_with(&format!("[servers.greeter.{key}"))
            })
    };
    let keys = |value: serde_json::Value| match value {
        serde_json::Value::Object(map) => map.keys().cloned().collect::<Vec<_>>(),
        other => panic!("not a table: {other}"),
    };
    let client = keys(serde_json::to_value(jovian::config::ClientConfig::default()).unwrap());
    let server = keys(serde_json::to_value(jovian::config::ServerConfig::default()).unwrap());
    assert!(client.len() > 20 && server.len() > 20, "{client:?} {server:?}");
    let missing: Vec<_> = client.iter().chain(&server).filter(|key| !shown(key)).collect();
    assert!(missing.is_empty(), "examples/jovian.toml does not show {missing:?}");
}

/// Failed on the old code: `App::new()` loaded `jovian.toml` and `JOVIAN_*` by itself, so a
/// stray variable in a test's environment changed (or broke) every App the test made.
#[test]
fn an_app_reads_neither_the_file_nor_the_environment_unless_asked() {
    Jail::expect_with(|jail| {
        jail.create_file("jovian.toml", "name = \"from-file\"\ndrain_delay = \"9s\"")?;
        jail.set_env("JOVIAN_SHUTDOWN_DEADLINE", "7s");
        jail.set_env("JOVIAN_GOVERNOR__ENABLED", "true");
        let resolved = check(App::new().resolved_config())?;
        assert_eq!(
            resolved,
            Config::default(),
            "App::new() is the defaults, whatever is around"
        );

        jail.set_env("JOVIAN_DRAIN_DELAY", "not a duration");
        check(App::new().name("x").resolved_config()).expect("a broken variable breaks nothing it was not asked for");
        assert!(Config::load().is_err(), "loading, when asked, does see it");
        jail.set_env("JOVIAN_DRAIN_DELAY", "9s");

        let loaded = check(App::from_config(check(Config::load())?).resolved_config())?;
        assert_eq!(loaded.name, "from-file");
        assert_eq!(loaded.shutdown_deadline, Duration::from_secs(7));
        assert!(loaded.governor.enabled);
        Ok(())
    });
}

#[test]
fn server_sections_take_transport_settings_and_name_their_keys_in_errors() {
    let config = Config::from_toml(
        r#"
        [servers.inventory]
        port = 50051
        max_concurrent_streams = 128
        concurrency_limit_per_connection = 16
        http2_keepalive_interval = "30s"
        max_connection_age = "5m"
        [servers.inventory.tls]
        cert = "/etc/inventory/cert.pem"
        key = "/etc/inventory/key.pem"
        "#,
    )
    .unwrap();
    let inventory = &config.servers["inventory"];
    assert_eq!(inventory.max_concurrent_streams, Some(128));
    assert_eq!(inventory.http2_keepalive_interval, Some(Duration::from_secs(30)));
    assert_eq!(inventory.max_connection_age, Some(Duration::from_secs(300)));
    assert_eq!(inventory.tcp_keepalive, None, "unset stays tonic's default");
    assert_eq!(
        inventory.tls.as_ref().map(|tls| tls.cert.clone()),
        Some("/etc/inventory/cert.pem".into())
    );
    for (toml, key) in [
        ("[servers.s]\nmax_streams = 1", "servers.s.max_streams"),
        (
            "[servers.s]\nhttp2_keepalive_interval = \"0s\"",
            "servers.s.http2_keepalive_interval",
        ),
        ("[servers.s]\ntcp_keepalive = \"soon\"", "servers.s.tcp_keepalive"),
        (
            "[servers.s.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"",
            "servers.s.tls.ca",
        ),
    ] {
        let error = Config::from_toml(toml).unwrap_err();
        assert!(
            matches!(&error, Error::Config { key: k, .. } if k == key),
            "{toml}: {error}"
        );
    }
}

/// Every `[registry]` key the etcd crate reads can come from `JOVIAN_REGISTRY__*`, and a wrong
/// one names the key whether it came from the file or the environment.
#[test]
fn registry_keys_come_from_the_environment_too() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "jovian.toml",
            "[registry]\nendpoints = [\"10.0.0.1:2379\"]\nttl = \"4s\"",
        )?;
        jail.set_env("JOVIAN_REGISTRY__ENDPOINTS", "10.0.0.2:2379,10.0.0.3:2379");
        jail.set_env("JOVIAN_REGISTRY__PREFIX", "jupiter");
        jail.set_env("JOVIAN_REGISTRY__LAYOUT", "plain");
        jail.set_env("JOVIAN_REGISTRY__KEY_TEMPLATE", "/services/{prefix}/{name}/{addr}");
        jail.set_env("JOVIAN_REGISTRY__KEEPALIVE_INTERVAL", "20s");
        jail.set_env("JOVIAN_REGISTRY__RELIST_GRACE", "0s");
        jail.set_env("JOVIAN_REGISTRY__USER", "svc");
        jail.set_env("JOVIAN_REGISTRY__PASSWORD", "hunter2");
        jail.set_env("JOVIAN_REGISTRY__TLS__SERVER_NAME", "etcd.internal");
        let config = check(Config::load())?;
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let etcd = etcd(&config)?;
        assert_eq!(
            etcd.endpoints,
            ["10.0.0.2:2379", "10.0.0.3:2379"],
            "one comma-separated string"
        );
        assert_eq!(etcd.ttl, Duration::from_secs(4), "the file still counts");
        assert_eq!(etcd.prefix, "jupiter");
        assert_eq!(
            etcd.layout,
            Layout::plain().key_template("/services/{prefix}/{name}/{addr}")
        );
        assert_eq!(etcd.keepalive_interval, Duration::from_secs(20));
        assert_eq!(etcd.relist_grace, Duration::ZERO);
        assert_eq!(etcd.credentials, Some(("svc".into(), "hunter2".into())));
        assert_eq!(etcd.tls.and_then(|tls| tls.domain).as_deref(), Some("etcd.internal"));

        for (variable, value, key) in [
            ("JOVIAN_REGISTRY__LAYOUT", "flat", "registry.layout"),
            ("JOVIAN_REGISTRY__KEY_TEMPLATE", "/x/{addr}", "registry.key_template"),
            ("JOVIAN_REGISTRY__TTL", "soon", "registry.ttl"),
            ("JOVIAN_REGISTRY__ENDPONTS", "a:1", "registry.endponts"),
            ("JOVIAN_REGISTRY__KIND", "zookeeper", "registry.kind"),
        ] {
            jail.set_env(variable, value);
            let error = EtcdConfig::from_registry_config(&check(Config::load())?.registry).unwrap_err();
            assert!(
                matches!(&error, Error::Config { key: k, .. } if k == key),
                "{variable}={value}: {error}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
            jail.clear_env();
        }
        Ok(())
    });
}

/// `from_config` builds what `kind` names: an in-process registry for `memory`, and an error
/// naming `registry.kind` for a kind nobody builds.
#[test]
fn from_config_builds_the_kind_the_config_names() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    Jail::expect_with(|jail| {
        jail.set_env("JOVIAN_REGISTRY__KIND", "memory");
        jail.set_env("JOVIAN_REGISTRY__TTL", "3s");
        let config = check(Config::load())?;
        let registry = check(runtime.block_on(jovian_registry_etcd::from_config(&config)))?;
        runtime.block_on(async {
            registry
                .register(&jovian::ServiceInfo::new("cfg", "127.0.0.1:1"))
                .await
                .unwrap();
            assert_eq!(registry.list("cfg").await.unwrap().len(), 1, "a working registry");
        });
        jail.set_env("JOVIAN_REGISTRY__ENDPOINTS", "a:1");
        let error = runtime
            .block_on(jovian_registry_etcd::from_config(&check(Config::load())?))
            .err()
            .expect("an etcd key in a memory section");
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "registry.endpoints"),
            "{error}"
        );
        jail.set_env("JOVIAN_REGISTRY__KIND", "zookeeper");
        let error = runtime
            .block_on(jovian_registry_etcd::from_config(&check(Config::load())?))
            .err()
            .expect("an unknown kind");
        assert!(
            matches!(&error, Error::Config { key, expected, .. } if key == "registry.kind" && expected.contains("memory")),
            "{error}"
        );
        Ok(())
    });
}

/// `[servers.NAME]`'s registration fields are what the server registers; what the code set
/// with `map_info` wins, and the metadata of both is merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sections_set_what_the_server_registers() {
    let store = jovian_registry_memory::MemoryStore::new();
    let config = Config::from_toml(
        r#"
        [servers.orders]
        zone = "z1"
        region = "r1"
        weight = 50
        version = "v2"
        group = "blue"
        deployment = "canary"
        mode = "prod"
        [servers.orders.metadata]
        team = "payments"
        tier = "gold"
        "#,
    )
    .unwrap();
    let running = App::from_config(config)
        .registry(store.registry())
        .drain_delay(Duration::ZERO)
        .serve(
            jovian_examples::greeter_server("orders")
                .map_info(|info| info.with_zone("z9").with_metadata("tier", "code")),
        )
        .start()
        .await
        .unwrap();
    let registered = store.registry().list("orders").await.unwrap();
    let info = registered.iter().next().expect("the server registered");
    assert_eq!(info.zone, "z9", "the code's zone wins");
    assert_eq!(
        (info.region.as_str(), info.weight, info.version.as_str()),
        ("r1", 50, "v2")
    );
    assert_eq!(
        (info.group.as_str(), info.deployment.as_str(), info.mode.as_str()),
        ("blue", "canary", "prod")
    );
    assert_eq!(info.metadata["team"], "payments");
    assert_eq!(info.metadata["tier"], "code", "the code's label wins");
    running.stop().await.unwrap();

    for (toml, key) in [
        ("[servers.s]\nweight = \"heavy\"", "servers.s.weight"),
        ("[servers.s.metadata]\nreplicas = 3", "servers.s.metadata.replicas"),
        ("[servers.s]\nlabels = { a = \"b\" }", "servers.s.labels"),
    ] {
        let error = Config::from_toml(toml).unwrap_err();
        assert!(
            matches!(&error, Error::Config { key: k, .. } if k == key),
            "{toml}: {error}"
        );
    }
}

/// The `[app]` section is the application's: jovian does not check it, the application reads it
/// as its own type (from the file and `JOVIAN_APP__*`), and a wrong value names the key.
#[test]
fn the_app_section_belongs_to_the_application() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Orders {
        greeting: String,
        max_orders: u32,
        limits: std::collections::BTreeMap<String, u32>,
    }
    Jail::expect_with(|jail| {
        jail.create_file(
            "jovian.toml",
            r#"
            name = "orders"
            [app]
            greeting = "hello"
            max_orders = 20
            [app.limits]
            ada = 3
            "#,
        )?;
        jail.set_env("JOVIAN_APP__MAX_ORDERS", "25");
        let config = check(Config::load())?;
        let orders: Orders = check(config.app())?;
        assert_eq!(orders.greeting, "hello");
        assert_eq!(orders.max_orders, 25, "the environment beats the file here too");
        assert_eq!(orders.limits["ada"], 3);

        jail.set_env("JOVIAN_APP__MAX_ORDERS", "many");
        let config = check(Config::load())?;
        let error = config.app::<Orders>().unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "app.max_orders"),
            "{error}"
        );
        Ok(())
    });
}

/// `[clients.NAME] addresses` calls fixed addresses, balanced, without any registry; a bad
/// address names the key; a section without them still needs a registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sections_with_addresses_need_no_registry() {
    use jovian_examples::{GreeterClient, HelloRequest, replying_address};
    let servers = [
        App::new()
            .drain_delay(Duration::ZERO)
            .serve(jovian_examples::greeter_server("greeter")),
        App::new()
            .drain_delay(Duration::ZERO)
            .serve(jovian_examples::greeter_server("greeter")),
    ];
    let mut running = Vec::new();
    for app in servers {
        running.push(app.start().await.unwrap());
    }
    let addresses: Vec<String> = running.iter().map(|r| r.local_addrs()[0].to_string()).collect();
    let config = Config::from_toml(&format!(
        "[clients.greeter]\naddresses = [\"{}\", \"{}\"]",
        addresses[0], addresses[1]
    ))
    .unwrap();
    let app = App::from_config(config);
    let channel = app.client("greeter").await.unwrap();
    assert_eq!(channel.instance_count(), 2);
    let mut replied = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let reply = GreeterClient::new(channel.clone())
            .say_hello(HelloRequest { name: "t".into() })
            .await
            .unwrap();
        replied.insert(replying_address(&reply.into_inner().message).to_owned());
    }
    assert_eq!(replied, addresses.iter().cloned().collect(), "both addresses answered");
    assert!(
        matches!(app.client("other").await, Err(Error::NoRegistry)),
        "a section without addresses still needs a registry"
    );

    for bad in ["10.0.0.1", "grpc://10.0.0.1:1", ""] {
        let config = Config::from_toml(&format!("[clients.greeter]\naddresses = [\"{bad}\"]")).unwrap();
        let error = App::from_config(config).client("greeter").await.unwrap_err();
        assert!(
            matches!(&error, Error::Config { key, .. } if key == "clients.greeter.addresses"),
            "{bad:?}: {error}"
        );
    }
    for running in running {
        running.stop().await.unwrap();
    }
}
