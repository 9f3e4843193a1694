//! The client side of the interop cases, as doc/interop-test-descriptions.md in grpc/grpc
//! describes them, on a jovian [`ServiceChannel`]. Each returns `Err` saying what went wrong.
//!
//! Where Rust differs from the description's model:
//! - Cancelling a call is dropping it (its future, or its response stream and request
//!   sender): the client then resets the stream with CANCEL, and the caller has no status to
//!   look at. The two cancel cases check that the call was still going when it was dropped and
//!   that the channel goes on serving calls afterwards.
//! - tonic compresses every message of a call or none, so `client_compressed_streaming` sends
//!   its second message (`expect_compressed: false`) compressed too, which the description
//!   allows the server to accept.

use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use jovian::ServiceChannel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status};

use crate::echo::{ECHO_INITIAL, ECHO_TRAILING};
use crate::flags::MessageFlags;
use crate::proto::test_service_client::TestServiceClient;
use crate::proto::unimplemented_service_client::UnimplementedServiceClient;
use crate::proto::{
    BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest, StreamingInputCallRequest,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// The standard cases every interop client has, by the names they share.
pub const STANDARD: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "cancel_after_begin",
    "cancel_after_first_response",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
];

/// The compression cases (grpc-go's client has none of them).
pub const COMPRESSION: &[&str] = &[
    "client_compressed_unary",
    "server_compressed_unary",
    "client_compressed_streaming",
    "server_compressed_streaming",
];

/// Whether this client runs `case`.
pub fn is_case(case: &str) -> bool {
    STANDARD.contains(&case) || COMPRESSION.contains(&case)
}

const LARGE_REQUEST: usize = 271_828;
const LARGE_RESPONSE: usize = 314_159;
const REQUEST_SIZES: [usize; 4] = [27_182, 8, 1_828, 45_904];
const RESPONSE_SIZES: [usize; 4] = [31_415, 9, 2_653, 58_979];
const STATUS_MESSAGE: &str = "test status message";
const SPECIAL_STATUS_MESSAGE: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];

/// Runs case `name` on `channel`.
pub async fn run(name: &str, channel: &ServiceChannel) -> anyhow::Result<()> {
    let client = TestServiceClient::new(channel.clone());
    match name {
        "empty_unary" => empty_unary(client).await,
        "large_unary" => large_unary(client).await,
        "client_streaming" => client_streaming(client).await,
        "server_streaming" => server_streaming(client).await,
        "ping_pong" => ping_pong(client).await,
        "empty_stream" => empty_stream(client).await,
        "timeout_on_sleeping_server" => timeout_on_sleeping_server(client).await,
        "cancel_after_begin" => cancel_after_begin(client).await,
        "cancel_after_first_response" => cancel_after_first_response(client).await,
        "custom_metadata" => custom_metadata(client).await,
        "status_code_and_message" => status_code_and_message(client).await,
        "special_status_message" => special_status_message(client).await,
        "unimplemented_method" => unimplemented_method(client).await,
        "unimplemented_service" => unimplemented_service(channel).await,
        "client_compressed_unary" => client_compressed_unary(client).await,
        "server_compressed_unary" => server_compressed_unary(client).await,
        "client_compressed_streaming" => client_compressed_streaming(client).await,
        "server_compressed_streaming" => server_compressed_streaming(client).await,
        other => bail!(
            "unknown test case {other:?}; the cases are {}, {}",
            STANDARD.join(", "),
            COMPRESSION.join(", ")
        ),
    }
}

type Client = TestServiceClient<ServiceChannel>;

fn zeros(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: PayloadType::Compressable.into(),
        body: vec![0; size],
    })
}

fn sized(size: usize) -> ResponseParameters {
    ResponseParameters {
        size: size as i32,
        ..ResponseParameters::default()
    }
}

fn flag(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// A response payload is COMPRESSABLE, `size` bytes, all zero.
fn check_payload(payload: Option<&Payload>, size: usize) -> anyhow::Result<()> {
    let payload = payload.ok_or_else(|| anyhow!("the response has no payload"))?;
    ensure!(
        payload.r#type == i32::from(PayloadType::Compressable),
        "payload type {}, want COMPRESSABLE",
        payload.r#type
    );
    ensure!(
        payload.body.len() == size,
        "payload of {} bytes, want {size}",
        payload.body.len()
    );
    ensure!(payload.body.iter().all(|b| *b == 0), "the payload is not all zeros");
    Ok(())
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: LARGE_RESPONSE as i32,
        payload: zeros(LARGE_REQUEST),
        ..SimpleRequest::default()
    }
}

