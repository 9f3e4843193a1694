//! Connections a server can cut off when the shutdown deadline passes.
//!
//! A graceful stop waits for every call in flight on every connection. So each accepted
//! connection is wrapped: once the cut-off token fires, its reads and writes fail, the
//! connection ends, and the calls on it end with it. The token wakes a connection that is idle
//! too.

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
    /// This connection's own child of the server's cut-off token: checking it takes its lock,
    /// which no other connection shares.
    token: CancellationToken,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl CutOff {
    pub(super) fn new(stream: TcpStream, token: &CancellationToken) -> Self {
        let token = token.child_token();
        Self {
            stream,
            cut: Box::pin(token.clone().cancelled_owned()),
            token,
        }
    }

    /// An error once cut off.
    fn check(&self) -> io::Result<()> {
        match self.token.is_cancelled() {
            true => Err(cut_off()),
            false => Ok(()),
        }
    }

    /// After an operation that is pending: registers to be woken when cut off, so an idle
    /// connection (or one waiting to write) learns of it, or fails it if that happened.
    /// Registering only when the task is about to wait anyway keeps every other read and write
    /// to a flag check.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(cut_off())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn cut_off() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the shutdown deadline passed")
}

impl AsyncRead for CutOff {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for CutOff {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
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
