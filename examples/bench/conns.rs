//! The connections scenario: what sluice holds for connections that have not sent a complete
//! request. N connections that send nothing, held until sluice has accepted them, with sluice's
//! RSS before, while they are open and after they are closed; M connections whose 64 KiB head
//! must be answered 431; N that each send an unfinished 30 KiB request head, measured like the
//! first; and, with a short header timeout, that sluice closes such connections itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::drive::Errors;
use crate::procs;

/// The header timeout sluice is given while connections are held and measured: far longer
/// than the scenario, so that sluice closes none of them itself.
pub const HELD_HEADER_TIMEOUT_SECS: u64 = 600;
/// The header timeout of the last part, which checks that sluice closes them.
pub const SHORT_HEADER_TIMEOUT_SECS: u64 = 2;
/// Padding of the unfinished head (under sluice's 32 KiB limit).
pub const PARTIAL_PAD: usize = 30 * 1024;
/// Padding of the oversized head (over it).
pub const OVERSIZED_PAD: usize = 64 * 1024;
/// Connections being opened at once (the listener's backlog is not the thing measured).
pub const CONNECTS_IN_FLIGHT: usize = 100;
/// How long to wait after sluice has accepted and read everything, before reading its RSS.
const SETTLE: Duration = Duration::from_secs(1);
/// Bound on each wait for sluice (accepting, reading, closing).
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Bound on one connect, one write, one read of a response.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// Requests (`GET /healthz`, [`TRAFFIC_IN_FLIGHT`] at a time) sent after a batch is closed.
pub const TRAFFIC_REQUESTS: usize = 200;
const TRAFFIC_IN_FLIGHT: usize = 20;

/// The start of a request head whose one field is then padded and never ended.
const HEAD_START: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";

/// Oversized heads sent for N held connections.
pub fn oversized_count(n: usize) -> usize {
    n.min(500)
}

/// Connections in the header-timeout check for N held connections (half silent, half with an
/// unfinished head).
pub fn timeout_count(n: usize) -> usize {
    n.min(200)
}

fn partial_head() -> Arc<[u8]> {
    let mut head = HEAD_START.to_vec();
    head.resize(HEAD_START.len() + PARTIAL_PAD, b'a');
    head.into()
}

