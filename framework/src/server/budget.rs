//! A connection's budget of control frames.
//!
//! PING, SETTINGS, WINDOW_UPDATE and PRIORITY frames, empty DATA frames that do not end their
//! stream, and frames of types HTTP/2 does not define make the server work (an answer to
//! write, a window to recompute, a frame to parse) without carrying a call, and `h2` takes any
//! number of them. A client sending them as fast as its socket allows cost every other caller
//! of the server tens of milliseconds per call (`tests/tests/server_connections/floods.rs`;
//! BENCHMARKS.md scenario 10). So each connection has a budget for them, as Envoy's and Go's
//! servers do in their own ways: [`ALLOWANCE`] frames to start with, [`REFILL_PER_SECOND`]
//! more each second, and more for each frame of real work — a call's HEADERS and DATA from the
//! client, each DATA frame the server sends (a client acknowledges received data with
//! WINDOW_UPDATEs, and grpc-go's clients measure it with a PING). Acknowledgements (PING and
//! SETTINGS with ACK) are not counted: `h2` ignores unsolicited ones. A connection that
//! overspends is closed: its reads fail with [`Overspent`], `h2` ends the connection, and the
//! calls on it fail as on any broken connection.
//!
//! What legitimate clients spend, for scale: jovian's client pings each connection at most once
//! a second; grpc-go's keeps to its keepalive (10 s at the least) and one BDP ping per burst of
//! data received; a WINDOW_UPDATE follows data received. All of those stay far inside the
//! budget; a flood spends it in a few milliseconds.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::http2::frames::{ACK, END_STREAM, FrameHead, FrameScan, kind};

/// Control frames a connection may send before it has done anything else.
pub(super) const ALLOWANCE: f64 = 2_000.0;
/// Control frames a connection may send per second, however idle it is.
pub(super) const REFILL_PER_SECOND: f64 = 100.0;
/// The most a connection can have in hand: busy connections cannot bank a flood.
const MOST: f64 = 20_000.0;
/// What each frame of a call from the client earns.
const EARNED_PER_FRAME: f64 = 2.0;
/// What each DATA frame sent earns: up to a stream and a connection WINDOW_UPDATE and a BDP
/// ping (grpc-go's clients send all three for data received), with room to spare.
const EARNED_PER_DATA_SENT: f64 = 4.0;

/// Why a connection's reads failed: it sent more control frames than its budget.
#[derive(Debug)]
pub(super) struct Overspent;

impl std::fmt::Display for Overspent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client sent control frames (PING, SETTINGS, WINDOW_UPDATE, ...) faster than its calls account for; closing the connection"
        )
    }
}

impl std::error::Error for Overspent {}

/// What a connection has left to spend.
#[derive(Debug)]
struct Budget {
    left: f64,
    /// When `left` was last topped up by the clock.
    refilled: Instant,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Self {
            left: ALLOWANCE,
            refilled: now,
        }
    }

    fn earn(&mut self, amount: f64) {
        self.left = (self.left + amount).min(MOST);
    }

    /// Spends one frame's worth; false once the budget is gone. The clock is read only when
    /// the budget runs low, not for every frame.
    fn spend(&mut self, now: impl FnOnce() -> Instant) -> bool {
        if self.left < 1.0 {
            let now = now();
            let refill = now.duration_since(self.refilled).as_secs_f64() * REFILL_PER_SECOND;
            self.left = (self.left + refill).min(MOST);
            self.refilled = now;
        }
        if self.left < 1.0 {
            return false;
        }
        self.left -= 1.0;
        true
    }
}

/// Whether a frame from the client carries a call (earns) or only makes the server work
/// (spends); `None` for frames that do neither.
fn from_client(head: FrameHead) -> Option<bool> {
    match head.kind {
        kind::HEADERS | kind::CONTINUATION => Some(true),
        kind::DATA => Some(head.length > 0 || head.flags & END_STREAM != 0),
        kind::PING | kind::SETTINGS if head.flags & ACK != 0 => None,
        kind::PING | kind::SETTINGS | kind::WINDOW_UPDATE | kind::PRIORITY => Some(false),
        kind::RST_STREAM | kind::GOAWAY => None,
        // PUSH_PROMISE is a protocol error from a client: h2 ends the connection itself.
        0x5 => None,
        _ => Some(false),
    }
}

/// A connection's byte stream, its control frames counted against its budget.
pub(super) struct Budgeted<I> {
    io: I,
    budget: Budget,
    reads: FrameScan,
    writes: FrameScan,
    overspent: bool,
}

