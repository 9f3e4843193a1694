//! Sending a request again.
//!
//! An `http::Request` with a streaming body cannot be cloned. But a unary gRPC request's body
//! (one encoded message) is complete the moment the call is made, so it is read then, without
//! waiting, and kept as a [`Payload::Complete`]: each attempt sends the same bytes. A body that
//! is not complete at once (a client-streaming call) is a [`Payload::Streaming`], sent as it
//! comes, once: what was read ahead first, then the rest.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;

use super::transport::Payload;
use crate::error::BoxError;

/// The largest body kept for replay; larger ones are sent once.
const MAX_REPLAY_BYTES: usize = 1 << 20;

/// Reads `body` as far as it is ready now.
pub(super) fn read_now(mut body: Body) -> Payload {
    let mut first: Option<Bytes> = None;
    let mut more: Vec<Bytes> = Vec::new();
    let mut size = 0;
    loop {
        match body.frame().now_or_never() {
            // The body ended: everything is in hand.
            Some(None) => {
                return Payload::Complete(match first {
                    None => Bytes::new(),
                    Some(first) if more.is_empty() => first,
                    Some(first) => concat(first, more),
                });
            }
            Some(Some(Ok(frame))) if frame.is_data() => {
                let data = frame.into_data().unwrap_or_default();
                size += data.len();
                match &first {
                    None => first = Some(data),
                    Some(_) => more.push(data),
                }
                if size > MAX_REPLAY_BYTES {
                    return streaming(first.into_iter().chain(more).map(|d| Ok(Frame::data(d))), body);
                }
            }
            // Trailers, an error, or not ready yet: send what was read, then the rest.
            Some(Some(frame)) => {
                let read = first.into_iter().chain(more).map(|d| Ok(Frame::data(d)));
                return streaming(read.chain([frame]), Body::empty());
            }
            None => return streaming(first.into_iter().chain(more).map(|d| Ok(Frame::data(d))), body),
        }
    }
}

fn streaming(read: impl Iterator<Item = Result<Frame<Bytes>, tonic::Status>>, rest: Body) -> Payload {
    let frames: VecDeque<_> = read.collect();
    if frames.is_empty() {
        return Payload::Streaming(rest);
    }
    Payload::Streaming(Body::new(ReadAhead {
        frames,
        rest: Some(rest),
    }))
}

fn concat(first: Bytes, more: Vec<Bytes>) -> Bytes {
    let mut all = BytesMut::with_capacity(first.len() + more.iter().map(Bytes::len).sum::<usize>());
    all.extend_from_slice(&first);
    more.iter().for_each(|c| all.extend_from_slice(c));
    all.freeze()
}

/// Frames already read, then the rest of the original body.
struct ReadAhead {
    frames: VecDeque<Result<Frame<Bytes>, tonic::Status>>,
    rest: Option<Body>,
}

impl http_body::Body for ReadAhead {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn complete_bodies_are_kept_and_others_pass_through_whole() {
        let one = Body::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        assert!(matches!(read_now(one), Payload::Complete(b) if b == "hello"));
        assert!(matches!(read_now(Body::empty()), Payload::Complete(b) if b.is_empty()));

        // Two chunks now, a third later: all three arrive, in order.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a")))).await.unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"b")))).await.unwrap();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let body = Body::new(http_body_util::StreamBody::new(stream));
        let Payload::Streaming(body) = read_now(body) else {
            panic!("a body still streaming is not complete");
        };
        tx.send(Ok(Frame::data(Bytes::from_static(b"c")))).await.unwrap();
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abc");
    }
}