fn oversized_head() -> Arc<[u8]> {
    let mut head = HEAD_START.to_vec();
    head.resize(HEAD_START.len() + OVERSIZED_PAD, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head.into()
}

/// One batch of connections held open at once.
#[derive(Debug, Default)]
pub struct Held {
    pub requested: usize,
    /// Bytes each connection sent.
    pub sent_bytes: usize,
    /// Connections the client established (and wrote to).
    pub opened: usize,
    /// Whether sluice had accepted every one and read every byte within the wait.
    pub settled: bool,
    /// From the first connect until sluice had accepted and read everything.
    pub open_wall: Duration,
    pub fds_before: Option<usize>,
    pub fds_open: Option<usize>,
    /// sluice's established sockets on its port, from `/proc/PID/net/tcp`, once settled.
    pub sockets_open: Option<usize>,
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    /// From closing the client's ends until sluice's descriptors were back; `None`: not within
    /// the wait.
    pub closed_in: Option<Duration>,
    /// VmRSS 1 s and 5 s after the descriptors were back.
    pub rss_closed_kib: Option<u64>,
    pub rss_closed_later_kib: Option<u64>,
    /// VmRSS after [`TRAFFIC_REQUESTS`] requests that followed (freed memory may go back to the
    /// system only when the allocator runs again).
    pub rss_after_traffic_kib: Option<u64>,
    pub errors: Errors,
}

impl Held {
    pub fn rss_per_conn_kib(&self) -> Option<f64> {
        let (before, open) = (self.rss_before_kib?, self.rss_open_kib?);
        (self.opened > 0).then(|| (open as f64 - before as f64) / self.opened as f64)
    }

    fn failed(&self) -> bool {
        self.opened != self.requested
            || !self.settled
            || self.closed_in.is_none()
            || self.errors.count > 0
    }
}

/// Heads over the limit, all sent at once.
#[derive(Debug, Default)]
pub struct Oversized {
    pub requested: usize,
    pub sent_bytes: usize,
    /// Answered `HTTP/1.1 431`.
    pub refused_431: usize,
    /// Anything else (another status, no answer, a failed connect).
    pub other: Errors,
    pub wall: Duration,
    pub rss_before_kib: Option<u64>,
    /// VmHWM during the part (reset before it, if the kernel allowed).
    pub rss_peak_kib: Option<u64>,
    pub peak_reset: bool,
    /// VmRSS 1 s after sluice's descriptors were back.
    pub rss_after_kib: Option<u64>,
}

/// Whether sluice closes connections that send no complete head.
#[derive(Debug, Default)]
pub struct TimeoutCheck {
    pub header_timeout_secs: u64,
    pub silent: usize,
    pub partial: usize,
    /// Connections sluice closed (end of stream or reset) before the client gave up.
    pub closed: usize,
    /// Per closed connection, from its connect to the close (µs).
    pub closed_after_us: Vec<u32>,
    /// Bytes sluice sent on them before closing (none expected).
    pub answered_bytes: usize,
    pub errors: Errors,
}

impl TimeoutCheck {
    fn failed(&self) -> bool {
        self.closed != self.silent + self.partial || self.errors.count > 0
    }
}

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct ConnsReport {
    pub requested: usize,
    pub header_timeout_secs: u64,
    pub max_connections: usize,
    pub silent: Held,
    pub partial: Held,
    pub oversized: Oversized,
    pub timeout: Option<TimeoutCheck>,
    /// Set if sluice died during the scenario.
    pub sluice_exit: Option<String>,
    /// Why the header-timeout check could not run.
    pub timeout_error: Option<String>,
}

impl ConnsReport {
    pub fn failed(&self) -> bool {
        self.silent.failed()
            || self.partial.failed()
            || self.oversized.refused_431 != self.oversized.requested
            || self.timeout.as_ref().is_none_or(TimeoutCheck::failed)
            || self.timeout_error.is_some()
            || self.sluice_exit.is_some()
    }
}

fn io_error(what: &str, e: &std::io::Error) -> String {
    format!("{what}: {}", std::io::Error::from(e.kind()))
}

/// Connects and sends `payload`.
async fn open_one(addr: SocketAddr, payload: Arc<[u8]>) -> Result<TcpStream, String> {
    let mut tcp = match tokio::time::timeout(IO_LIMIT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(io_error("connect", &e)),
        Err(_) => return Err(format!("connect: not within {IO_LIMIT:?}")),
    };
    if !payload.is_empty() {
        match tokio::time::timeout(IO_LIMIT, tcp.write_all(&payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io_error("write", &e)),
            Err(_) => return Err(format!("write: not within {IO_LIMIT:?}")),
        }
    }
    Ok(tcp)
}

/// Opens `n` connections, [`CONNECTS_IN_FLIGHT`] at a time, each sending `payload`.
async fn open_many(addr: SocketAddr, n: usize, payload: &Arc<[u8]>) -> (Vec<TcpStream>, Errors) {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| open_one(addr, Arc::clone(payload)))
        .buffer_unordered(CONNECTS_IN_FLIGHT)
        .collect()
        .await;
    let mut errors = Errors::default();
    let mut streams = Vec::with_capacity(n);
    for result in results {
        match result {
            Ok(tcp) => streams.push(tcp),
            Err(e) => errors.add(e),
        }
    }
    (streams, errors)
}

