//! What gRPC carries in HTTP/2 headers, read and written the same way by clients and
//! servers: the call's deadline (`grpc-timeout`) and its status (`grpc-status`).
//!
//! Both are read from whatever a peer sends, so junk is no value rather than an error: a
//! `grpc-timeout` that does not parse is no deadline, as grpc-go reads it, and a `grpc-status`
//! that is not a number is no status.

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use tonic::Code;

/// The header a call's deadline travels in, as the time left.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `grpc-timeout`'s value for `timeout`, rounded up, never down (the deadline a server reads
/// must not pass before the caller's): microseconds below 100 ms, whole milliseconds up to 8
/// digits of them, seconds beyond.
pub(crate) fn encode_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    if millis < 100 {
        let micros = timeout.as_nanos().div_ceil(1000).max(1);
        return format!("{micros}u");
    }
    if millis <= MAX {
        return format!("{millis}m");
    }
    format!("{}S", timeout.as_nanos().div_ceil(1_000_000_000).min(MAX))
}

/// Ends a response stream with `status` in its trailers (a reset when the status cannot be
/// written as headers).
pub(crate) fn end_with_status(stream: &mut h2::SendStream<bytes::Bytes>, status: &tonic::Status) {
    let mut trailers = HeaderMap::new();
    match status.add_header(&mut trailers) {
        Ok(()) => {
            let _ = stream.send_trailers(trailers);
        }
        Err(_) => stream.send_reset(h2::Reason::INTERNAL_ERROR),
    }
}

/// The status in `headers` (a response's head, or its trailers), if it has a valid one.
pub(crate) fn status(headers: &HeaderMap) -> Option<Code> {
    let status = headers.get(GRPC_STATUS)?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_junk_is_no_timeout() {
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for junk in [
            &b""[..],
            b"S",
            b"123456789S",
            b"12x",
            b"-1S",
            b"1.5S",
            b"12",
            b"+1S",
            "١S".as_bytes(),
        ] {
            assert_eq!(parse_timeout(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }

    #[test]
    fn timeouts_round_trip_rounded_up() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_micros(1),
            Duration::from_micros(99_999),
            Duration::from_millis(1500),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 30),
            Duration::from_secs(86_400 * 365 * 10),
        ] {
            let back = parse_timeout(encode_timeout(timeout).as_bytes()).unwrap();
            assert!(
                back >= timeout.min(Duration::from_secs(99_999_999)),
                "{timeout:?} -> {back:?}"
            );
            assert!(back <= timeout + Duration::from_secs(1), "{timeout:?} -> {back:?}");
            assert!(back > Duration::ZERO, "{timeout:?} reads as passed");
        }
        assert_eq!(encode_timeout(Duration::from_nanos(1)), "1u");
        assert_eq!(encode_timeout(Duration::from_micros(4_999_990)), "5000m", "rounded up");
    }

    #[test]
    fn a_status_is_a_number_or_nothing() {
        let mut headers = HeaderMap::new();
        assert_eq!(status(&headers), None);
        headers.insert(GRPC_STATUS, "5".parse().unwrap());
        assert_eq!(status(&headers), Some(Code::NotFound));
        headers.insert(GRPC_STATUS, "five".parse().unwrap());
        assert_eq!(status(&headers), None);
    }
}
