//! Sending a request again.
//!
//! An `http::Request` with a streaming body cannot be cloned. But a unary gRPC request's body
//! (one encoded message) is complete the moment the call is made, so it is read then, without
//! waiting, and kept: the request can be rebuilt for another instance. A body that is not
//! complete at once (a client-streaming call) is passed through untouched and sent only once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;

use crate::error::BoxError;

/// The largest body kept for replay; larger ones are sent once.
const MAX_REPLAY_BYTES: usize = 1 << 20;

/// A request that can be built again for each attempt.
pub(super) struct Replayable {
    parts: http::request::Parts,
    body: Bytes,
}

/// A request as the call made it: replayable, or to be sent once.
pub(super) enum Outgoing {
    Replayable(Replayable),
    Once(http::Request<Body>),
}

impl Outgoing {
    pub(super) fn new(request: http::Request<Body>) -> Self {
        let (parts, mut body) = request.into_parts();
        let mut chunks = VecDeque::new();
        let mut size = 0;
        loop {
            match body.frame().now_or_never() {
                // The body ended: everything is in hand.
                Some(None) => {
                    return Outgoing::Replayable(Replayable {
                        parts,
                        body: concat(chunks),
                    });
                }
                Some(Some(Ok(frame))) if frame.is_data() => {
                    let data = frame.into_data().unwrap_or_default();
                    size += data.len();
                    chunks.push_back(Frame::data(data));
                    if size > MAX_REPLAY_BYTES {
                        return Outgoing::once(parts, chunks, body);
                    }
                }
                // Trailers, an error, or not ready yet: send what was read, then the rest.
                Some(Some(frame)) => {
                    let tail = Body::new(Replay {
                        frames: VecDeque::from([frame]),
                        rest: Some(body),
                    });
                    return Outgoing::once(parts, chunks, tail);
                }
                None => return Outgoing::once(parts, chunks, body),
            }
        }
    }

    fn once(parts: http::request::Parts, read: VecDeque<Frame<Bytes>>, rest: Body) -> Self {
        let frames = read.into_iter().map(Ok).collect();
        let body = Body::new(Replay {
            frames,
            rest: Some(rest),
        });
        Outgoing::Once(http::Request::from_parts(parts, body))
    }
}

impl Replayable {
    /// A fresh copy of the request.
    pub(super) fn build(&self) -> http::Request<Body> {
        let mut request = http::Request::new(Body::new(http_body_util::Full::new(self.body.clone())));
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        *request.extensions_mut() = self.parts.extensions.clone();
        request
    }
}

fn concat(chunks: VecDeque<Frame<Bytes>>) -> Bytes {
    let mut chunks: Vec<Bytes> = chunks.into_iter().filter_map(|f| f.into_data().ok()).collect();
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            chunks.iter().for_each(|c| all.extend_from_slice(c));
            all.freeze()
        }
    }
}

/// Frames already read, then the rest of the original body.
struct Replay {
    frames: VecDeque<Result<Frame<Bytes>, tonic::Status>>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(frame.map_err(Into::into)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}