/// Waits until sluice has at least `fds` descriptors and no unread byte on its sockets.
async fn wait_settled(pid: u32, port: u16, fds: usize) -> bool {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let have = procs::fd_count(pid).unwrap_or(0);
        let unread = procs::tcp_sockets(pid, port).map_or(0, |s| s.unread_bytes);
        if have >= fds && unread == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until sluice has at most `fds` descriptors; returns how long that took.
async fn wait_closed(pid: u32, fds: usize) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if procs::fd_count(pid).is_none_or(|have| have <= fds) {
            return Some(started.elapsed());
        }
        if started.elapsed() >= WAIT_LIMIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds `n` connections that each sent `payload`, reads sluice's RSS, closes them.
async fn hold(pid: u32, addr: SocketAddr, n: usize, payload: Arc<[u8]>, what: &str) -> Held {
    let mut held = Held {
        requested: n,
        sent_bytes: payload.len(),
        ..Held::default()
    };
    held.fds_before = procs::fd_count(pid);
    held.rss_before_kib = procs::status_kib(pid, "VmRSS");
    eprintln!("bench: connections: opening {n} {what}");
    let started = Instant::now();
    let (streams, errors) = open_many(addr, n, &payload).await;
    held.errors = errors;
    held.opened = streams.len();
    let fds_before = held.fds_before.unwrap_or(0);
    held.settled = wait_settled(pid, addr.port(), fds_before + streams.len()).await;
    held.open_wall = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    held.fds_open = procs::fd_count(pid);
    held.sockets_open = procs::tcp_sockets(pid, addr.port()).map(|s| s.established);
    held.rss_open_kib = procs::status_kib(pid, "VmRSS");
    eprintln!(
        "bench: connections: {} of {n} open{}; closing them",
        held.opened,
        if held.settled {
            ""
        } else {
            " (sluice had not accepted or read them all)"
        }
    );
    drop(streams);
    held.closed_in = wait_closed(pid, fds_before).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.rss_closed_kib = procs::status_kib(pid, "VmRSS");
    tokio::time::sleep(Duration::from_secs(4)).await;
    held.rss_closed_later_kib = procs::status_kib(pid, "VmRSS");
    traffic(addr, &mut held.errors).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.rss_after_traffic_kib = procs::status_kib(pid, "VmRSS");
    held
}

/// [`TRAFFIC_REQUESTS`] ordinary requests, so that sluice's worker threads allocate again.
async fn traffic(addr: SocketAddr, errors: &mut Errors) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(IO_LIMIT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            errors.add(format!("traffic: no client: {e}"));
            return;
        }
    };
    let url = format!("http://{addr}/healthz");
    let results: Vec<_> = futures::stream::iter(0..TRAFFIC_REQUESTS)
        .map(|_| {
            let request = client.get(&url).send();
            async move {
                match request.await {
                    Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()).map_err(|e| {
                        format!("traffic: GET /healthz body: {}", crate::drive::chain(&e))
                    }),
                    Ok(r) => Err(format!("traffic: GET /healthz: HTTP {}", r.status())),
                    Err(e) => Err(format!(
                        "traffic: GET /healthz: {}",
                        crate::drive::chain(&e)
                    )),
                }
            }
        })
        .buffer_unordered(TRAFFIC_IN_FLIGHT)
        .collect()
        .await;
    for result in results {
        if let Err(e) = result {
            errors.add(e);
        }
    }
}

/// Reads what comes back until the end of the stream, an error, 4 KiB, or `limit`.
/// Returns the bytes and whether sluice closed the connection (end of stream or reset).
async fn read_reply(tcp: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> (Vec<u8>, bool) {
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (reply, true),
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() >= 4096 {
                    return (reply, false);
                }
            }
            Err(_) => return (reply, false),
        }
    }
}

/// One oversized head: its status line, or what went wrong.
async fn one_oversized(addr: SocketAddr, head: Arc<[u8]>) -> Result<(), String> {
    let tcp = match tokio::time::timeout(IO_LIMIT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(io_error("connect", &e)),
        Err(_) => return Err(format!("connect: not within {IO_LIMIT:?}")),
    };
    let (mut read, mut write) = tcp.into_split();
    // sluice answers before reading the whole head and closes with bytes unread, which resets
    // the connection: the write may fail, the answer is already on its way.
    let writing = async {
        let _ = tokio::time::timeout(IO_LIMIT, write.write_all(&head)).await;
    };
    let ((reply, _), ()) = tokio::join!(read_reply(&mut read, IO_LIMIT), writing);
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 431") {
        Ok(())
    } else if status.is_empty() {
        Err("closed without an answer".to_owned())
    } else {
        Err(format!("answered `{}`", crate::sse::truncate(status, 80)))
    }
}

