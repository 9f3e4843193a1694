//! Connecting to etcd: several endpoints with a dead one, nobody answering at startup,
//! user/password authentication, and TLS with a client certificate.

use std::time::{Duration, Instant};

use etcd_client::Permission;
use jovian::{Discovery, Error, Registrar, ServiceInfo};
use jovian_registry_etcd::{EtcdConfig, EtcdRegistry, TlsFiles};
use jovian_tests::etcd::{EtcdCluster, EtcdOptions, free_port};
use jovian_tests::pki::Pki;
use jovian_tests::{eventually, init_logging, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_among_several_costs_nothing() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let config = EtcdConfig::new([dead.clone(), etcd.endpoint(0), dead]);
    let registry = within(Duration::from_secs(1), "connecting", EtcdRegistry::connect(config))
        .await
        .unwrap();
    let started = Instant::now();
    for port in 1..=20 {
        registry
            .register(&ServiceInfo::new("multi", format!("127.0.0.1:{port}")))
            .await
            .unwrap();
        assert_eq!(registry.list("multi").await.unwrap().len(), port as usize);
    }
    let mut watch = registry.watch("multi").await.unwrap();
    assert_eq!(watch.current().len(), 20);
    // 40 requests with a dead member in rotation: each retried at once, none waits for a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "40 requests took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answering_at_startup_is_an_error_naming_the_endpoints() {
    init_logging();
    let endpoints = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let config = EtcdConfig::new(endpoints.clone()).dial_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let error = EtcdRegistry::connect(config).await.err().expect("connected to nothing");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, Error::Unreachable { .. }), "{error}");
    let message = error.to_string();
    for endpoint in &endpoints {
        assert!(
            message.contains(endpoint.as_str()),
            "{message} does not name {endpoint}"
        );
    }
}