impl<I> Budgeted<I> {
    pub(super) fn new(io: I) -> Self {
        Self {
            io,
            budget: Budget::new(Instant::now()),
            reads: FrameScan::after_preface(),
            writes: FrameScan::default(),
            overspent: false,
        }
    }

    /// Counts `bytes` the server read; false once the client overspent.
    fn read(&mut self, bytes: &[u8]) -> bool {
        let Self { budget, reads, .. } = self;
        let mut within = true;
        reads.scan(bytes, |head| match from_client(head) {
            Some(true) => budget.earn(EARNED_PER_FRAME),
            Some(false) => within &= budget.spend(Instant::now),
            None => {}
        });
        within
    }

    /// Counts `bytes` the server wrote: each DATA frame earns the client its acknowledgement.
    fn wrote(&mut self, bytes: &[u8]) {
        let Self { budget, writes, .. } = self;
        writes.scan(bytes, |head| {
            if head.kind == kind::DATA {
                budget.earn(EARNED_PER_DATA_SENT);
            }
        });
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Budgeted<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.overspent {
            return Poll::Ready(Err(io::Error::other(Overspent)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && !self.read(&buf.filled()[before..]) {
            // What was read is dropped with the connection: nothing of it is served.
            self.overspent = true;
            tracing::debug!("{Overspent}");
            return Poll::Ready(Err(io::Error::other(Overspent)));
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Budgeted<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.wrote(&buf[..n]);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                let taken = n.min(buf.len());
                self.wrote(&buf[..taken]);
                n -= taken;
                if n == 0 {
                    break;
                }
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::frames::frame;

    /// A connection's stream whose budget the clock does not refill while the test runs (a
    /// slow run would otherwise earn frames by the second).
    fn frozen_clock() -> Budgeted<tokio::io::Empty> {
        let mut io = Budgeted::new(tokio::io::empty());
        io.reads = FrameScan::default();
        io.budget.refilled = Instant::now() + std::time::Duration::from_secs(3600);
        io
    }

    fn spend_all(budget: &mut Budget, now: Instant) -> usize {
        (0..).take_while(|_| budget.spend(|| now)).count()
    }

    #[test]
    fn a_flood_spends_the_allowance_and_the_clock_refills_it() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        assert_eq!(spend_all(&mut budget, start), ALLOWANCE as usize);
        assert_eq!(
            spend_all(&mut budget, start + std::time::Duration::from_secs(1)),
            REFILL_PER_SECOND as usize
        );
    }

    #[test]
    fn calls_earn_control_frames_and_acks_cost_nothing() {
        let mut io = frozen_clock();
        let ping = frame(kind::PING, 0, &[0; 8]);
        let pong = frame(kind::PING, ACK, &[0; 8]);
        let call = [frame(kind::HEADERS, 0, &[0x88]), frame(kind::DATA, END_STREAM, &[0; 5])].concat();
        let spend = |io: &mut Budgeted<_>, bytes: &[u8], times: usize| (0..times).all(|_| io.read(bytes));
        assert!(spend(&mut io, &pong, 100_000), "acknowledgements are free");
        assert!(spend(&mut io, &ping, ALLOWANCE as usize));
        assert!(!io.read(&ping), "the allowance is spent");
        assert!(spend(&mut io, &call, 1));
        assert!(spend(&mut io, &ping, 4), "a call's two frames earn four");
        assert!(!io.read(&ping));
    }

    #[test]
    fn data_sent_earns_its_window_updates() {
        let mut io = frozen_clock();
        let update = frame(kind::WINDOW_UPDATE, 0, &[0, 0, 0, 1]);
        assert!((0..ALLOWANCE as usize).all(|_| io.read(&update)));
        io.wrote(&frame(kind::DATA, 0, &[0; 100]).repeat(10));
        assert!((0..40).all(|_| io.read(&update)));
        assert!(!io.read(&update));
    }

    #[test]
    fn empty_data_frames_that_end_nothing_are_control_frames() {
        assert_eq!(
            from_client(FrameHead {
                kind: kind::DATA,
                flags: 0,
                length: 0
            }),
            Some(false)
        );
        assert_eq!(
            from_client(FrameHead {
                kind: kind::DATA,
                flags: END_STREAM,
                length: 0
            }),
            Some(true)
        );
        assert_eq!(
            from_client(FrameHead {
                kind: 0x42,
                flags: 0,
                length: 3
            }),
            Some(false)
        );
    }
}
