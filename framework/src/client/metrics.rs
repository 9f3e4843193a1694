//! The client's metric series, resolved once per method and per instance instead of by label
//! on every call.
//!
//! Calls are counted per method in the family go-grpc-prometheus gives Go clients
//! (`grpc_client_started_total`, `grpc_client_handled_total`, `grpc_client_handling_seconds`,
//! labelled `grpc_type`, `grpc_service`, `grpc_method` and `grpc_code`), so dashboards written
//! for Go services read jovian clients unchanged; attempts are counted per instance under
//! `jovian_client_*`, labelled by the jovian service and the instance's address.
//!
//! Label values stay bounded whatever callers do. A method's labels come from the
//! `tonic::GrpcMethod` a generated client puts on its requests, so they are bounded by the
//! compiled code; a request without one (a hand-made path) is labelled by its path only while
//! fewer than [`MAX_UNNAMED_METHODS`] such paths were seen in the process, and `unknown`
//! after. An instance's series are dropped when it leaves the instance set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter};
use tonic::Code;

use crate::metrics::{GRPC_CODE_NAMES, GrpcType, MethodSeries, grpc_code_name, metrics};

/// Paths without a `tonic::GrpcMethod` that get labels of their own, in the whole process.
pub(crate) const MAX_UNNAMED_METHODS: usize = 64;

/// The label value of every method past the bound.
pub(crate) const UNKNOWN: &str = "unknown";

