//! Connections the App can cut off when the shutdown deadline passes.
//!
//! tonic's graceful stop waits for every in-flight call on every connection, and aborting the
//! serve task leaves the connection tasks it spawned running. So each accepted connection is
//! wrapped: once the cut-off token fires, its reads and writes fail, hyper drops the
//! connection, and the calls on it end. The token wakes a connection that is idle too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub(super) struct CutOff {
    stream: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl CutOff {
    pub(super) fn new(stream: TcpStream, token: CancellationToken) -> Self {
        Self {
            stream,
            cut: Box::pin(token.cancelled_owned()),
        }
    }

    /// Ready with an error once cut off; otherwise registers to be woken when that happens.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the shutdown deadline passed",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CutOff {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutOff {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Poll::Ready(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for CutOff {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
