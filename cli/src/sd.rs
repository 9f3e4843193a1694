//! Prometheus HTTP service discovery (`http_sd_configs`) of every governor in the registry.
//!
//! `GET /sd` (or `/`) answers a JSON array with one target group per governor:
//! `{"targets": ["host:port"], "labels": {"jovian_app": .., "jovian_hostname": .., ...}}`,
//! read from etcd on each request (Prometheus asks every `refresh_interval`). When etcd cannot
//! be read it answers 503, and Prometheus keeps the targets it last had. The document and the
//! answer are [`jovian::sd`]'s, the same an App's governor serves at its own `/sd`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use jovian_registry_etcd::EtcdRegistry;

use crate::CliError;

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
    jovian::sd::answer(registry.as_ref()).await
}
