//! One accepted connection as the listener sees it: whether a request is in flight, and since
//! when the connection has been waiting for one. Its socket, its service and its response
//! bodies report to it, so that the sweeper can close a connection that holds a slot without
//! using it, and never one that is answering.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::routing::future::RouteFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tower::Service;
use tower_http::timeout::TimeoutBody;

/// Milliseconds on the listener's clock (since the first call): a plain number fits an atomic.
pub(super) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Why the listener closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// No complete request head in time.
    HeaderTimeout,
    /// Idle between requests for too long.
    IdleTimeout,
    /// Waiting for a request when a new connection needed its slot.
    Evicted,
}

impl Closed {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
        }
    }
}

/// The two deadlines that apply while no request is in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waits {
    pub header: Duration,
    pub idle: Duration,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub(super) struct Conn {
    accepted: u64,
    /// Requests whose response is not yet fully handed to hyper (HTTP/2 may have many).
    in_flight: AtomicU32,
    /// Whether a request head ever arrived.
    served: AtomicBool,
    /// When the last response ended.
    idle_since: AtomicU64,
    /// When the first bytes of the next request head arrived (HTTP/1.1), if after `idle_since`.
    head_since: AtomicU64,
    /// HTTP/2 frames (pings, settings) are no sign of a coming request.
    http2: AtomicBool,
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    pub(super) fn new() -> Self {
        let now = now_ms();
        Self {
            accepted: now,
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    pub(super) fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Whether the connection is waiting for a request (and so may be closed to free its slot).
    pub(super) fn is_waiting(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.closing.load(Ordering::Relaxed)
    }

    /// When the connection is due to be closed, and why; `None` while a request is in flight.
    pub(super) fn deadline(&self, waits: Waits) -> Option<(u64, Closed)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some((
                self.accepted.saturating_add(ms(waits.header)),
                Closed::HeaderTimeout,
            ));
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        let head = self.head_since.load(Ordering::Relaxed);
        Some(if head > idle {
            (head.saturating_add(ms(waits.header)), Closed::HeaderTimeout)
        } else {
            (idle.saturating_add(ms(waits.idle)), Closed::IdleTimeout)
        })
    }

    /// Asks the connection's task to drop it. Returns false if it was already asked.
    pub(super) fn close(&self) -> bool {
        if self.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.close.notify_one();
        true
    }

    /// Resolves once [`Conn::close`] was called.
    pub(super) async fn closed(&self) {
        self.close.notified().await;
    }

    /// Bytes arrived: on an idle HTTP/1.1 connection they start the next request head, which
    /// has the header timeout from now.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.served.load(Ordering::Relaxed)
            && !self.http2.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::Relaxed) <= self.idle_since.load(Ordering::Relaxed)
        {
            self.head_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

/// Counts one request in flight on its connection, from its head until its response body is
/// dropped (finished, or abandoned with the connection).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: Arc<Conn>) -> Self {
        conn.served.store(true, Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Written before the count falls, so a sweeper that sees no request in flight sees
        // when the last one ended.
        self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The socket, telling its connection when bytes arrive.
pub(super) struct Socket {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl Socket {
    pub(super) fn new(tcp: TcpStream, conn: Arc<Conn>) -> Self {
        Self { tcp, conn }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.on_read();
        }
        read
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: every request counted in flight until its
/// response body is dropped, every request body given the body timeout.
#[derive(Clone)]
pub(super) struct Tracked {
    router: axum::Router,
    conn: Arc<Conn>,
    body_timeout: Duration,
    /// The client's address, given to handlers as axum's `ConnectInfo`.
    peer: std::net::SocketAddr,
}

impl Tracked {
    pub(super) fn new(
        router: axum::Router,
        conn: Arc<Conn>,
        body_timeout: Duration,
        peer: std::net::SocketAddr,
    ) -> Self {
        Self {
            router,
            conn,
            body_timeout,
            peer,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, request: Request<Incoming>) -> TrackedFuture {
        let guard = InFlight::start(self.conn.clone());
        let timeout = self.body_timeout;
        let mut request = request.map(|body| TimeoutBody::new(timeout, body));
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        // A router is always ready; cloning it is a reference count.
        let mut router = self.router.clone();
        TrackedFuture {
            inner: router.call(request),
            guard: Some(guard),
        }
    }
}

pin_project! {
    pub(super) struct TrackedFuture {
        #[pin]
        inner: RouteFuture<Infallible>,
        guard: Option<InFlight>,
    }
}

impl std::future::Future for TrackedFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request counted in flight until hyper drops it.
    pub(super) struct TrackedBody {
        #[pin]
        body: Body,
        _guard: Option<InFlight>,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITS: Waits = Waits {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_has_the_header_timeout_and_a_busy_one_none() {
        let conn = Arc::new(Conn::new());
        let (due, why) = conn.deadline(WAITS).unwrap();
        assert_eq!(why, Closed::HeaderTimeout);
        assert_eq!(due, conn.accepted + 10_000);

        let request = InFlight::start(conn.clone());
        assert!(conn.deadline(WAITS).is_none());
        assert!(!conn.is_waiting());
        drop(request);
        let (_, why) = conn.deadline(WAITS).unwrap();
        assert_eq!(
            why,
            Closed::IdleTimeout,
            "between requests the idle timeout applies"
        );
    }

    #[test]
    fn bytes_on_an_idle_connection_start_the_header_timeout_except_over_http2() {
        let conn = Arc::new(Conn::new());
        drop(InFlight::start(conn.clone()));
        std::thread::sleep(Duration::from_millis(5));
        conn.on_read();
        assert_eq!(conn.deadline(WAITS).unwrap().1, Closed::HeaderTimeout);

        let h2 = Arc::new(Conn::new());
        h2.set_http2();
        drop(InFlight::start(h2.clone()));
        std::thread::sleep(Duration::from_millis(5));
        h2.on_read();
        assert_eq!(h2.deadline(WAITS).unwrap().1, Closed::IdleTimeout);
    }

    #[test]
    fn two_requests_in_flight_keep_the_connection_busy_until_both_end() {
        let conn = Arc::new(Conn::new());
        let a = InFlight::start(conn.clone());
        let b = InFlight::start(conn.clone());
        drop(a);
        assert!(conn.deadline(WAITS).is_none());
        drop(b);
        assert!(conn.deadline(WAITS).is_some());
    }

    #[test]
    fn a_connection_is_closed_once() {
        let conn = Conn::new();
        assert!(conn.close());
        assert!(!conn.close());
        assert!(!conn.is_waiting());
    }
}
