//! The clients this process holds, for the governor's `/debug/registry` view.

use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use super::balancer::Balancer;
use crate::ServiceInfo;

static LIVE: Mutex<Vec<Weak<Balancer>>> = Mutex::new(Vec::new());

/// One client as the governor shows it.
#[derive(Serialize)]
pub(crate) struct ClientView {
    service: String,
    policy: &'static str,
    filter: String,
    instances: Vec<InstanceView>,
}

/// One instance a client may call, with what the client knows of it.
#[derive(Serialize)]
pub(crate) struct InstanceView {
    #[serde(flatten)]
    info: ServiceInfo,
    ejected: bool,
    in_flight: usize,
    latency_us: u64,
}

pub(super) fn announce(balancer: &Arc<Balancer>) {
    let mut live = LIVE.lock().expect("live clients lock");
    live.retain(|b| b.strong_count() > 0);
    live.push(Arc::downgrade(balancer));
}

/// Every client still in use.
pub(crate) fn live_clients() -> Vec<ClientView> {
    let live: Vec<Arc<Balancer>> = LIVE
        .lock()
        .expect("live clients lock")
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    live.iter()
        .map(|balancer| ClientView {
            service: balancer.service().to_owned(),
            policy: balancer.options().policy.name(),
            filter: balancer.options().filter.to_string(),
            instances: balancer
                .instance_states()
                .into_iter()
                .map(|(info, ejected, in_flight, latency_us)| InstanceView {
                    info,
                    ejected,
                    in_flight,
                    latency_us,
                })
                .collect(),
        })
        .collect()
}
