//! Call deadlines, as gRPC carries them: the `grpc-timeout` header.
//!
//! A call's deadline is the one its caller set (tonic's `Request::set_timeout` writes the
//! header) or else the client's default; a server reads the same header for its copy. It spans every attempt: each attempt sends the time
//! that is left, so the instance can give up when the caller has.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::grpc::{GRPC_TIMEOUT, encode_timeout, parse_timeout};

/// When a call with `headers` must be done by: its own `grpc-timeout`, else `default` from now.
pub(crate) fn of(headers: &http::HeaderMap, default: Option<Duration>) -> Option<Instant> {
    let own = headers
        .get(GRPC_TIMEOUT)
        .and_then(|value| parse_timeout(value.as_bytes()));
    // Checked: a peer's `grpc-timeout` may be years, which some clocks cannot add.
    own.or(default).and_then(|timeout| Instant::now().checked_add(timeout))
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
pub(crate) fn remaining(deadline: Instant) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(u128, HeaderValue)>> = const { RefCell::new(None) };
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let millis = left.as_nanos().div_ceil(1_000_000);
    if millis < 100 {
        return value(&encode_timeout(left));
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((at, value)) if *at == millis => value.clone(),
            _ => {
                let made = value(&encode_timeout(left));
                *last = Some((millis, made.clone()));
                made
            }
        }
    })
}

fn value(encoded: &str) -> HeaderValue {
    HeaderValue::from_str(encoded).expect("digits and a unit are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reuses_the_value_of_the_same_millisecond() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let first = remaining(deadline);
        let second = remaining(deadline);
        let read = |v: &HeaderValue| parse_timeout(v.as_bytes()).unwrap();
        assert!(read(&first) <= Duration::from_secs(3600) + Duration::from_millis(1));
        assert!(
            read(&first) - read(&second) <= Duration::from_millis(1000),
            "{first:?} {second:?}"
        );
    }
}
