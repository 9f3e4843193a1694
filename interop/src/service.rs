//! The TestService a jovian interop server offers, as the server features of the interop
//! descriptions say: EmptyCall, UnaryCall, StreamingInputCall, StreamingOutputCall,
//! FullDuplexCall and HalfDuplexCall, with Echo Status, Echo Metadata (in [`echo`](crate::echo)),
//! `interval_us`, CompressedRequest and CompressedResponse. `UnimplementedCall` answers
//! UNIMPLEMENTED, and UnimplementedService is not served at all.
//!
//! Compression: the server accepts gzip, and compresses a unary response only when the
//! request asks (`response_compressed`). A stream is compressed as a whole whenever the client
//! accepts gzip: tonic cannot leave one message of a compressed stream uncompressed, so the
//! per-message `compressed` of `ResponseParameters` is not honoured.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{CompressionEncoding, SingleMessageCompressionOverride};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::flags::MessageFlags;
use crate::proto::test_service_server::{TestService, TestServiceServer};
use crate::proto::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// The interop TestService.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interop;

/// The generated server for [`Interop`], accepting and able to send gzip.
pub fn test_service() -> TestServiceServer<Interop> {
    TestServiceServer::new(Interop)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TestService for Interop {
    async fn empty_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn unary_call(&self, request: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        let flags = request.extensions().get::<MessageFlags>().cloned();
        let message = request.into_inner();
        check_compressed(message.expect_compressed, flags.and_then(|f| f.get(0)))?;
        echo_status(message.response_status.as_ref())?;
        let mut response = Response::new(SimpleResponse {
            payload: Some(payload(message.response_type, message.response_size)?),
            ..SimpleResponse::default()
        });
        if message.response_compressed.is_none_or(|c| !c.value) {
            response
                .extensions_mut()
                .insert(SingleMessageCompressionOverride::Disable);
        }
        Ok(response)
    }

    async fn cacheable_unary_call(&self, request: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        self.unary_call(request).await
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let message = request.into_inner();
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            // A send fails only once the caller is gone: then there is no one left to answer.
            let _ = respond(&message, &sender).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let flags = request.extensions().get::<MessageFlags>().cloned().unwrap_or_default();
        let mut messages = request.into_inner();
        let mut total = 0;
        let mut index = 0;
        while let Some(message) = messages.message().await? {
            check_compressed(message.expect_compressed, flags.get(index))?;
            total += message.payload.map_or(0, |p| p.body.len());
            index += 1;
        }
        let aggregated_payload_size = i32::try_from(total).map_err(|_| Status::out_of_range("payload sizes"))?;
        Ok(Response::new(StreamingInputCallResponse {
            aggregated_payload_size,
        }))
    }

    type FullDuplexCallStream = ResponseStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut messages = request.into_inner();
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                match messages.message().await {
                    Ok(Some(message)) => {
                        if respond(&message, &sender).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut messages = request.into_inner();
        let mut all = Vec::new();
        while let Some(message) = messages.message().await? {
            all.push(message);
        }
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for message in &all {
                if respond(message, &sender).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented",
        ))
    }
}

type Sender = mpsc::Sender<Result<StreamingOutputCallResponse, Status>>;

/// Sends the responses one streaming request asks for, each after its `interval_us`, or the
/// status it asks for. `Err` once the caller has gone, or the call has failed.
async fn respond(message: &StreamingOutputCallRequest, sender: &Sender) -> Result<(), ()> {
    if let Err(status) = echo_status(message.response_status.as_ref()) {
        let _ = sender.send(Err(status)).await;
        return Err(());
    }
    for ResponseParameters { size, interval_us, .. } in &message.response_parameters {
        if *interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(*interval_us as u64)).await;
        }
        let response =
            payload(message.response_type, *size).map(|payload| StreamingOutputCallResponse { payload: Some(payload) });
        let failed = response.is_err();
        sender.send(response).await.map_err(|_| ())?;
        if failed {
            return Err(());
        }
    }
    Ok(())
}

/// A payload of `size` zero bytes; only COMPRESSABLE exists.
fn payload(kind: i32, size: i32) -> Result<Payload, Status> {
    if PayloadType::try_from(kind).is_err() {
        return Err(Status::invalid_argument(format!("unsupported payload type {kind}")));
    }
    let size = usize::try_from(size).map_err(|_| Status::invalid_argument(format!("negative size {size}")))?;
    Ok(Payload {
        r#type: kind,
        body: vec![0; size],
    })
}

/// Echo Status: the status a request asks the call to end with, if any but OK.
fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(EchoStatus { code, message }) if *code != 0 => Err(Status::new(Code::from(*code), message.clone())),
        _ => Ok(()),
    }
}

/// CompressedRequest: a message that says it is compressed must have arrived compressed.
fn check_compressed(expect: Option<BoolValue>, compressed: Option<bool>) -> Result<(), Status> {
    match (expect, compressed) {
        (Some(BoolValue { value: true }), Some(false) | None) => Err(Status::invalid_argument(
            "expect_compressed is set but the request message was not compressed",
        )),
        _ => Ok(()),
    }
}
