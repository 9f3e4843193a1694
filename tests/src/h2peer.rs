//! A scripted HTTP/2 server: a test says, frame by frame, what a peer nobody here wrote
//! (a stock gRPC server, a misbehaving or a hostile one) sends, and reads what the client sent.
//! Nothing of jovian's HTTP/2 code is used on this side, so the client is seen from outside.
//!
//! Header blocks are written as HPACK literals without indexing, which every decoder takes;
//! those the client sends are not decoded (a test that needs the client's headers uses a real
//! server).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Frame types (RFC 9113 §6).
#[allow(missing_docs)]
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// The END_STREAM flag of DATA and HEADERS.
pub const END_STREAM: u8 = 0x1;
/// The ACK flag of SETTINGS and PING.
pub const ACK: u8 = 0x1;
/// The END_HEADERS flag of HEADERS and CONTINUATION.
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
#[allow(missing_docs)]
pub mod code {
    pub const NO_ERROR: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
    pub const REFUSED_STREAM: u32 = 7;
    pub const CANCEL: u32 = 8;
    pub const ENHANCE_YOUR_CALM: u32 = 11;
}

/// The client's connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame as it went over the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Its type ([`kind`]).
    pub kind: u8,
    /// Its flags.
    pub flags: u8,
    /// Its stream; 0 for the connection.
    pub stream: u32,
    /// Its payload, padding included.
    pub payload: Vec<u8>,
}

/// One client connection, after the client's preface and the server's SETTINGS.
pub struct Peer {
    io: TcpStream,
}

impl Peer {
    async fn handshake(mut io: TcpStream) -> std::io::Result<Self> {
        let mut preface = [0u8; PREFACE.len()];
        io.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(std::io::Error::other("not an HTTP/2 client preface"));
        }
        let mut peer = Self { io };
        peer.write(kind::SETTINGS, 0, 0, &[]).await?;
        Ok(peer)
    }

    /// The next frame from the client; `None` once it closed the connection.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        let mut header = [0u8; 9];
        self.io.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        self.io.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    /// The next frame that is not a SETTINGS frame (acknowledged here) or a PING (answered).
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let frame = self.read_frame().await?;
            match frame.kind {
                kind::SETTINGS if frame.flags & ACK == 0 => self.write(kind::SETTINGS, ACK, 0, &[]).await.ok()?,
                kind::SETTINGS => {}
                kind::PING if frame.flags & ACK == 0 => self.write(kind::PING, ACK, 0, &frame.payload).await.ok()?,
                _ => return Some(frame),
            }
        }
    }

    /// The next request's HEADERS frame, skipping everything else.
    pub async fn next_request(&mut self) -> Option<Frame> {
        loop {
            let frame = self.next_frame().await?;
            if frame.kind == kind::HEADERS {
                return Some(frame);
            }
        }
    }

    /// Writes one frame.
    pub async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        self.io.write_all(&frame(kind, flags, stream, payload)).await
    }

    /// A gRPC response's head: `:status 200`, `content-type: application/grpc`.
    pub async fn respond(&mut self, stream: u32) -> std::io::Result<()> {
        let block = header_block(&[(":status", "200"), ("content-type", "application/grpc")]);
        self.write(kind::HEADERS, END_HEADERS, stream, &block).await
    }

    /// One gRPC message (a 5-byte prefix, then `message`) in a DATA frame.
    pub async fn message(&mut self, stream: u32, message: &[u8]) -> std::io::Result<()> {
        self.write(kind::DATA, 0, stream, &grpc_frame(message)).await
    }

    /// Trailers ending the stream with `grpc-status: code`.
    pub async fn trailers(&mut self, stream: u32, code: u32) -> std::io::Result<()> {
        let block = header_block(&[("grpc-status", &code.to_string())]);
        self.write(kind::HEADERS, END_HEADERS | END_STREAM, stream, &block)
            .await
    }

    /// A whole successful response carrying `message`.
    pub async fn answer(&mut self, stream: u32, message: &[u8]) -> std::io::Result<()> {
        self.respond(stream).await?;
        self.message(stream, message).await?;
        self.trailers(stream, 0).await
    }

    /// Resets `stream` with `code`.
    pub async fn reset(&mut self, stream: u32, code: u32) -> std::io::Result<()> {
        self.write(kind::RST_STREAM, 0, stream, &code.to_be_bytes()).await
    }

    /// Sends GOAWAY: streams above `last_stream` were not processed.
    pub async fn go_away(&mut self, last_stream: u32, code: u32, debug: &[u8]) -> std::io::Result<()> {
        let mut payload = last_stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(debug);
        self.write(kind::GOAWAY, 0, 0, &payload).await
    }
}

/// One frame's bytes: its 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `message` with gRPC's length prefix (uncompressed).
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// A header block of literals without indexing (names lowercase, under 127 bytes), which
/// means the same whatever the other side's dynamic table holds.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0);
        for part in [name.as_bytes(), value.as_bytes()] {
            assert!(part.len() < 127, "a header too long for this encoder");
            block.push(part.len() as u8);
            block.extend_from_slice(part);
        }
    }
    block
}

/// A scripted server on a free loopback port: each connection runs the script in a task of
/// its own. Stopped (every connection with it) when dropped.
pub struct ScriptedServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ScriptedServer {
    /// Listens, and runs `script` on each connection once it has shaken hands.
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((io, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                connections.spawn(async move {
                    if let Ok(peer) = Peer::handshake(io).await {
                        script(peer).await;
                    }
                });
            }
        });
        Self { addr, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        // The JoinSet of connections goes with the task.
        self.task.abort();
    }
}
