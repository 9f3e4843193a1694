//! Call deadlines, as gRPC carries them: the `grpc-timeout` header.
//!
//! A call's deadline is the one its caller set (tonic's `Request::set_timeout` writes the
//! header) or else the client's default. It spans every attempt: each attempt sends the time
//! that is left, so the instance can give up when the caller has.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use http::HeaderValue;

pub(super) const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// When a call with `headers` must be done by: its own `grpc-timeout`, else `default` from now.
pub(super) fn of(headers: &http::HeaderMap, default: Option<Duration>) -> Option<Instant> {
    let own = headers.get(GRPC_TIMEOUT).and_then(|value| parse(value.to_str().ok()?));
    own.or(default).map(|timeout| Instant::now() + timeout)
}

/// The `grpc-timeout` value for the time left until `deadline`.
///
/// At 100 ms or more it is whole milliseconds: calls made within the same millisecond of their
/// deadlines send the same value, which is made once per thread and millisecond, and which
/// HTTP/2's header compression sends as one byte after the first time. Below 100 ms it is
/// microseconds. Either way it is rounded up, never down: the server's clock for the call
/// starts when the request arrives, so the caller's deadline, which the client enforces
/// itself, passes first and the caller sees `DeadlineExceeded`, not what a server answers when
/// its copy runs out (tonic's own servers answer `Cancelled`).
pub(super) fn remaining(deadline: Instant) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(u128, HeaderValue)>> = const { RefCell::new(None) };
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let millis = left.as_nanos().div_ceil(1_000_000);
    if millis < 100 {
        return value(&encode(left));
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((at, value)) if *at == millis => value.clone(),
            _ => {
                let made = value(&encode(left));
                *last = Some((millis, made.clone()));
                made
            }
        }
    })
}

fn value(encoded: &str) -> HeaderValue {
    HeaderValue::from_str(encoded).expect("digits and a unit are a valid header value")
}

/// `grpc-timeout`'s value: at most 8 digits and a unit.
fn encode(timeout: Duration) -> String {
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

fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_in_grpc_form() {
        for timeout in [
            Duration::from_micros(1),
            Duration::from_micros(99_999),
            Duration::from_millis(1500),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 30),
        ] {
            let back = parse(&encode(timeout)).unwrap();
            assert!(
                back >= timeout && back <= timeout + Duration::from_secs(1),
                "{timeout:?} -> {back:?}"
            );
            assert!(back > Duration::ZERO, "{timeout:?} reads as passed");
        }
        assert_eq!(encode(Duration::from_nanos(1)), "1u");
        assert_eq!(encode(Duration::from_micros(4_999_990)), "5000m", "rounded up");
        assert_eq!(encode(Duration::from_millis(1500)), "1500m");
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_thread_reuses_the_value_of_the_same_millisecond() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let first = remaining(deadline);
        let second = remaining(deadline);
        let read = |v: &HeaderValue| parse(v.to_str().unwrap()).unwrap();
        assert!(read(&first) <= Duration::from_secs(3600) + Duration::from_millis(1));
        assert!(
            read(&first) - read(&second) <= Duration::from_millis(1000),
            "{first:?} {second:?}"
        );
    }
}
