//! sluice's own accept loop: HTTP/1.1 and h2c on one port, with the limits that keep one client
//! from holding the server (SPEC §8 "Connections").
//!
//! - A connection that has not sent a complete request head within the header timeout is
//!   closed, and so is a keep-alive connection idle for the idle timeout. Both clocks run only
//!   while no request is in flight: an open SSE stream, however quiet its upstream, is never
//!   cut (its keep-alive comments are its traffic).
//! - A request body that sends nothing for the body timeout is answered 408 by the extractor
//!   that reads it.
//! - A head over the size limit, or with too many fields, is answered 431 by hyper before it
//!   is buffered further (HTTP/2: the header list size, answered 431 by h2).
//! - At most `max_connections` are open. At the limit the oldest connection waiting for a
//!   request is closed to make room (as nginx reuses keep-alive connections); when every one
//!   is answering, the new connection is closed at once. Both are counted in `/metrics`.
//! - Running out of descriptors frees one the same way, and is logged at most once a second.

mod conn;
mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ConnectionLimits;
use conn::{Socket, Tracked, Waits};
use registry::{Registry, Slot};

/// The first bytes of an HTTP/2 connection with prior knowledge (h2c).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 pings on a connection that has been quiet this long, to find peers that are gone.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 200;

/// The connection builders, configured once.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    body_timeout: Duration,
}

impl Protocols {
    fn new(limits: &ConnectionLimits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .max_headers(limits.max_header_fields)
            .max_header_size(limits.max_header_bytes)
            // hyper's read buffer grows by doubling up to this: without it, a head just under
            // the limit made it 64 KiB.
            .max_buf_size((limits.max_header_bytes + 8 * 1024).max(8 * 1024))
            // The registry keeps the head and idle clocks: hyper's own header timeout would
            // also run while a keep-alive connection waits for its next request.
            .header_read_timeout(None);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE);
        Self {
            http1,
            http2,
            body_timeout: limits.body_timeout,
        }
    }
}

/// The connection cap in use: 80% of the open-file limit, or the configured cap if lower. The
/// other fifth is left to the database pool, the upstream connections and the log: with every
/// descriptor taken by clients, sluice could accept a request and not answer it.
pub fn max_connections(limits: &ConnectionLimits) -> usize {
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    let ceiling = usize::try_from(files / 5 * 4).unwrap_or(usize::MAX).max(1);
    match limits.max_connections {
        None => ceiling,
        Some(wanted) if wanted <= ceiling => wanted,
        Some(wanted) => {
            tracing::warn!(
                wanted,
                open_file_limit = files,
                using = ceiling,
                "SLUICE_MAX_CONNECTIONS is more than the open-file limit leaves room for; \
                 raise the limit (ulimit -n) to allow more"
            );
            ceiling
        }
    }
}

/// Serves `router` until `shutdown` resolves, then lets open connections finish.
///
/// `axum::serve` tells HTTP/1.1 from h2c by reading the first 24 bytes before handing the
/// connection to hyper, whose first read then returns only those bytes: the request head
/// needs a second read, and hyper grows its read buffer from 8 to 16 KiB for it, kept for the
/// connection's life. Here the version is told by peeking, so hyper's first read sees the
/// whole head; and hyper's own builders are used, for their head limits.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let waits = Waits {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
    };
    let registry = Registry::new(waits, max_connections(&limits));
    tracing::info!(
        max_connections = registry.max(),
        header_timeout_secs = limits.header_timeout.as_secs_f64(),
        idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
        "connection limits"
    );
    let sweeper = tokio::spawn(registry.clone().sweep_forever());
    let protocols = Arc::new(Protocols::new(&limits));
    let graceful = GracefulShutdown::new();
    let mut out_of_files = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e, &registry, &mut out_of_files).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = registry.admit() else {
            // Closed at once: every open connection is answering a request.
            continue;
        };
        // Nagle's algorithm would hold small SSE frames back for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            slot,
            tcp,
            peer,
            router.clone(),
            protocols.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    // Connections being answered finish (open streams get their farewell); the others close.
    registry.close_waiting();
    graceful.shutdown().await;
    sweeper.abort();
    Ok(())
}

/// Serves one connection until it ends or the registry closes it.
async fn connection(
    slot: Slot,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    router: axum::Router,
    protocols: Arc<Protocols>,
    watcher: Watcher,
) {
    let conn = slot.conn.clone();
    let served = async {
        let Ok(h2) = speaks_h2c(&tcp).await else {
            return;
        };
        if h2 {
            conn.set_http2();
        }
        let io = TokioIo::new(Socket::new(tcp, conn.clone()));
        let service = Tracked::new(router, conn.clone(), protocols.body_timeout, peer);
        let ended = if h2 {
            watcher
                .watch(protocols.http2.serve_connection(io, service))
                .await
        } else {
            watcher
                .watch(protocols.http1.serve_connection(io, service))
                .await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    };
    tokio::select! {
        () = served => {},
        // Dropping the connection closes its socket; nothing was in flight.
        () = conn.closed() => {},
    }
    drop(slot);
}

/// Whether a new connection starts with the h2c preface, read without consuming it.
async fn speaks_h2c(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    // A client that sends the preface in pieces is given a moment for the rest.
    for _ in 0..100 {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(false)
}

/// A log line that is written at most once a second, with the count of the ones skipped.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<std::time::Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    /// Whether to write now; `skipped` tells how many were left out since the last one.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Linux's (and the BSDs') "too many open files" for the process and for the system.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A failed accept: a connection that died in the backlog is skipped. Out of descriptors, a
/// waiting connection is closed to free one and the accept retried a moment later; anything
/// else is logged and retried after a pause instead of spinning.
async fn accept_failed(e: &std::io::Error, registry: &Registry, log: &mut RateLimitedLog) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    ) {
        return;
    }
    if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
        if let Some(skipped) = log.due() {
            tracing::error!(
                error = %e,
                skipped,
                "out of file descriptors: closing a waiting connection to accept"
            );
        }
        let freed = registry.evict_one();
        tokio::time::sleep(Duration::from_millis(if freed { 5 } else { 100 })).await;
        return;
    }
    if let Some(skipped) = log.due() {
        tracing::error!(error = %e, skipped, "accepting a connection failed");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_log_writes_once_a_second_and_counts_the_rest() {
        let mut log = RateLimitedLog::default();
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        log.last = log.last.map(|t| t - Duration::from_secs(1));
        assert_eq!(log.due(), Some(2), "the two skipped are counted");
    }

    #[test]
    fn a_configured_cap_above_the_open_file_limit_is_lowered_to_fit() {
        let (files, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let ceiling = usize::try_from(files / 5 * 4).unwrap();
        let with = |max| ConnectionLimits {
            max_connections: max,
            ..ConnectionLimits::default()
        };
        assert_eq!(max_connections(&with(None)), ceiling);
        assert_eq!(max_connections(&with(Some(10))), 10.min(ceiling));
        assert_eq!(max_connections(&with(Some(usize::MAX))), ceiling);
    }
}