/// The call failed with `code` (and `message`, if given).
fn check_status<T>(result: Result<T, Status>, code: Code, message: Option<&str>) -> anyhow::Result<()> {
    match result {
        Err(status) if status.code() == code && message.is_none_or(|m| status.message() == m) => Ok(()),
        Err(status) => bail!(
            "the call failed with {:?} {:?}, want {code:?}{}",
            status.code(),
            status.message(),
            message.map(|m| format!(" {m:?}")).unwrap_or_default()
        ),
        Ok(_) => bail!("the call succeeded, want {code:?}"),
    }
}

async fn empty_unary(mut client: Client) -> anyhow::Result<()> {
    let reply = client.empty_call(Empty {}).await.context("EmptyCall")?;
    ensure!(
        reply.into_inner() == Empty {},
        "EmptyCall answered something else than Empty"
    );
    Ok(())
}

async fn large_unary(mut client: Client) -> anyhow::Result<()> {
    let reply = client.unary_call(large_request()).await.context("UnaryCall")?;
    check_payload(reply.get_ref().payload.as_ref(), LARGE_RESPONSE)
}

async fn client_streaming(mut client: Client) -> anyhow::Result<()> {
    let requests = REQUEST_SIZES.map(|size| StreamingInputCallRequest {
        payload: zeros(size),
        ..StreamingInputCallRequest::default()
    });
    let reply = client
        .streaming_input_call(tokio_stream::iter(requests))
        .await
        .context("StreamingInputCall")?;
    let total = reply.into_inner().aggregated_payload_size;
    ensure!(total == 74_922, "aggregated_payload_size {total}, want 74922");
    Ok(())
}

/// Reads a response stream to its end: the payload sizes, each checked to be all zeros.
async fn sizes(stream: &mut tonic::Streaming<StreamingOutputCallResponse>) -> anyhow::Result<Vec<usize>> {
    let mut sizes = Vec::new();
    while let Some(response) = stream
        .message()
        .await
        .with_context(|| format!("the response stream after {} responses", sizes.len()))?
    {
        let size = response.payload.as_ref().map_or(0, |p| p.body.len());
        check_payload(response.payload.as_ref(), size)?;
        sizes.push(size);
    }
    Ok(sizes)
}

async fn server_streaming(mut client: Client) -> anyhow::Result<()> {
    let request = StreamingOutputCallRequest {
        response_parameters: RESPONSE_SIZES.map(sized).to_vec(),
        ..StreamingOutputCallRequest::default()
    };
    let mut stream = client
        .streaming_output_call(request)
        .await
        .context("StreamingOutputCall")?
        .into_inner();
    let got = sizes(&mut stream).await?;
    ensure!(got == RESPONSE_SIZES, "response sizes {got:?}, want {RESPONSE_SIZES:?}");
    Ok(())
}

fn ping(index: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![sized(RESPONSE_SIZES[index])],
        payload: zeros(REQUEST_SIZES[index]),
        ..StreamingOutputCallRequest::default()
    }
}

async fn ping_pong(mut client: Client) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::channel(1);
    // The first request goes out with the call: a server may answer the call's headers only
    // with its first response.
    sender.send(ping(0)).await?;
    let mut stream = client
        .full_duplex_call(ReceiverStream::new(receiver))
        .await
        .context("FullDuplexCall")?
        .into_inner();
    for (index, size) in RESPONSE_SIZES.into_iter().enumerate() {
        if index > 0 {
            sender.send(ping(index)).await.context("sending the next request")?;
        }
        let response = stream
            .message()
            .await
            .with_context(|| format!("response {}", index + 1))?
            .ok_or_else(|| anyhow!("the stream ended after {index} responses, want 4"))?;
        check_payload(response.payload.as_ref(), size)?;
    }
    drop(sender);
    let rest = sizes(&mut stream).await?;
    ensure!(
        rest.is_empty(),
        "{} responses after the half-close, want none",
        rest.len()
    );
    Ok(())
}

async fn empty_stream(mut client: Client) -> anyhow::Result<()> {
    let mut stream = client
        .full_duplex_call(tokio_stream::empty())
        .await
        .context("FullDuplexCall")?
        .into_inner();
    let got = sizes(&mut stream).await?;
    ensure!(got.is_empty(), "{} responses, want none", got.len());
    Ok(())
}

async fn timeout_on_sleeping_server(mut client: Client) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(StreamingOutputCallRequest {
            payload: zeros(27_182),
            ..StreamingOutputCallRequest::default()
        })
        .await?;
    let mut request = Request::new(ReceiverStream::new(receiver));
    request.set_timeout(Duration::from_millis(1));
    let result = async {
        let mut stream = client.full_duplex_call(request).await?.into_inner();
        stream.message().await
    }
    .await;
    // The request stream stays open until the call is over: the client waits, as the case says.
    drop(sender);
    check_status(result, Code::DeadlineExceeded, None)
}

