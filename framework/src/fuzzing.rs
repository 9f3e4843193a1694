//! The checks the fuzz targets in `fuzz/` run on arbitrary bytes, one per parser of what a peer
//! sends: a `grpc-timeout`, the HTTP/2 frames a server writes to a client, a request body's
//! gRPC messages, a registry entry and a `grpc-status`.
//!
//! Each `check_*` panics if, and only if, the code it checks panics or breaks one of its own
//! promises (a round trip, or a result that must not depend on how the bytes were cut). They
//! live here, not in the fuzz crate, so that the fuzz targets (nightly, `cargo fuzz`) and the
//! corpus regression test (stable, `cargo test`) run the very same checks. Only for those two:
//! the module is hidden and needs the `fuzzing` feature.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as _, Frame};
use tonic::Code;
use tonic::body::Body;

use crate::ServiceInfo;
use crate::http2::frames::{FrameHead, FrameScan};
use crate::http2::grpc;
use crate::server::LimitedMessages;

/// A fuzz target's check of one input: it panics on a finding.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (its file in `fuzz/fuzz_targets/` and its corpus directory in
/// `fuzz/corpus/`) with its check, so that the corpus test can tell a target left out.
pub const TARGETS: &[(&str, Check)] = &[
    ("grpc_timeout", check_grpc_timeout),
    ("frame_scan", check_frame_scan),
    ("request_messages", check_request_messages),
    ("service_info", check_service_info),
    ("grpc_status", check_grpc_status),
];

/// The largest timeout `grpc-timeout` can say in its own units: 8 digits of seconds. (Hours go
/// further, but jovian never writes them: seconds are the coarsest unit it rounds up to.)
const MAX_ENCODABLE: Duration = Duration::from_secs(99_999_999);

/// `data` as a `grpc-timeout` parses exactly when it has the grammar's shape (1 to 8 ASCII
/// digits and a unit), to the value it says; what parses, written back, reads as at least as
/// long (up to [`MAX_ENCODABLE`]) and at most a second longer. The first 12 bytes, if there
/// are as many, are also taken as any `Duration` at all, for the writing side alone.
pub fn check_grpc_timeout(data: &[u8]) {
    let parsed = grpc::parse_timeout(data);
    assert_eq!(
        parsed,
        timeout_by_the_grammar(data),
        "{:?}",
        String::from_utf8_lossy(data)
    );
    if let Some(timeout) = parsed {
        check_timeout_round_trip(timeout);
    }
    if let Some((secs, rest)) = data.split_first_chunk::<8>()
        && let Some((nanos, _)) = rest.split_first_chunk::<4>()
    {
        let nanos = u32::from_be_bytes(*nanos) % 1_000_000_000;
        check_timeout_round_trip(Duration::new(u64::from_be_bytes(*secs), nanos));
    }
}

