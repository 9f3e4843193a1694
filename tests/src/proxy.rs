//! A loopback TCP proxy a test can cut, to disconnect one client from etcd while etcd itself
//! keeps running for everybody else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections from its own address to a target until cut.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    open: AtomicBool,
    connections: Mutex<CancellationToken>,
}

impl Proxy {
    /// Starts forwarding from a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            open: AtomicBool::new(true),
            connections: Mutex::new(CancellationToken::new()),
        });
        let accepting = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.open.load(Ordering::SeqCst) {
                    continue; // dropped at once: the client sees its connection reset
                }
                let cut = accepting.connections.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        () = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    /// The address clients should dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        let mut connections = self.state.connections.lock().unwrap();
        connections.cancel();
        *connections = CancellationToken::new();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.connections.lock().unwrap().cancel();
    }
}
