//! A body as h2 receives it, for the client's responses and the server's requests alike: data
//! released to flow control as it is read, then the trailers.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Frame;

/// `recv` as an [`http_body::Body`] whose errors are what `status` makes of h2's. `held` is kept
/// for as long as the body (the client holds what stops a request body's sending there).
pub(crate) struct RecvBody<H = ()> {
    recv: h2::RecvStream,
    data_done: bool,
    status: fn(h2::Error) -> tonic::Status,
    _held: H,
}

impl<H> RecvBody<H> {
    pub(crate) fn new(recv: h2::RecvStream, status: fn(h2::Error) -> tonic::Status, held: H) -> Self {
        Self {
            recv,
            data_done: false,
            status,
            _held: held,
        }
    }
}

impl<H: Unpin> http_body::Body for RecvBody<H> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err((self.status)(error)))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err((self.status)(error)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