/// A call dropped mid-way must leave the channel serving: the next call succeeds.
async fn still_serving(client: &mut Client) -> anyhow::Result<()> {
    client
        .empty_call(Empty {})
        .await
        .context("an EmptyCall after the cancelled call")?;
    Ok(())
}

async fn cancel_after_begin(mut client: Client) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::channel::<StreamingInputCallRequest>(1);
    // Boxed, so that dropping it below really drops the call, which is what cancels it.
    let mut caller = client.clone();
    let mut call = Box::pin(async move { caller.streaming_input_call(ReceiverStream::new(receiver)).await });
    // Polled for a while, the call sends its headers and then waits for requests that never
    // come; it must not end by itself.
    if let Ok(result) = tokio::time::timeout(Duration::from_millis(100), &mut call).await {
        bail!("the call ended before it was cancelled: {result:?}");
    }
    drop(call);
    drop(sender);
    still_serving(&mut client).await
}

async fn cancel_after_first_response(mut client: Client) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(StreamingOutputCallRequest {
            response_parameters: vec![sized(31_415)],
            payload: zeros(27_182),
            ..StreamingOutputCallRequest::default()
        })
        .await?;
    let mut stream = client
        .full_duplex_call(ReceiverStream::new(receiver))
        .await
        .context("FullDuplexCall")?
        .into_inner();
    let first = stream
        .message()
        .await
        .context("the first response")?
        .ok_or_else(|| anyhow!("the stream ended before its first response"))?;
    check_payload(first.payload.as_ref(), 31_415)?;
    drop(stream);
    drop(sender);
    still_serving(&mut client).await
}

fn with_echo_metadata<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(ECHO_INITIAL, MetadataValue::from_static(INITIAL_VALUE));
    metadata.insert_bin(ECHO_TRAILING, MetadataValue::from_bytes(&TRAILING_VALUE));
    request
}

/// Exactly one `x-grpc-test-echo-initial` in `initial`, one `x-grpc-test-echo-trailing-bin`
/// in `trailing`, each with the value sent.
fn check_echoed(initial: &MetadataMap, trailing: &MetadataMap) -> anyhow::Result<()> {
    let values: Vec<_> = initial.get_all(ECHO_INITIAL).iter().collect();
    ensure!(
        values == [INITIAL_VALUE],
        "initial metadata {}: {values:?}, want [{INITIAL_VALUE:?}]",
        ECHO_INITIAL
    );
    let values: Vec<_> = trailing
        .get_all_bin(ECHO_TRAILING)
        .iter()
        .map(|v| v.to_bytes())
        .collect();
    ensure!(
        values.len() == 1 && values[0].as_ref().ok().map(|b| &b[..]) == Some(&TRAILING_VALUE[..]),
        "trailing metadata {}: {values:?}, want [{TRAILING_VALUE:?}]",
        ECHO_TRAILING
    );
    Ok(())
}

async fn custom_metadata(mut client: Client) -> anyhow::Result<()> {
    let reply = client
        .unary_call(with_echo_metadata(large_request()))
        .await
        .context("UnaryCall")?;
    check_payload(reply.get_ref().payload.as_ref(), LARGE_RESPONSE)?;
    // tonic hands a unary call's headers and trailers over as one map.
    let metadata = reply.metadata();
    check_echoed(metadata, metadata).context("UnaryCall")?;

    let request = StreamingOutputCallRequest {
        response_parameters: vec![sized(LARGE_RESPONSE)],
        payload: zeros(LARGE_REQUEST),
        ..StreamingOutputCallRequest::default()
    };
    let response = client
        .full_duplex_call(with_echo_metadata(tokio_stream::once(request)))
        .await
        .context("FullDuplexCall")?;
    let initial = response.metadata().clone();
    let mut stream = response.into_inner();
    let got = sizes(&mut stream).await?;
    ensure!(
        got == [LARGE_RESPONSE],
        "FullDuplexCall response sizes {got:?}, want [{LARGE_RESPONSE}]"
    );
    let trailing = stream
        .trailers()
        .await
        .context("FullDuplexCall trailers")?
        .unwrap_or_default();
    check_echoed(&initial, &trailing).context("FullDuplexCall")
}

fn echo_status(message: &str) -> Option<EchoStatus> {
    Some(EchoStatus {
        code: 2,
        message: message.to_owned(),
    })
}

async fn status_code_and_message(mut client: Client) -> anyhow::Result<()> {
    let request = SimpleRequest {
        response_status: echo_status(STATUS_MESSAGE),
        ..SimpleRequest::default()
    };
    let result = client.unary_call(request).await;
    check_status(result, Code::Unknown, Some(STATUS_MESSAGE)).context("UnaryCall")?;

    let request = StreamingOutputCallRequest {
        response_status: echo_status(STATUS_MESSAGE),
        ..StreamingOutputCallRequest::default()
    };
    let result = async {
        let mut stream = client.full_duplex_call(tokio_stream::once(request)).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok(())
    }
    .await;
    check_status(result, Code::Unknown, Some(STATUS_MESSAGE)).context("FullDuplexCall")
}