async fn oversized(pid: u32, addr: SocketAddr, m: usize) -> Oversized {
    let head = oversized_head();
    let mut report = Oversized {
        requested: m,
        sent_bytes: head.len(),
        ..Oversized::default()
    };
    let fds_before = procs::fd_count(pid).unwrap_or(0);
    report.rss_before_kib = procs::status_kib(pid, "VmRSS");
    report.peak_reset = procs::reset_peak_rss(pid);
    eprintln!(
        "bench: connections: sending {m} heads of {} KiB",
        head.len() / 1024
    );
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..m)
        .map(|_| one_oversized(addr, Arc::clone(&head)))
        .buffer_unordered(m.max(1))
        .collect()
        .await;
    report.wall = started.elapsed();
    for result in results {
        match result {
            Ok(()) => report.refused_431 += 1,
            Err(e) => report.other.add(e),
        }
    }
    report.rss_peak_kib = procs::status_kib(pid, "VmHWM");
    let _ = wait_closed(pid, fds_before).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_after_kib = procs::status_kib(pid, "VmRSS");
    report
}

/// Runs the held parts and the oversized heads against a sluice started with
/// [`HELD_HEADER_TIMEOUT_SECS`] and a connection cap of `max_connections`.
pub async fn run(pid: u32, addr: SocketAddr, n: usize, max_connections: usize) -> ConnsReport {
    // Time for the readiness probe's connection to be gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let silent = hold(pid, addr, n, Arc::from(Vec::new()), "silent connections").await;
    // Before the unfinished heads, whose buffers may stay resident after they are closed.
    let oversized = oversized(pid, addr, oversized_count(n)).await;
    let partial = hold(
        pid,
        addr,
        n,
        partial_head(),
        "connections with an unfinished 30 KiB head",
    )
    .await;
    ConnsReport {
        requested: n,
        header_timeout_secs: HELD_HEADER_TIMEOUT_SECS,
        max_connections,
        silent,
        partial,
        oversized,
        ..ConnsReport::default()
    }
}

/// One connection that sends `payload` and waits for sluice to close it.
async fn one_waiting(
    addr: SocketAddr,
    payload: Arc<[u8]>,
    limit: Duration,
) -> Result<(Option<Duration>, usize), String> {
    let mut tcp = open_one(addr, payload).await?;
    let opened = Instant::now();
    let (reply, closed) = read_reply(&mut tcp, limit).await;
    Ok((closed.then(|| opened.elapsed()), reply.len()))
}

/// `k` connections, half silent and half with an unfinished head, against a sluice started
/// with [`SHORT_HEADER_TIMEOUT_SECS`]: each must be closed by sluice.
pub async fn header_timeout(addr: SocketAddr, k: usize) -> TimeoutCheck {
    let partial = partial_head();
    let silent: Arc<[u8]> = Arc::from(Vec::new());
    let mut check = TimeoutCheck {
        header_timeout_secs: SHORT_HEADER_TIMEOUT_SECS,
        silent: k - k / 2,
        partial: k / 2,
        ..TimeoutCheck::default()
    };
    eprintln!(
        "bench: connections: {k} connections against a {SHORT_HEADER_TIMEOUT_SECS} s header timeout"
    );
    let limit = Duration::from_secs(SHORT_HEADER_TIMEOUT_SECS) + IO_LIMIT;
    let results: Vec<_> = futures::stream::iter(0..k)
        .map(|i| {
            let payload = if i % 2 == 0 {
                Arc::clone(&silent)
            } else {
                Arc::clone(&partial)
            };
            one_waiting(addr, payload, limit)
        })
        .buffer_unordered(k.max(1))
        .collect()
        .await;
    for result in results {
        match result {
            Ok((Some(after), bytes)) => {
                check.closed += 1;
                check.closed_after_us.push(crate::drive::micros(after));
                check.answered_bytes += bytes;
            }
            Ok((None, _)) => check
                .errors
                .add(format!("still open after {} s", limit.as_secs())),
            Err(e) => check.errors.add(e),
        }
    }
    check
}
