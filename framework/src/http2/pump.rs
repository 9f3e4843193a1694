//! A body sent on an h2 stream: the client's streaming request bodies and the server's
//! response bodies go out the same way.
//!
//! As hyper's pipe does, a chunk is read before any send window is asked for (window held for
//! a body that sends nothing could starve the connection's other streams), then a minimal
//! claim waits for some window, and the whole chunk is handed to h2, which sends it as the
//! window allows: one chunk at a time is the backpressure. A response's first chunk may go at
//! once, without waiting for window (h2 buffers it), so that a unary answer is written in the
//! same poll as its head.
//!
//! What else ends a send (the peer resetting the stream, the caller giving up, a deadline) is
//! each side's own: it looks while [`Pump::poll`] is pending.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body as _;
use tonic::body::Body;

/// A body on its way out on one stream.
pub(crate) struct Pump {
    body: Body,
    stream: h2::SendStream<Bytes>,
    /// A chunk read, waiting for send window.
    waiting: Option<Bytes>,
    /// Whether the next chunk goes without waiting for window.
    at_once: bool,
}

/// How a [`Pump`] ended.
#[derive(Debug)]
pub(crate) enum Pumped {
    /// All of the body, and its end (or trailers), were handed to h2.
    Sent,
    /// The body failed with this status; the stream is still open, for the caller to end.
    BodyFailed(tonic::Status),
    /// The stream would take no more: reset, or its connection gone.
    StreamGone,
}

impl Pump {
    /// Sends `body` on `stream`; `first_at_once` sends its first chunk without waiting for
    /// window.
    pub(crate) fn new(body: Body, stream: h2::SendStream<Bytes>, first_at_once: bool) -> Self {
        Self {
            body,
            stream,
            waiting: None,
            at_once: first_at_once,
        }
    }

    /// The stream the body goes on.
    pub(crate) fn stream(&mut self) -> &mut h2::SendStream<Bytes> {
        &mut self.stream
    }

    /// Sends what the body has ready, as far as the window allows; ready when the body is all
    /// sent or the send is over. Pending while the body or the window is awaited.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Pumped> {
        loop {
            if let Some(data) = self.waiting.take() {
                if self.stream.capacity() == 0 {
                    self.waiting = Some(data);
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return Poll::Ready(Pumped::StreamGone),
                    }
                }
                if self.stream.send_data(data, false).is_err() {
                    return Poll::Ready(Pumped::StreamGone);
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(sent(self.stream.send_data(Bytes::new(), true))),
                Some(Err(status)) => return Poll::Ready(Pumped::BodyFailed(status)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.at_once => {
                        self.at_once = false;
                        if self.stream.send_data(data, false).is_err() {
                            return Poll::Ready(Pumped::StreamGone);
                        }
                    }
                    Ok(data) => {
                        self.at_once = false;
                        self.stream.reserve_capacity(1);
                        self.waiting = Some(data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Poll::Ready(sent(self.stream.send_trailers(trailers)));
                        }
                    }
                },
            }
        }
    }
}

fn sent(result: Result<(), h2::Error>) -> Pumped {
    match result {
        Ok(()) => Pumped::Sent,
        Err(_) => Pumped::StreamGone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body::Frame;

    /// A stream of a client connection to an h2 server over memory, and what the server reads
    /// from it (its data, then its trailers).
    async fn open_stream(
        window: u32,
    ) -> (
        h2::SendStream<Bytes>,
        tokio::task::JoinHandle<(Vec<u8>, Option<http::HeaderMap>)>,
    ) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let read = tokio::spawn(async move {
            let mut connection = h2::server::Builder::new()
                .initial_window_size(window)
                .handshake::<_, Bytes>(far)
                .await
                .unwrap();
            let (request, _respond) = connection.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while connection.accept().await.is_some() {} });
            let mut body = request.into_body();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            (data, body.trailers().await.unwrap())
        });
        let (send, connection) = h2::client::handshake(near).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut send = send.ready().await.unwrap();
        let (_response, stream) = send.send_request(http::Request::new(()), false).unwrap();
        (stream, read)
    }

    fn body(frames: Vec<Frame<Bytes>>) -> Body {
        let stream = tokio_stream::iter(frames.into_iter().map(Ok::<_, tonic::Status>));
        Body::new(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test]
    async fn a_body_larger_than_the_window_arrives_whole_then_its_trailers() {
        let (stream, read) = open_stream(1024).await;
        let chunks: Vec<Frame<Bytes>> = (0..40u8).map(|i| Frame::data(Bytes::from(vec![i; 1000]))).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames = chunks.into_iter().chain([Frame::trailers(trailers)]).collect();
        let mut pump = Pump::new(body(frames), stream, true);
        assert!(matches!(std::future::poll_fn(|cx| pump.poll(cx)).await, Pumped::Sent));
        let (data, trailers) = read.await.unwrap();
        let expected: Vec<u8> = (0..40u8).flat_map(|i| vec![i; 1000]).collect();
        assert_eq!(data, expected);
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn a_failing_body_is_left_to_the_caller_and_an_empty_one_still_ends_the_stream() {
        let (stream, _read) = open_stream(65_535).await;
        let failing = Body::new(http_body_util::StreamBody::new(tokio_stream::iter([Err::<
            Frame<Bytes>,
            _,
        >(
            tonic::Status::aborted("no more"),
        )])));
        let mut pump = Pump::new(failing, stream, false);
        match std::future::poll_fn(|cx| pump.poll(cx)).await {
            Pumped::BodyFailed(status) => assert_eq!(status.code(), tonic::Code::Aborted),
            other => panic!("{other:?}"),
        }

        let (stream, read) = open_stream(65_535).await;
        let mut pump = Pump::new(Body::empty(), stream, false);
        assert!(matches!(std::future::poll_fn(|cx| pump.poll(cx)).await, Pumped::Sent));
        let (data, trailers) = read.await.unwrap();
        assert!(data.is_empty() && trailers.is_none());
    }
}
