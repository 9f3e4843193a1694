//! The governor: an HTTP endpoint on its own port for operators and scrapers.
//!
//! - `GET /metrics`: every jovian metric, Prometheus text format.
//! - `GET /healthz`: `200 ok` while the App runs, `503 stopping` once it stops.
//! - `GET /debug/registry`: JSON of what this process registered and, for every client it
//!   holds, the instances and their state (ejected, calls in flight, latency).
//! - `GET /sd`: Prometheus HTTP service discovery (`http_sd_configs`) of every governor in the
//!   App's registry, read on each request ([`crate::sd`]; the document `jovianctl sd` serves),
//!   so Prometheus pointed at any one App's governor finds them all. `503` while the registry
//!   cannot be read, or when the App has none.
//!
//! It runs only when configured (`[governor] enabled`, or `App::governor`). The App then
//! registers its address under `/prometheus/job/{app}/{host}/{address}` (an `EntryKind::Governor`
//! entry), so a Prometheus file or etcd service discovery finds every instance's `/metrics`.
//! The address is `governor.advertise` when set, else the one bound, which must then not be
//! `0.0.0.0`: what is registered is what a remote scraper dials.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Registry, Result, ServiceInfo};

/// What the governor reports about its App.
#[derive(Clone, Default)]
pub(crate) struct GovernorState {
    pub(crate) registrations: Arc<Mutex<Vec<ServiceInfo>>>,
    pub(crate) stopping: Arc<AtomicBool>,
    /// The App's registry, for `/sd`.
    pub(crate) registry: Option<Arc<dyn Registry>>,
}

pub(crate) struct Governor {
    pub(crate) local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Governor {
    pub(crate) async fn start(bind: SocketAddr, state: GovernorState) -> Result<Self> {
        let (listener, local_addr) = crate::server::listen(bind).await?;
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/debug/registry", get(debug_registry))
            .route("/sd", get(service_discovery))
            .with_state(state);
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::warn!(%error, "governor stopped");
            }
        });
        Ok(Self { local_addr, stop, task })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

async fn healthz(axum::extract::State(state): axum::extract::State<GovernorState>) -> impl IntoResponse {
    match state.stopping.load(Ordering::Relaxed) {
        false => (StatusCode::OK, "ok\n"),
        true => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}

#[derive(Serialize)]
struct DebugView {
    registrations: Vec<ServiceInfo>,
    clients: Vec<crate::client::ClientView>,
}

async fn debug_registry(axum::extract::State(state): axum::extract::State<GovernorState>) -> impl IntoResponse {
    let registrations = state.registrations.lock().expect("governor state lock").clone();
    axum::Json(DebugView {
        registrations,
        clients: crate::client::live_clients(),
    })
}

async fn service_discovery(
    axum::extract::State(state): axum::extract::State<GovernorState>,
) -> axum::response::Response {
    match &state.registry {
        Some(registry) => crate::sd::answer(registry.as_ref()).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this App has no registry to discover governors in\n",
        )
            .into_response(),
    }
}
