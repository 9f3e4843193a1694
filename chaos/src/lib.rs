//! jovian's seeded fault-run program: throws random faults at real processes for a while, then
//! proves from the recorded history that nothing was lost and no call failed that should not
//! have.
//!
//! A run ([`run`]) starts an etcd cluster (three members, or one for the variant that also
//! wipes it), chaos servers (an `Echo` service on jovian's `App`, registered in etcd) and chaos
//! clients (callers on a `ServiceChannel`), each behind proxies the orchestrator can cut,
//! blackhole or slow. It plays a fault
//! [`schedule`] drawn from a seed, records a [`history`] of every call, snapshot, lifecycle
//! step and fault, and hands it to the [`check`]er, which states each invariant's bound and
//! every violation. The same seed gives the same schedule; a failing run prints the command
//! that replays it.

#![forbid(unsafe_code)]

pub mod check;
pub mod client;
pub mod clock;
pub mod history;
pub mod orchestrator;
pub mod process;
pub mod procs;
pub mod run;
pub mod schedule;
pub mod server;
pub mod timeline;
pub mod truth;

/// Code generated from `proto/chaos.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("chaos");
}
