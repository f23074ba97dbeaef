//! The console's listener: at most [`CONNECTIONS_MAX`] connections at once (one more is closed
//! as soon as it is accepted), and a connection that moves no byte either way for
//! [`IDLE_TIMEOUT`] is closed, so idle keep-alive connections cannot hold the manager's file
//! descriptors (axum's `serve` has no such limits of its own).
//!
//! Invariant: every accepted connection holds one permit until it is dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, warn};

/// Connections served at once: many browsers and scripts (a page keeps one or two).
pub(super) const CONNECTIONS_MAX: usize = 128;

/// How long a connection may stay silent both ways before it is closed.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// See the module documentation.
pub(super) struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    pub(super) fn new(inner: TcpListener, connections_max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(connections_max)),
            idle,
        }
    }
}

impl Listener for Limited {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: the listener itself is fine; try again shortly.
                    warn!(%error, "the web console could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => {
                    let idle = Box::pin(tokio::time::sleep(self.idle));
                    let connection = Connection {
                        stream,
                        idle,
                        timeout: self.idle,
                        _permit: permit,
                    };
                    return (connection, peer);
                }
                Err(_) => debug!(%peer, "web console connection refused: too many open"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: its stream, the deadline of its silence, and its permit.
pub(super) struct Connection {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Bytes moved: the silence starts again.
    fn moved(&mut self) {
        let deadline = Instant::now() + self.timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// Whether the connection has been silent too long (waking this task when it will be).
    fn silent_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }

    /// `polled`, an I/O poll of the stream, seen by the silence watch: bytes moved restart it,
    /// a pending poll past the timeout fails.
    fn watched<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending if self.silent_too_long(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "web console connection idle")
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watched(cx, polled)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A peer that stops reading a response is as silent as one that sends nothing.
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watched(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watched(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `listener` with a task per connection that echoes until the connection ends.
    fn echo(mut listener: Limited) {
        tokio::spawn(async move {
            loop {
                let (mut connection, _) = listener.accept().await;
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = connection.read(&mut buffer).await {
                        if n == 0 || connection.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    async fn bound(connections_max: usize, idle: Duration) -> (SocketAddr, Limited) {
        let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = inner.local_addr().expect("address");
        (address, Limited::new(inner, connections_max, idle))
    }

    /// Whether the server still answers on `stream` (false: it closed it).
    async fn answers(stream: &mut TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut got = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got));
        matches!(read.await, Ok(Ok(_))) && &got == b"ping"
    }

    #[tokio::test]
    async fn a_connection_past_the_limit_is_closed_and_a_freed_place_is_taken_again() {
        let (address, listener) = bound(3, Duration::from_secs(60)).await;
        echo(listener);
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            assert!(answers(&mut stream).await);
            open.push(stream);
        }
        let mut refused = TcpStream::connect(address)
            .await
            .expect("the kernel accepts");
        assert!(!answers(&mut refused).await, "a fourth is closed");
        drop(open.pop());
        // The server notices the close, then the place is free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            if answers(&mut stream).await {
                break;
            }
            assert!(Instant::now() < deadline, "the freed place was never taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_talking_one_is_not() {
        // A second of silence is allowed, ten times the pause of the talking one, so a loaded
        // machine's stalls cannot close it.
        let (address, listener) = bound(8, Duration::from_secs(1)).await;
        echo(listener);
        let mut silent = TcpStream::connect(address).await.expect("connect");
        let mut talking = TcpStream::connect(address).await.expect("connect");
        assert!(answers(&mut silent).await && answers(&mut talking).await);
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(answers(&mut talking).await, "bytes move: it stays open");
        }
        // The silent one was closed by the server after a second: it reads the end.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest));
        assert!(matches!(read.await, Ok(Ok(0)) | Ok(Err(_))), "closed");
    }
}