/// The same through the config, under every layout (their probes read different ranges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_config_with_nobody_answering_is_an_error_naming_the_endpoints() {
    init_logging();
    for layout in ["jupiter", "etcd-naming", "plain"] {
        let endpoints = [
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ];
        let config = jovian::Config::from_toml(&format!(
            "[registry]\nendpoints = \"{}\"\ndial_timeout = \"700ms\"\nlayout = \"{layout}\"",
            endpoints.join(",")
        ))
        .unwrap();
        let error = jovian_registry_etcd::from_config(&config)
            .await
            .err()
            .expect("connected to nothing");
        assert!(matches!(error, Error::Unreachable { .. }), "{layout}: {error}");
        let message = error.to_string();
        for endpoint in &endpoints {
            assert!(
                message.contains(endpoint.as_str()),
                "{layout}: {message} does not name {endpoint}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_at_startup_fails_within_the_dial_timeout() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    etcd.pause(0);
    let config = EtcdConfig::new(etcd.endpoints()).dial_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let error = EtcdRegistry::connect(config)
        .await
        .err()
        .expect("connected to a frozen etcd");
    etcd.resume(0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failing took {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains(&etcd.endpoint(0)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_with_a_role_covering_only_the_prefix() {
    init_logging();
    // Tokens live 1 s, so the registry must keep working across token expiry.
    let options = EtcdOptions {
        extra_args: vec!["--auth-token-ttl=1".into()],
        ..Default::default()
    };
    let etcd = EtcdCluster::start(1, options).await;
    let mut admin = etcd.client().await;
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("jovian").await.unwrap();
    admin
        .role_grant_permission("jovian", Permission::read_write("/jovian/").with_prefix())
        .await
        .unwrap();
    admin.user_add("svc", "svc-pw", None).await.unwrap();
    admin.user_grant_role("svc", "jovian").await.unwrap();
    admin.user_add("outsider", "outsider-pw", None).await.unwrap();
    admin.auth_enable().await.unwrap();

    let config = |user: &str, password: &str| EtcdConfig::new(etcd.endpoints()).credentials(user, password);
    let registry = EtcdRegistry::connect(config("svc", "svc-pw"))
        .await
        .expect("the prefix's user connects");
    let reader = EtcdRegistry::connect(config("svc", "svc-pw")).await.unwrap();
    registry
        .register(&ServiceInfo::new("authed", "127.0.0.1:1"))
        .await
        .unwrap();
    let mut watch = reader.watch("authed").await.unwrap();
    assert_eq!(watch.current().len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await; // past the token TTL
    registry
        .register(&ServiceInfo::new("authed", "127.0.0.1:2"))
        .await
        .expect("works after the token expired");
    within(
        Duration::from_secs(5),
        "the second instance",
        watch.wait_for(|e| e.len() == 2),
    )
    .await
    .unwrap();

    let denied = EtcdRegistry::connect(config("outsider", "outsider-pw"))
        .await
        .err()
        .expect("a user without the prefix connected");
    assert!(
        matches!(denied, Error::PermissionDenied { .. }) && denied.to_string().contains("permission"),
        "{denied}"
    );
    let wrong = EtcdRegistry::connect(config("svc", "wrong"))
        .await
        .err()
        .expect("a wrong password connected");
    assert!(
        matches!(
            wrong,
            Error::Registry {
                operation: "authenticate",
                ..
            }
        ),
        "{wrong}"
    );
    // Failed on the old code: a user etcd does not know was "cannot reach the registry".
    let unknown = EtcdRegistry::connect(config("nobody", "pw"))
        .await
        .err()
        .expect("an unknown user connected");
    assert!(
        matches!(
            unknown,
            Error::Registry {
                operation: "authenticate",
                ..
            }
        ),
        "{unknown}"
    );
    let anonymous = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()))
        .await
        .err()
        .expect("a client without credentials connected");
    assert!(
        anonymous.to_string().contains("registry.user"),
        "no credentials where etcd wants them: {anonymous}"
    );
    registry.close().await.unwrap();
    assert!(
        reader.list("authed").await.unwrap().is_empty(),
        "close revoked the lease under auth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let options = EtcdOptions {
        tls: true,
        extra_args: vec![
            format!("--cert-file={}", pki.server_cert.display()),
            format!("--key-file={}", pki.server_key.display()),
            format!("--trusted-ca-file={}", pki.ca.display()),
            "--client-cert-auth".into(),
        ],
        ..EtcdOptions::default()
    };
    let etcd = EtcdCluster::start(1, options).await;
    let tls = TlsFiles::default()
        .ca(&pki.ca)
        .identity(&pki.client_cert, &pki.client_key);
    let config = EtcdConfig::new(etcd.endpoints()).tls(tls.clone());
    let registry = eventually(Duration::from_secs(20), "etcd to serve TLS", || async {
        EtcdRegistry::connect(config.clone()).await.ok()
    })
    .await;
    registry
        .register(&ServiceInfo::new("tls", "127.0.0.1:1"))
        .await
        .unwrap();
    assert_eq!(registry.list("tls").await.unwrap().len(), 1);

    let without_cert = TlsFiles::default().ca(&pki.ca);
    let config = EtcdConfig::new(etcd.endpoints())
        .tls(without_cert)
        .dial_timeout(Duration::from_secs(1));
    assert!(
        EtcdRegistry::connect(config).await.is_err(),
        "connected without a client certificate"
    );

    let missing = TlsFiles::default().ca(dir.path().join("nope.pem"));
    let error = EtcdRegistry::connect(EtcdConfig::new(etcd.endpoints()).tls(missing))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&error, Error::Config { key, .. } if key == "registry.tls.ca"),
        "{error}"
    );
}

/// A registry that does not answer in time is a timeout, not a generic failure: callers (and
/// operators reading the message) can tell it from a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_is_a_typed_timeout() {
    init_logging();
    let etcd = EtcdCluster::single().await;
    let config = EtcdConfig::new(etcd.endpoints()).request_timeout(Duration::from_millis(500));
    let registry = EtcdRegistry::connect(config).await.unwrap();
    etcd.pause(0);
    let error = registry.list("frozen").await.unwrap_err();
    etcd.resume(0);
    assert!(
        matches!(error, Error::RegistryTimeout { operation: "list", after, .. } if after == Duration::from_millis(500)),
        "{error}"
    );
    assert!(error.to_string().contains("registry.request_timeout"), "{error}");
}
