//! Call deadlines, as gRPC carries them: the `grpc-timeout` header.
//!
//! A call's deadline is the one its caller set (tonic's `Request::set_timeout` writes the
//! header) or else the client's default. It spans every attempt: each attempt sends the time
//! that is left, so the instance can give up when the caller has.

use std::time::{Duration, Instant};

use tonic::body::Body;

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When `request` must be done by: its own `grpc-timeout`, else `default` from now.
pub(super) fn of(request: &http::Request<Body>, default: Option<Duration>) -> Option<Instant> {
    let own = request
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|value| parse(value.to_str().ok()?));
    own.or(default).map(|timeout| Instant::now() + timeout)
}

/// Writes the time left until `deadline` into `request`'s `grpc-timeout`.
pub(super) fn set_remaining(request: &mut http::Request<Body>, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    request.headers_mut().insert(
        GRPC_TIMEOUT,
        http::HeaderValue::from_str(&encode(left)).expect("digits and a unit are a valid header value"),
    );
}

/// Whether a transport failure is the deadline passing inside the channel.
pub(super) fn expired(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// `grpc-timeout`'s value: at most 8 digits and a unit.
fn encode(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let micros = timeout.as_micros();
    if micros <= MAX {
        // Rounded up, so that a deadline never reads as already passed.
        return format!("{}u", micros.max(1));
    }
    let millis = timeout.as_millis();
    if millis <= MAX {
        return format!("{millis}m");
    }
    format!("{}S", timeout.as_secs().min(MAX as u64))
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
            Duration::from_millis(1500),
            Duration::from_secs(5),
            Duration::from_secs(86_400 * 30),
        ] {
            let back = parse(&encode(timeout)).unwrap();
            assert!(
                back <= timeout + Duration::from_micros(1) && back + Duration::from_secs(1) >= timeout,
                "{timeout:?} -> {back:?}"
            );
        }
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
