//! A jovian channel whose connection to a grpc-go server (default settings) sits idle for
//! longer than grpc-go's keepalive enforcement's MinTime (5 minutes) still serves the next
//! call, and was never sent GOAWAY `too_many_pings` meanwhile: grpc-go counts any ping on a
//! connection without calls as a strike, so the client must not ping idle connections.

use std::time::Duration;

use jovian_interop::proto::Empty;
use jovian_tests::within;

use crate::quiet::{client, explain, slow_server};

/// Past grpc-go's `keepalive.EnforcementPolicy.MinTime` default.
const IDLE: Duration = Duration::from_secs(5 * 60 + 10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_past_grpc_gos_ping_limit_still_serves() {
    let server = slow_server().await;
    let (_channel, mut client) = client(&server).await;
    within(Duration::from_secs(10), "the first call", client.empty_call(Empty {}))
        .await
        .unwrap_or_else(|status| panic!("{}", explain("the first call", &status, Duration::ZERO, &server)));
    // Idle on purpose: this is the condition under test, not a wait for something to happen.
    tokio::time::sleep(IDLE).await;
    within(
        Duration::from_secs(10),
        "the call after the idle time",
        client.empty_call(Empty {}),
    )
    .await
    .unwrap_or_else(|status| panic!("{}", explain("the call after the idle time", &status, IDLE, &server)));
    let log = server.process.output();
    assert!(
        !log.to_lowercase().contains("too many pings") && !log.contains("too_many_pings"),
        "grpc-go's server found the idle connection pinged too often; its log:\n{log}"
    );
}
