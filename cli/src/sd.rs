//! Prometheus HTTP service discovery (`http_sd_configs`) of every governor in the registry.
//!
//! `GET /sd` (or `/`) answers a JSON array with one target group per governor:
//! `{"targets": ["host:port"], "labels": {"jovian_app": .., "jovian_hostname": .., ...}}`,
//! read from etcd on each request (Prometheus asks every `refresh_interval`). When etcd cannot
//! be read it answers 503, and Prometheus keeps the targets it last had.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jovian_registry_etcd::{EtcdRegistry, MetricsTarget};
use serde_json::{Map, Value, json};

use crate::CliError;

/// The HTTP SD answer for `targets`: one group per target, labelled `jovian_app`,
/// `jovian_hostname` and, from the App's registered servers, `jovian_service`, `jovian_zone`,
/// `jovian_region`, `jovian_version` (several distinct values are joined with `,`; empty
/// labels are left out).
pub fn sd_groups(targets: &[MetricsTarget]) -> Value {
    let groups: Vec<Value> = targets
        .iter()
        .map(|target| {
            let mut labels = Map::new();
            let mut label = |name: &str, value: String| {
                if !value.is_empty() {
                    labels.insert(name.to_owned(), Value::String(value));
                }
            };
            let joined = |field: fn(&jovian::ServiceInfo) -> &str| {
                let values: BTreeSet<&str> = target.instances.iter().map(field).filter(|v| !v.is_empty()).collect();
                values.into_iter().collect::<Vec<_>>().join(",")
            };
            label("jovian_app", target.app.clone());
            label("jovian_hostname", target.hostname.clone());
            label("jovian_service", joined(|i| &i.name));
            label("jovian_zone", joined(|i| &i.zone));
            label("jovian_region", joined(|i| &i.region));
            label("jovian_version", joined(|i| &i.version));
            json!({ "targets": [target.target], "labels": labels })
        })
        .collect();
    Value::Array(groups)
}

pub(crate) async fn serve(registry: Arc<EtcdRegistry>, listen: SocketAddr) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        CliError(format!(
            "cannot listen on {listen}: {e}; is the port in use or the address not local?"
        ))
    })?;
    let bound = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    let router = Router::new()
        .route("/sd", get(answer))
        .route("/", get(answer))
        .with_state(registry);
    println!("serving Prometheus HTTP SD at http://{bound}/sd");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CliError(format!("HTTP SD server failed: {e}")))
}

async fn answer(State(registry): State<Arc<EtcdRegistry>>) -> Response {
    match registry.metrics_targets().await {
        Ok(targets) => (
            [(header::CONTENT_TYPE, "application/json")],
            sd_groups(&targets).to_string(),
        )
            .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
    }
}
