//! A loopback TCP proxy a test can cut, to disconnect one process from etcd (or from its
//! clients) while everything else keeps running.
//!
//! Besides forwarding, a proxy can fail in the ways a network fails:
//! - [`cut`](Proxy::cut) (reset): open connections are dropped and new ones are accepted and
//!   closed at once, so peers notice immediately;
//! - [`blackhole`](Proxy::blackhole): connections stay open and new ones are accepted, but no
//!   byte moves either way, so peers only notice through their own timeouts and keep-alives;
//! - [`refuse`](Proxy::refuse): the listener is closed, so connecting fails with "connection
//!   refused" as it does when the process behind a port has died;
//! - [`set_latency`](Proxy::set_latency): every chunk is delayed on its way, a slow link.
//!
//! The port stays the same through every mode, so the proxy's address can be registered and
//! dialled across faults.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a proxy treats traffic right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Forwards every byte, optionally after a delay.
    #[default]
    Forward,
    /// Drops open connections and closes new ones as soon as they are accepted.
    Reset,
    /// Keeps connections open (and accepts new ones) but forwards nothing.
    Blackhole,
    /// Closes the listener: connecting is refused.
    Refuse,
}

/// Forwards connections from its own address to a target until told otherwise.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    mode: watch::Sender<Mode>,
    latency: watch::Sender<Duration>,
    connections: Mutex<CancellationToken>,
}

impl State {
    /// Ends every open connection; later ones get a fresh token.
    fn drop_connections(&self) {
        let mut connections = self.connections.lock().unwrap();
        connections.cancel();
        *connections = CancellationToken::new();
    }
}

impl Proxy {
    /// Starts forwarding from a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        Self::with_listener(listener, target)
    }

    /// Starts forwarding from `port` on loopback to `target`; fails if the port is taken.
    pub async fn start_on(port: u16, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        Ok(Self::with_listener(listener, target))
    }

    fn with_listener(listener: TcpListener, target: SocketAddr) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: watch::Sender::new(Mode::Forward),
            latency: watch::Sender::new(Duration::ZERO),
            connections: Mutex::new(CancellationToken::new()),
        });
        let task = tokio::spawn(accept_loop(Some(listener), addr, target, state.clone()));
        Self { addr, state, task }
    }

    /// The address clients should dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.state.mode.borrow()
    }

    /// Switches to `mode`. [`Mode::Reset`] and [`Mode::Refuse`] drop every open connection;
    /// connections held through a [`Mode::Blackhole`] carry on when it ends, as TCP connections
    /// do when a partition heals before either side gives up.
    pub fn set_mode(&self, mode: Mode) {
        let previous = self.state.mode.send_replace(mode);
        if previous != mode && matches!(mode, Mode::Reset | Mode::Refuse) {
            self.state.drop_connections();
        }
    }

    /// Drops every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.set_mode(Mode::Reset);
    }

    /// Keeps connections open but forwards nothing until [`restore`](Self::restore).
    pub fn blackhole(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// Closes the listener, so connecting is refused, until [`restore`](Self::restore).
    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    /// Accepts and forwards connections again (keeping any latency set).
    pub fn restore(&self) {
        self.set_mode(Mode::Forward);
    }

    /// Delays every chunk forwarded in either direction by `latency` (zero for none).
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency.send_replace(latency);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.connections.lock().unwrap().cancel();
    }
}

/// Accepts while the mode allows it; in [`Mode::Refuse`] the listener is closed and bound again
/// on the same port once the mode changes.
async fn accept_loop(mut listener: Option<TcpListener>, addr: SocketAddr, target: SocketAddr, state: Arc<State>) {
    let mut modes = state.mode.subscribe();
    loop {
        let mode = *modes.borrow_and_update();
        if mode == Mode::Refuse {
            listener = None;
            if modes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let bound = match listener.take() {
            Some(listener) => listener,
            None => match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(_) => {
                    // The port is in TIME_WAIT or briefly taken: try again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            changed = modes.changed() => {
                listener = Some(bound);
                if changed.is_err() {
                    return;
                }
            }
            accepted = bound.accept() => {
                listener = Some(bound);
                let Ok((inbound, _)) = accepted else { continue };
                match *state.mode.borrow() {
                    Mode::Reset | Mode::Refuse => reset(inbound),
                    Mode::Forward | Mode::Blackhole => {
                        let cut = state.connections.lock().unwrap().clone();
                        tokio::spawn(connection(inbound, target, state.clone(), cut));
                    }
                }
            }
        }
    }
}

async fn connection(inbound: TcpStream, target: SocketAddr, state: Arc<State>, cut: CancellationToken) {
    let _ = inbound.set_nodelay(true);
    let outbound = tokio::select! {
        () = cut.cancelled() => return,
        outbound = TcpStream::connect(target) => outbound,
    };
    let Ok(outbound) = outbound else {
        // The target is gone: reset rather than close, as a kernel would refuse.
        reset(inbound);
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        () = cut.cancelled() => {}
        () = pump(in_read, out_write, &state) => {}
        () = pump(out_read, in_write, &state) => {}
    }
}

/// Copies one direction, honouring blackhole and latency for each chunk.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, state: &State) {
    let mut modes = state.mode.subscribe();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // While blackholed, read nothing either: the sender's window fills and it stalls, as
        // behind a partition.
        if *modes.borrow_and_update() == Mode::Blackhole {
            if modes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = modes.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let latency = *state.latency.borrow();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        while *state.mode.borrow() == Mode::Blackhole {
            if modes.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Closes `stream` with a reset (RST), not an orderly FIN, so the peer sees "connection reset".
// A zero linger makes close abortive and never blocks; the deprecation is about non-zero ones.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