async fn special_status_message(mut client: Client) -> anyhow::Result<()> {
    let mut request = Request::new(SimpleRequest {
        response_status: echo_status(SPECIAL_STATUS_MESSAGE),
        ..SimpleRequest::default()
    });
    request.set_timeout(Duration::from_secs(10));
    let result = client.unary_call(request).await;
    check_status(result, Code::Unknown, Some(SPECIAL_STATUS_MESSAGE))
}

async fn unimplemented_method(mut client: Client) -> anyhow::Result<()> {
    let result = client.unimplemented_call(Empty {}).await;
    check_status(result, Code::Unimplemented, None)
}

async fn unimplemented_service(channel: &ServiceChannel) -> anyhow::Result<()> {
    let result = UnimplementedServiceClient::new(channel.clone())
        .unimplemented_call(Empty {})
        .await;
    check_status(result, Code::Unimplemented, None)
}

async fn client_compressed_unary(client: Client) -> anyhow::Result<()> {
    let request = |expect| SimpleRequest {
        expect_compressed: flag(expect),
        ..large_request()
    };
    let probe = client.clone().unary_call(request(true)).await;
    check_status(probe, Code::InvalidArgument, None)
        .context("the probe (expect_compressed, sent uncompressed): does the server check CompressedRequest?")?;
    let reply = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .unary_call(request(true))
        .await
        .context("UnaryCall compressed")?;
    check_payload(reply.get_ref().payload.as_ref(), LARGE_RESPONSE)?;
    let reply = client
        .clone()
        .unary_call(request(false))
        .await
        .context("UnaryCall uncompressed")?;
    check_payload(reply.get_ref().payload.as_ref(), LARGE_RESPONSE)
}

async fn server_compressed_unary(client: Client) -> anyhow::Result<()> {
    let mut client = client.accept_compressed(CompressionEncoding::Gzip);
    for compressed in [true, false] {
        let flags = MessageFlags::default();
        let mut request = Request::new(SimpleRequest {
            response_compressed: flag(compressed),
            ..large_request()
        });
        request.extensions_mut().insert(flags.clone());
        let reply = client
            .unary_call(request)
            .await
            .with_context(|| format!("UnaryCall with response_compressed {compressed}"))?;
        check_payload(reply.get_ref().payload.as_ref(), LARGE_RESPONSE)?;
        ensure!(
            flags.compressed() == [compressed],
            "response_compressed {compressed}: the response's message flags were {:?}",
            flags.compressed()
        );
    }
    Ok(())
}

async fn client_compressed_streaming(client: Client) -> anyhow::Result<()> {
    let message = |expect, size| StreamingInputCallRequest {
        expect_compressed: flag(expect),
        payload: zeros(size),
    };
    let probe = client
        .clone()
        .streaming_input_call(tokio_stream::once(message(true, 27_182)))
        .await;
    check_status(probe, Code::InvalidArgument, None)
        .context("the probe (expect_compressed, sent uncompressed): does the server check CompressedRequest?")?;
    let reply = client
        .send_compressed(CompressionEncoding::Gzip)
        .streaming_input_call(tokio_stream::iter([message(true, 27_182), message(false, 45_904)]))
        .await
        .context("StreamingInputCall compressed")?;
    let total = reply.into_inner().aggregated_payload_size;
    ensure!(total == 73_086, "aggregated_payload_size {total}, want 73086");
    Ok(())
}

async fn server_compressed_streaming(client: Client) -> anyhow::Result<()> {
    let mut client = client.accept_compressed(CompressionEncoding::Gzip);
    let parameters = |compressed, size| ResponseParameters {
        compressed: flag(compressed),
        ..sized(size)
    };
    let flags = MessageFlags::default();
    let mut request = Request::new(StreamingOutputCallRequest {
        response_parameters: vec![parameters(true, 31_415), parameters(false, 92_653)],
        ..StreamingOutputCallRequest::default()
    });
    request.extensions_mut().insert(flags.clone());
    let mut stream = client
        .streaming_output_call(request)
        .await
        .context("StreamingOutputCall")?
        .into_inner();
    let got = sizes(&mut stream).await?;
    ensure!(got == [31_415, 92_653], "response sizes {got:?}, want [31415, 92653]");
    ensure!(
        flags.compressed() == [true, false],
        "the responses' message flags were {:?}, want [true, false]",
        flags.compressed()
    );
    Ok(())
}