/// gRPC's `TimeoutValue TimeoutUnit`, read independently of [`grpc::parse_timeout`].
fn timeout_by_the_grammar(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if !(1..=8).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let nanos_per_unit: u128 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    let nanos = amount * nanos_per_unit;
    Some(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

fn check_timeout_round_trip(timeout: Duration) {
    let encoded = grpc::encode_timeout(timeout);
    let back = grpc::parse_timeout(encoded.as_bytes())
        .unwrap_or_else(|| panic!("{timeout:?} was written as {encoded:?}, which does not parse"));
    // The deadline a server reads must not pass before the caller's...
    assert!(
        back >= timeout.min(MAX_ENCODABLE),
        "{timeout:?} -> {encoded:?} -> {back:?}"
    );
    // ...nor be much later, and never read as passed already.
    assert!(
        back <= timeout.saturating_add(Duration::from_secs(1)),
        "{timeout:?} -> {encoded:?} -> {back:?}"
    );
    assert!(back > Duration::ZERO, "{timeout:?} -> {encoded:?} reads as passed");
}

/// The frame headers the scanner sees (the client's ping policy and the server's control-frame
/// budget count them) are those of an independent walk over the whole stream read at once,
/// however the stream is cut (see [`chunks`]).
pub fn check_frame_scan(data: &[u8]) {
    let (stream, chunks) = chunks(data);
    let mut scan = FrameScan::default();
    let mut seen = Vec::new();
    for chunk in &chunks {
        scan.scan(chunk, |head| seen.push(head));
    }
    assert_eq!(seen, frames_by_walking(stream), "chunks {:?}", lengths(&chunks));
}

/// The HTTP/2 frame headers that are all in `stream` (RFC 9113 §4.1), found by jumping from
/// header to header.
fn frames_by_walking(stream: &[u8]) -> Vec<FrameHead> {
    let (mut at, mut frames) = (0usize, Vec::new());
    while let Some(header) = stream.get(at..at + 9) {
        let length = u32::from(header[0]) << 16 | u32::from(header[1]) << 8 | u32::from(header[2]);
        frames.push(FrameHead {
            kind: header[3],
            flags: header[4],
            length,
        });
        at += 9 + length as usize;
    }
    frames
}

/// A request body with a message size limit, polled as the server polls it: each chunk comes
/// out unchanged until the first message whose length prefix says more than the limit, which
/// fails `RESOURCE_EXHAUSTED` in the chunk that completes its prefix. Where that is, and
/// whether there is one, is found by walking the whole body at once, so the result cannot
/// depend on the cuts. Input: a 2-byte big-endian limit, then what [`chunks`] reads.
pub fn check_request_messages(data: &[u8]) {
    let Some((limit, data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_be_bytes(*limit));
    let (stream, chunks) = chunks(data);
    let expected = first_too_large(stream, limit);
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
        .iter()
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let inner = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
    let mut body = LimitedMessages::new(inner, limit);
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = 0;
    for chunk in &chunks {
        let Poll::Ready(Some(polled)) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("the body ended or waited before its chunk of {} bytes", chunk.len());
        };
        let end = read + chunk.len();
        match (polled, expected) {
            (Ok(frame), expected) => {
                if let Some((at, length)) = expected {
                    assert!(at >= end, "the {length}-byte message ending its prefix at {at} passed");
                }
                assert_eq!(
                    frame.into_data().ok().as_deref(),
                    Some(*chunk),
                    "a chunk came out changed"
                );
            }
            (Err(status), Some((at, length))) => {
                assert!((read..end).contains(&at), "failed in bytes {read}..{end}, not at {at}");
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains(&format!(" {length} bytes")), "{status:?}");
                // The server stops reading at the error, and so do we.
                return;
            }
            (Err(status), None) => panic!("no message is over {limit} bytes, yet {status:?}"),
        }
        read = end;
    }
    assert_eq!(expected, None, "the message over the limit went unnoticed");
    assert!(matches!(Pin::new(&mut body).poll_frame(&mut cx), Poll::Ready(None)));
}

/// The first message whose 5-byte prefix (a flag and a big-endian u32 length, gRPC's
/// Length-Prefixed-Message) announces more than `limit`: the offset of its prefix's last byte
/// and the length announced.
fn first_too_large(stream: &[u8], limit: usize) -> Option<(usize, usize)> {
    let mut at = 0usize;
    while let Some(prefix) = stream.get(at..at + 5) {
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if length > limit {
            return Some((at + 4, length));
        }
        at += 5 + length;
    }
    None
}

/// A registry value never panics [`ServiceInfo::decode`], and one that decodes is written by
/// [`ServiceInfo::encode`] as a value that decodes to the same entry, unless it grew past the
/// size limit in the writing, which [`ServiceInfo::validate`] (every registrar's check) refuses.
pub fn check_service_info(data: &[u8]) {
    let Ok(info) = ServiceInfo::decode(data) else {
        return;
    };
    let encoded = info.encode();
    if info.validate().is_err() {
        // Near the limit, written back with the defaults it left out, it no longer fits:
        // registrars refuse to store such an entry, so no watcher ever reads it.
        assert!(encoded.len() > crate::MAX_ENTRY_BYTES, "{encoded}");
        return;
    }
    match ServiceInfo::decode(encoded.as_bytes()) {
        Ok(back) => assert_eq!(back, info, "{encoded}"),
        Err(error) => panic!("{encoded} does not decode: {error}"),
    }
}

/// A `grpc-status` header never panics [`grpc::status`]; a value that is an `i32` in decimal
/// (Go's `strconv.ParseInt(v, 10, 32)`, which grpc-go reads it with) is that code, with the
/// codes tonic does not know as `Unknown`, and anything else is no status.
pub fn check_grpc_status(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        // Not a header value h2 would hand over.
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", value);
    let expected = status_as_go_reads_it(data).map(|code| match code {
        0..=16 => Code::from_bytes(code.to_string().as_bytes()),
        _ => Code::Unknown,
    });
    assert_eq!(grpc::status(&headers), expected, "{:?}", String::from_utf8_lossy(data));
}

/// An optional sign and decimal digits, within `i32`.
fn status_as_go_reads_it(value: &[u8]) -> Option<i64> {
    let digits = value
        .strip_prefix(b"-")
        .or_else(|| value.strip_prefix(b"+"))
        .unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits
        .iter()
        .try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(i64::from(d - b'0')))?;
    let number = if value[0] == b'-' { -magnitude } else { magnitude };
    i32::try_from(number).is_ok().then_some(number)
}

/// Splits a fuzz input into a byte stream and the chunks to feed it in, so that the fuzzer
/// chooses the cuts too: the first byte says how many of the bytes after it (at most 15) are
/// chunk lengths; the rest is the stream, fed in chunks of those lengths (0 is an empty chunk,
/// as a peer may send) and then whatever is left as one last chunk.
fn chunks(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&count, data)) = data.split_first() else {
        return (&[], Vec::new());
    };
    let (lengths, stream) = data.split_at(usize::from(count % 16).min(data.len()));
    let (mut chunks, mut rest) = (Vec::new(), stream);
    for &length in lengths {
        let (chunk, after) = rest.split_at(usize::from(length).min(rest.len()));
        chunks.push(chunk);
        rest = after;
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    (stream, chunks)
}

fn lengths(chunks: &[&[u8]]) -> Vec<usize> {
    chunks.iter().map(|chunk| chunk.len()).collect()
}
