//! A write timeout for connections: a client that stops reading its response is cut off.
//!
//! Replies are produced into a channel whatever the client does, so a client that stops
//! reading never holds the model. It would still hold its connection (and the reply's
//! buffered chunks) for as long as it likes, and enough such clients fill the connection
//! cap with requests "in flight". [`WriteTimeout`] ends that: once the socket has refused
//! to take any byte for [`Limits::write_timeout`](crate::Limits::write_timeout), the next
//! write fails with `TimedOut`, and hyper closes the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An I/O object whose writes fail once they have made no progress for `limit`.
pub struct WriteTimeout<T> {
    inner: T,
    limit: Duration,
    /// Running while a write (or flush) is pending; reset by every write that progresses.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set when the timeout struck, for the caller's log and metrics.
    struck: Arc<AtomicBool>,
}

impl<T> WriteTimeout<T> {
    /// Wraps `inner`; `struck` becomes true when a write times out.
    pub fn new(inner: T, limit: Duration, struck: Arc<AtomicBool>) -> WriteTimeout<T> {
        WriteTimeout {
            inner,
            limit,
            timer: None,
            struck,
        }
    }

    /// After the inner object returned `Pending`: starts the timer if it is not running and
    /// polls it (which registers the waker); `TimedOut` once it has run out.
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timer = None;
                self.struck.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {} s", self.limit.as_secs_f64()),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// After the inner object made progress (or failed): the stall is over.
    fn progressed<R>(&mut self, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.timer = None;
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx),
            ready => this.progressed(ready),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stalled(cx),
            ready => this.progressed(ready),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stalled(cx),
            ready => this.progressed(ready),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.stalled(cx),
            ready => this.progressed(ready),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_fails_the_write_after_the_limit() {
        let (near, mut far) = tokio::io::duplex(64);
        let struck = Arc::new(AtomicBool::new(false));
        let mut io = WriteTimeout::new(near, Duration::from_secs(5), Arc::clone(&struck));
        // The pipe takes 64 bytes; the rest waits for a reader that never comes.
        let started = Instant::now();
        let err = io.write_all(&[7u8; 1000]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("read nothing for 5 s"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(struck.load(Ordering::Relaxed));
        // What was taken before the stall is there.
        let mut got = [0u8; 64];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [7u8; 64]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut_off() {
        let (near, mut far) = tokio::io::duplex(64);
        let struck = Arc::new(AtomicBool::new(false));
        let mut io = WriteTimeout::new(near, Duration::from_secs(5), Arc::clone(&struck));
        // 64 bytes every 4 s: each stall is shorter than the limit, the whole write far
        // longer.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut chunk = [0u8; 64];
            while total < 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += far.read(&mut chunk).await.unwrap();
            }
            total
        });
        let started = Instant::now();
        io.write_all(&[1u8; 1024]).await.unwrap();
        io.flush().await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(40));
        assert_eq!(reader.await.unwrap(), 1024);
        assert!(!struck.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_pass_through_untimed() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = WriteTimeout::new(near, Duration::from_secs(1), Arc::default());
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            far.write_all(b"late").await.unwrap();
        });
        let mut got = [0u8; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"late");
        writer.await.unwrap();
    }
}
