//! Test support for jovian: the conformance backends, a harness that runs real etcd
//! processes, a guard for other child processes, and small helpers for waiting on conditions
//! with a deadline.

#![forbid(unsafe_code)]

pub mod backends;
pub mod etcd;
pub mod floods;
pub mod go_peers;
pub mod greeters;
pub mod h2peer;
pub mod load;
pub mod pki;
pub mod process;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `check` every 10 ms until it returns `Some`, failing the test with `what` after
/// `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `future`, failing the test with `what` if it takes longer than `deadline`.
pub async fn within<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Installs a test log subscriber once (`RUST_LOG` picks the level; quiet by default).
pub use jovian::testing::init_logging;

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP server");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&response[..at], &response[at + 4..]),
        None => (&response[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head
        .lines()
        .any(|line| line.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    // Go's servers (etcd's /metrics) send a large body in chunks, whose size lines would
    // otherwise split lines of the body now and then.
    let body = match chunked {
        true => unchunk(body),
        false => body.to_vec(),
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The body of a `Transfer-Encoding: chunked` response: each chunk is its size in hex (and
/// maybe extensions), CRLF, the bytes, CRLF; a chunk of size 0 ends it. A malformed rest is
/// kept as it is.
fn unchunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            body.extend_from_slice(rest);
            return body;
        };
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size {
            body.extend_from_slice(&data[..size.min(data.len())]);
            return body;
        }
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    body.extend_from_slice(rest);
    body
}

#[cfg(test)]
mod tests {
    use super::unchunk;

    #[test]
    fn a_chunked_body_is_joined_even_where_a_chunk_splits_a_line() {
        let wire = b"19\r\netcd_debugging_mvcc_watch\r\n12;ext=1\r\ner_total 3\nnext 4\n\r\n0\r\n\r\n";
        assert_eq!(unchunk(wire), b"etcd_debugging_mvcc_watcher_total 3\nnext 4\n");
    }

    #[test]
    fn a_malformed_chunked_body_is_kept_as_it_is() {
        assert_eq!(unchunk(b"zz\r\nplain"), b"zz\r\nplain");
    }
}
