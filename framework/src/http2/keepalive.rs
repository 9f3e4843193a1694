//! HTTP/2 keep-alive, the part both sides share: a ping, its answer awaited for a timeout, and
//! the timer between pings.
//!
//! [`Pinger`] is the machine; when to ping is the caller's policy. [`Steady`] is the server's
//! (a ping every interval, as grpc-go's server keepalive does); the client's (ping only while
//! calls are in flight, within what the instance allows) is in `client/transport.rs`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's pings: sends one, waits for its answer within a timeout, and keeps the
/// timer for when the next is due.
pub(crate) struct Pinger {
    ping: h2::PingPong,
    /// When the next decision is due, or when the ping out times out.
    timer: Pin<Box<Sleep>>,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// The caller is to decide now: ping, or wait.
    Due,
    /// The timer is set to when the caller decides again.
    Waiting,
    /// A ping is out; the timer is set to when it times out.
    Pinged,
}

/// What [`Pinger::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Event {
    /// Time to decide: [`Pinger::ping`], or [`Pinger::wait_until`] a later time.
    Due,
    /// The peer answered the ping; a decision is due next.
    Answered,
    /// The ping went unanswered for its timeout: the peer is gone or frozen.
    Unanswered,
}

impl Pinger {
    /// Pings on `ping`; a decision is due at once.
    pub(crate) fn new(ping: h2::PingPong) -> Self {
        Self {
            ping,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            state: State::Due,
        }
    }

    /// Waits until `at` before the next decision.
    pub(crate) fn wait_until(&mut self, at: Instant) {
        self.timer.as_mut().reset(at);
        self.state = State::Waiting;
    }

    /// Sends a ping that must be answered within `timeout`; false when the connection would
    /// not take it (it is going; its own poll says so).
    pub(crate) fn ping(&mut self, timeout: Duration) -> bool {
        if self.ping.send_ping(h2::Ping::opaque()).is_err() {
            return false;
        }
        self.timer.as_mut().reset(Instant::now() + timeout);
        self.state = State::Pinged;
        true
    }

    /// What happened since the last poll; pending while waiting, or while a ping is out and
    /// neither answered nor timed out.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        match self.state {
            State::Due => Poll::Ready(Event::Due),
            State::Waiting => {
                ready!(self.timer.as_mut().poll(cx));
                self.state = State::Due;
                Poll::Ready(Event::Due)
            }
            State::Pinged => {
                match self.ping.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.state = State::Due;
                        return Poll::Ready(Event::Answered);
                    }
                    // The connection is failing anyway; its own poll ends the task.
                    Poll::Ready(Err(_)) => return Poll::Pending,
                    Poll::Pending => {}
                }
                ready!(self.timer.as_mut().poll(cx));
                Poll::Ready(Event::Unanswered)
            }
        }
    }
}

/// A ping every `interval`, whatever the connection is doing; one unanswered for `timeout`
/// ends it.
pub(crate) struct Steady {
    pinger: Pinger,
    interval: Duration,
    timeout: Duration,
}

impl Steady {
    /// The first ping goes after `interval`.
    pub(crate) fn new(ping: h2::PingPong, interval: Duration, timeout: Duration) -> Self {
        let mut pinger = Pinger::new(ping);
        pinger.wait_until(Instant::now() + interval);
        Self {
            pinger,
            interval,
            timeout,
        }
    }

    /// Ready when a ping went unanswered: the peer is gone or frozen.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match ready!(self.pinger.poll(cx)) {
                Event::Due => {
                    if !self.pinger.ping(self.timeout) {
                        return Poll::Pending;
                    }
                }
                Event::Answered => self.pinger.wait_until(Instant::now() + self.interval),
                Event::Unanswered => return Poll::Ready(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client and a server connection over memory, each driven by a task of its own unless
    /// `frozen` (a peer that never reads: its pings go unanswered). The client's connection
    /// lasts as long as the `SendRequest` returned with its pings.
    async fn connection(frozen: bool) -> (h2::PingPong, h2::client::SendRequest<bytes::Bytes>) {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::handshake(far).await.unwrap();
            if frozen {
                std::future::pending::<()>().await;
            }
            while connection.accept().await.is_some() {}
        });
        let (send, mut connection) = h2::client::handshake(near).await.unwrap();
        let ping = connection.ping_pong().unwrap();
        tokio::spawn(async move {
            let _server = server;
            let _ = connection.await;
        });
        (ping, send)
    }

    #[tokio::test]
    async fn an_answered_ping_makes_a_decision_due_and_a_wait_waits() {
        let (ping, _open) = connection(false).await;
        let mut pinger = Pinger::new(ping);
        for _ in 0..20 {
            assert_eq!(std::future::poll_fn(|cx| pinger.poll(cx)).await, Event::Due);
            assert!(pinger.ping(Duration::from_secs(60)));
            assert_eq!(std::future::poll_fn(|cx| pinger.poll(cx)).await, Event::Answered);
        }
        assert_eq!(std::future::poll_fn(|cx| pinger.poll(cx)).await, Event::Due);

        let started = Instant::now();
        pinger.wait_until(started + Duration::from_millis(100));
        assert_eq!(std::future::poll_fn(|cx| pinger.poll(cx)).await, Event::Due);
        assert!(started.elapsed() >= Duration::from_millis(100), "waited for the timer");
    }

    #[tokio::test]
    async fn a_frozen_peer_is_noticed_after_the_interval_and_the_timeout() {
        let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(300));
        let (ping, _open) = connection(true).await;
        let mut steady = Steady::new(ping, interval, timeout);
        let started = Instant::now();
        // Generous: the machine may be busy; what matters is that it ends, and not before.
        let noticed = tokio::time::timeout(Duration::from_secs(30), std::future::poll_fn(|cx| steady.poll(cx))).await;
        assert!(noticed.is_ok(), "a frozen peer was never noticed");
        assert!(started.elapsed() >= interval + timeout, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_live_peer_keeps_answering_steady_pings() {
        // A ping every 20 ms, each answered within a second: some 100 pings, all answered.
        let (ping, open) = connection(false).await;
        let mut steady = Steady::new(ping, Duration::from_millis(20), Duration::from_secs(1));
        let watched = tokio::time::timeout(Duration::from_secs(3), std::future::poll_fn(|cx| steady.poll(cx))).await;
        assert!(watched.is_err(), "an answering peer was taken for frozen");
        // A connection that closed would leave its pings pending, not unanswered: it must not
        // be what kept the watch quiet.
        assert!(open.ready().await.is_ok(), "the connection closed under the pings");
    }
}
