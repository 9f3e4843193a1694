//! The compression flag of every gRPC message in an HTTP body, seen as the body streams by.
//!
//! A gRPC message is a 5-byte prefix (a flag byte whose low bit says "compressed", then a
//! 4-byte big-endian length) and that many bytes; HTTP/2 DATA frames split and join messages
//! freely. tonic decodes the messages but tells neither handlers nor callers whether each one
//! was compressed, and the interop suite's compression cases are about exactly that, so both
//! the server (`expect_compressed`) and the client (`response_compressed`) wrap bodies here.

use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

/// The flags seen so far, one per message, in order. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct MessageFlags(Arc<Mutex<Vec<bool>>>);

impl MessageFlags {
    /// Whether each message seen so far was compressed.
    pub fn compressed(&self) -> Vec<bool> {
        self.0.lock().expect("flags lock").clone()
    }

    /// Whether message `index` (from 0) was compressed; `None` before it was seen.
    pub fn get(&self, index: usize) -> Option<bool> {
        self.0.lock().expect("flags lock").get(index).copied()
    }

    fn push(&self, compressed: bool) {
        self.0.lock().expect("flags lock").push(compressed);
    }
}

/// `body`, passing every frame through unchanged, recording each message's flag in `flags`.
pub fn observe<B>(body: B, flags: MessageFlags) -> impl Body<Data = Bytes, Error = B::Error> + Send + 'static
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let mut reader = Prefixes::default();
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            reader.feed(data.chunk(), &flags);
        }
        frame
    })
}

/// A client layer ([`jovian::ClientBuilder::layer`]): a call whose request carries a
/// [`MessageFlags`] extension (tonic's `Request::extensions_mut`) has its response messages'
/// flags recorded there.
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveResponsesLayer;

impl<S> tower::Layer<S> for ObserveResponsesLayer {
    type Service = ObserveResponses<S>;

    fn layer(&self, inner: S) -> ObserveResponses<S> {
        ObserveResponses { inner }
    }
}

/// Records the flags of the response messages of calls that ask; see [`ObserveResponsesLayer`].
#[derive(Clone, Debug)]
pub struct ObserveResponses<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for ObserveResponses<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let flags = request.extensions().get::<MessageFlags>().cloned();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match flags {
                Some(flags) => response.map(|body| tonic::body::Body::new(observe(body, flags))),
                None => response,
            })
        })
    }
}

/// Where the reader is in the message stream: inside a prefix (`have` of its 5 bytes read) or
/// inside a message (`remaining` bytes of it still to skip).
#[derive(Default)]
struct Prefixes {
    prefix: [u8; 5],
    have: usize,
    remaining: usize,
}

impl Prefixes {
    fn feed(&mut self, mut data: &[u8], flags: &MessageFlags) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                flags.push(self.prefix[0] & 1 == 1);
                let [_, a, b, c, d] = self.prefix;
                self.remaining = u32::from_be_bytes([a, b, c, d]) as usize;
                self.have = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MessageFlags, Prefixes};

    #[test]
    fn flags_are_read_across_any_split_of_the_frames() {
        // Three messages: compressed 3 bytes, plain 0 bytes, plain 2 bytes.
        let wire: Vec<u8> = [&[1, 0, 0, 0, 3, 7, 7, 7][..], &[0, 0, 0, 0, 0], &[0, 0, 0, 0, 2, 9, 9]].concat();
        for split in 1..wire.len() {
            let flags = MessageFlags::default();
            let mut reader = Prefixes::default();
            for chunk in wire.chunks(split) {
                reader.feed(chunk, &flags);
            }
            assert_eq!(flags.compressed(), [true, false, false], "chunks of {split}");
        }
    }
}
