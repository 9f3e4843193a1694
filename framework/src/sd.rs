//! Prometheus HTTP service discovery: the governors' metrics targets a registry knows, and the
//! one document both the governor's `GET /sd` and `jovianctl sd` answer with.
//!
//! An App with a governor registers it as an [`EntryKind::Governor`](crate::service::EntryKind)
//! entry; [`Discovery::metrics_targets`] reads every such entry back as a [`MetricsTarget`],
//! with the provider entries of the same App for labels. [`document`] turns them into what
//! Prometheus' `http_sd_configs` reads: a JSON array of
//! `{"targets": ["host:port"], "labels": {...}}`, one group per governor.
//!
//! ```
//! use jovian::ServiceInfo;
//! use jovian::sd::{MetricsTarget, document};
//!
//! let target = MetricsTarget::new("shop", "host-a", "10.0.0.7:9090")
//!     .with_instances(vec![ServiceInfo::new("greeter", "10.0.0.7:50051").with_zone("z1")]);
//! let groups = document(&[target]);
//! assert_eq!(groups[0]["targets"][0], "10.0.0.7:9090");
//! assert_eq!(groups[0]["labels"]["jovian_service"], "greeter");
//! assert_eq!(groups[0]["labels"]["jovian_zone"], "z1");
//! ```

use std::collections::BTreeSet;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::{Discovery, ServiceInfo};

pub use crate::registry::MetricsTarget;

/// The HTTP SD document for `targets`: one group per target, labelled `jovian_app`,
/// `jovian_hostname` and, from the App's registered servers, `jovian_service`, `jovian_zone`,
/// `jovian_region`, `jovian_version` (several distinct values are joined with `,`, sorted;
/// empty labels are left out).
pub fn document(targets: &[MetricsTarget]) -> Value {
    let groups: Vec<Value> = targets
        .iter()
        .map(|target| {
            let mut labels = Map::new();
            let mut label = |name: &str, value: String| {
                if !value.is_empty() {
                    labels.insert(name.to_owned(), Value::String(value));
                }
            };
            let joined = |field: fn(&ServiceInfo) -> &str| {
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

/// The HTTP answer to a Prometheus HTTP SD request, read from `discovery` now: `200` with the
/// [`document`] as `application/json`, or `503` with the error when the registry cannot be
/// read (Prometheus then keeps the targets it last had).
pub async fn answer<D: Discovery + ?Sized>(discovery: &D) -> Response {
    match discovery.metrics_targets().await {
        Ok(targets) => (
            [(header::CONTENT_TYPE, "application/json")],
            document(&targets).to_string(),
        )
            .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
    }
}