/// Every method's series, by path and type, for the whole process: the `grpc_client_*`
/// series have no label a client could tell apart, so clients share them. Entries live as
/// long as the process (they are bounded), hence `&'static`.
#[derive(Default)]
struct Registry {
    methods: RwLock<HashMap<Box<str>, [Option<&'static MethodSeries>; 4]>>,
    unnamed: Mutex<usize>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn slot(grpc_type: GrpcType) -> usize {
    match grpc_type {
        GrpcType::Unary => 0,
        GrpcType::ClientStream => 1,
        GrpcType::ServerStream => 2,
        GrpcType::BidiStream => 3,
    }
}

/// What a client needs to label a call: the method's name if a generated client gave it.
pub(super) struct MethodName<'a> {
    pub(super) path: &'a str,
    pub(super) grpc: Option<(&'a str, &'a str)>,
}

fn resolve(grpc_type: GrpcType, name: &MethodName<'_>) -> &'static MethodSeries {
    let registry = registry();
    let lookup = |path: &str| {
        let methods = registry.methods.read().expect("client method metrics lock");
        methods.get(path).and_then(|slots| slots[slot(grpc_type)])
    };
    if let Some(found) = lookup(name.path) {
        return found;
    }
    let (key, service, method) = match name.grpc {
        Some((service, method)) => (name.path, service, method),
        None => {
            let split = name
                .path
                .strip_prefix('/')
                .and_then(|rest| rest.split_once('/'))
                .filter(|(service, method)| !service.is_empty() && !method.is_empty() && !method.contains('/'));
            let mut unnamed = registry.unnamed.lock().expect("client method metrics lock");
            match split {
                Some((service, method)) if *unnamed < MAX_UNNAMED_METHODS => {
                    *unnamed += 1;
                    (name.path, service, method)
                }
                // Every path past the bound shares the one `unknown` entry of its type.
                _ => match lookup(UNKNOWN) {
                    Some(found) => return found,
                    None => (UNKNOWN, UNKNOWN, UNKNOWN),
                },
            }
        }
    };
    let mut methods = registry.methods.write().expect("client method metrics lock");
    let slots = methods.entry(key.into()).or_default();
    slots[slot(grpc_type)].get_or_insert_with(|| Box::leak(Box::new(MethodSeries::client(grpc_type, service, method))))
}

/// A client's own small cache in front of the process's registry: most clients call a handful
/// of methods, found by a short scan with no lock and no hashing.
pub(super) struct Methods {
    seen: ArcSwap<Vec<(GrpcType, Box<str>, &'static MethodSeries)>>,
    adding: Mutex<()>,
}

/// Methods a client caches; calls to others go to the process's registry every time.
const CACHED: usize = 32;

impl Methods {
    pub(super) fn new() -> Self {
        Self {
            seen: ArcSwap::from_pointee(Vec::new()),
            adding: Mutex::new(()),
        }
    }

    /// The series of a call to `name` of type `grpc_type`.
    pub(super) fn get(&self, grpc_type: GrpcType, name: &MethodName<'_>) -> &'static MethodSeries {
        let seen = self.seen.load();
        if let Some((_, _, found)) = seen
            .iter()
            .find(|(kind, path, _)| *kind == grpc_type && **path == *name.path)
        {
            return found;
        }
        let found = resolve(grpc_type, name);
        if seen.len() < CACHED {
            let _adding = self.adding.lock().expect("client method cache lock");
            let mut grown = Vec::clone(&self.seen.load());
            if grown.len() < CACHED && !grown.iter().any(|(k, p, _)| *k == grpc_type && **p == *name.path) {
                grown.push((grpc_type, name.path.into(), found));
                self.seen.store(Arc::new(grown));
            }
        }
        found
    }
}

/// The series of attempts to one instance that every successful attempt touches.
pub(super) struct InstanceMetrics {
    pub(super) ok: IntCounter,
    pub(super) latency: Histogram,
}

impl InstanceMetrics {
    pub(super) fn new(service: &str, address: &str) -> Self {
        let m = metrics();
        Self {
            ok: m
                .client_attempts
                .with_label_values(&[service, address, grpc_code_name(Code::Ok)]),
            latency: m.client_attempt_seconds.with_label_values(&[service, address]),
        }
    }
}

/// Counts an attempt on `address` that ended with `code` (other than OK).
pub(super) fn attempt_failed(service: &str, address: &str, code: Code) {
    metrics()
        .client_attempts
        .with_label_values(&[service, address, grpc_code_name(code)])
        .inc();
}

/// Drops every series of `address` as an instance of `service`.
pub(super) fn forget_instance(service: &str, address: &str) {
    let m = metrics();
    for code in GRPC_CODE_NAMES {
        let _ = m.client_attempts.remove_label_values(&[service, address, code]);
    }
    let _ = m.client_attempt_seconds.remove_label_values(&[service, address]);
    let _ = m.client_ejections.remove_label_values(&[service, address]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_grpc_go_names() {
        for number in 0..17 {
            let code = Code::from_i32(number);
            assert_eq!(code as i32, number, "tonic numbers codes as gRPC does");
        }
        assert_eq!(grpc_code_name(Code::Ok), "OK");
        assert_eq!(grpc_code_name(Code::Cancelled), "Canceled");
        assert_eq!(grpc_code_name(Code::Unavailable), "Unavailable");
    }

    #[test]
    fn made_up_paths_stop_getting_labels_at_the_bound() {
        let methods = Methods::new();
        let named = MethodName {
            path: "/unit.Named/Call",
            grpc: Some(("unit.Named", "Call")),
        };
        let first = methods.get(GrpcType::Unary, &named);
        assert!(
            std::ptr::eq(first, methods.get(GrpcType::Unary, &named)),
            "resolved once"
        );
        let mut labelled = 0;
        for i in 0..(MAX_UNNAMED_METHODS * 2) {
            let path = format!("/unit.Junk{i}/Method");
            let got = methods.get(
                GrpcType::Unary,
                &MethodName {
                    path: &path,
                    grpc: None,
                },
            );
            if got.labels()[1] != UNKNOWN {
                labelled += 1;
            }
        }
        assert!(labelled <= MAX_UNNAMED_METHODS, "{labelled} made-up paths labelled");
        let unknown = methods.get(
            GrpcType::Unary,
            &MethodName {
                path: "/unit.Late/Method",
                grpc: None,
            },
        );
        assert_eq!(unknown.labels()[1], UNKNOWN);
        let again = methods.get(
            GrpcType::Unary,
            &MethodName {
                path: "/unit.Later/Method",
                grpc: None,
            },
        );
        assert!(
            std::ptr::eq(unknown, again),
            "every path past the bound shares one entry"
        );
        assert!(
            std::ptr::eq(first, methods.get(GrpcType::Unary, &named)),
            "named methods stay"
        );
    }
}
