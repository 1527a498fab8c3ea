//! The open-streams scenario: many conversation streams open at once, all waiting for a slow
//! first token. Measures sluice's memory per open stream, its file descriptors, and that every
//! stream still ends with the right text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::drive::{self, Ctx, Errors};
use crate::procs;
use crate::sse::{self, Dialect};

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub requested: usize,
    pub first_delay_ms: u64,
    pub chunks: usize,
    pub setup_ok: usize,
    pub setup_wall: Duration,
    /// Streams that received their opening `: ok` comment.
    pub opened: usize,
    /// From sending the first request to the last `: ok`.
    pub open_wall: Duration,
    /// Per completed stream, from its request to its `: ok` (µs).
    pub ok_us: Vec<u32>,
    /// Most streams open (had `: ok`, not ended) at once, sampled every 20–200 ms.
    pub peak_open: usize,
    /// Whether some stream had a delta before the RSS reading (then it is not idle streams only).
    pub tokens_before_reading: bool,
    pub rss_before_kib: Option<u64>,
    pub rss_open_kib: Option<u64>,
    pub fds_before: Option<usize>,
    pub fds_peak: usize,
    pub peak_rss_kib: Option<u64>,
    pub completed: usize,
    pub mismatches: usize,
    pub errors: Errors,
    pub keepalives_mean: f64,
    pub upstream_calls: Option<u64>,
    /// TCP connections the mock accepted during the scenario (sluice's upstream connections).
    pub upstream_connections: Option<u64>,
    /// `--upstream-http2`: answers per upstream connection.
    pub upstream_http2: Option<usize>,
    /// From the first request until every stream ended.
    pub stream_wall: Duration,
    pub timed_out: bool,
    /// RLIMIT_NOFILE of sluice (inherited from the bench).
    pub fd_limit: u64,
    /// Set if sluice died during the scenario.
    pub sluice_exit: Option<String>,
}

impl OpenReport {
    pub fn rss_per_stream_kib(&self) -> Option<f64> {
        let (before, open) = (self.rss_before_kib?, self.rss_open_kib?);
        (self.opened > 0).then(|| (open as f64 - before as f64) / self.opened as f64)
    }

    pub fn failed(&self) -> bool {
        self.completed != self.requested
            || self.mismatches > 0
            || self.errors.count > 0
            || self.sluice_exit.is_some()
    }
}

enum StreamEnd {
    Complete { keepalives: usize, ok_us: u32 },
    Mismatch(String),
    Failed(String),
}

async fn one_stream(
    ctx: Arc<Ctx>,
    chat: String,
    opened: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    any_delta: Arc<AtomicBool>,
) -> StreamEnd {
    let end = stream_body(&ctx, &chat, &opened, &any_delta).await;
    ended.fetch_add(1, Ordering::SeqCst);
    end
}

async fn stream_body(
    ctx: &Ctx,
    chat: &str,
    opened: &AtomicUsize,
    any_delta: &AtomicBool,
) -> StreamEnd {
    let sent = Instant::now();
    let response = ctx
        .client
        .get(format!("{}/conversations/inference/{chat}", ctx.sluice))
        .bearer_auth(&ctx.key)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => return StreamEnd::Failed(format!("request: {}", drive::chain(&e))),
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return StreamEnd::Failed(format!("HTTP {status}: {}", sse::truncate(&body, 200)));
    }
    let mut gaps = Vec::new();
    let result = sse::read_answer(
        response,
        Dialect::Conversations,
        sent,
        &ctx.expected,
        &mut gaps,
        Some(opened),
        Some(any_delta),
    )
    .await;
    match result {
        Ok(answer) => StreamEnd::Complete {
            keepalives: answer.keepalives,
            ok_us: answer.ok_us.unwrap_or(u32::MAX),
        },
        Err(e) if e.starts_with("text mismatch") => StreamEnd::Mismatch(e),
        Err(e) => StreamEnd::Failed(e),
    }
}

/// Runs the scenario against a freshly started sluice (`sluice_pid`) whose mock answers slowly.
pub async fn run(
    ctx: &Arc<Ctx>,
    sluice_pid: u32,
    n: usize,
    first_delay_ms: u64,
    chunks: usize,
    timeout: Duration,
    fd_limit: u64,
) -> OpenReport {
    let mut report = OpenReport {
        fd_limit,
        requested: n,
        first_delay_ms,
        chunks,
        ..OpenReport::default()
    };
    eprintln!("bench: open streams: creating {n} chats");
    let (chats, _, setup_errors, setup_wall) =
        drive::setup_chats(ctx, n, drive::SETUP_CONCURRENCY, timeout).await;
    report.setup_ok = chats.len();
    report.setup_wall = setup_wall;
    report.errors.absorb(setup_errors);
    let calls_before = drive::mock_requests(&ctx.client, &ctx.mock).await.ok();
    let connections_before = drive::mock_stat(&ctx.client, &ctx.mock, "connections")
        .await
        .ok();

    tokio::time::sleep(Duration::from_millis(500)).await;
    report.rss_before_kib = procs::status_kib(sluice_pid, "VmRSS");
    report.fds_before = procs::fd_count(sluice_pid);
    procs::reset_peak_rss(sluice_pid);

    // The fd sampler runs until the scenario ends (and never past its deadline).
    let deadline = Instant::now() + timeout;
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let open_now = {
        let (opened, ended) = (Arc::clone(&opened), Arc::clone(&ended));
        move || {
            let ended = ended.load(Ordering::SeqCst);
            opened.load(Ordering::SeqCst).saturating_sub(ended)
        }
    };
    let sampler = {
        let stop = Arc::clone(&stop_sampling);
        let open_now = open_now.clone();
        tokio::spawn(async move {
            let (mut fds, mut open) = (0, 0);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                fds = fds.max(procs::fd_count(sluice_pid).unwrap_or(0));
                open = open.max(open_now());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (fds, open)
        })
    };

    eprintln!("bench: open streams: opening {} streams", chats.len());
    let any_delta = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let total = chats.len();
    let tasks: Vec<_> = chats
        .into_iter()
        .map(|chat| {
            let fut = one_stream(
                Arc::clone(ctx),
                chat,
                Arc::clone(&opened),
                Arc::clone(&ended),
                Arc::clone(&any_delta),
            );
            tokio::spawn(tokio::time::timeout(timeout, fut))
        })
        .collect();

    // Wait for every `: ok` (or for every stream to have ended, or for the deadline).
    while opened.load(Ordering::SeqCst) < total
        && Instant::now() < deadline
        && !tasks.iter().all(tokio::task::JoinHandle::is_finished)
    {
        report.peak_open = report.peak_open.max(open_now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.open_wall = started.elapsed();
    report.opened = opened.load(Ordering::SeqCst);
    report.tokens_before_reading = any_delta.load(Ordering::Relaxed);
    report.rss_open_kib = procs::status_kib(sluice_pid, "VmRSS");
    eprintln!(
        "bench: open streams: {} of {total} open after {:.1} s; waiting for the answers",
        report.opened,
        report.open_wall.as_secs_f64()
    );

    let mut keepalives = 0usize;
    for joined in futures::future::join_all(tasks).await {
        match joined {
            Ok(Ok(StreamEnd::Complete {
                keepalives: k,
                ok_us,
            })) => {
                report.completed += 1;
                keepalives += k;
                report.ok_us.push(ok_us);
            }
            Ok(Ok(StreamEnd::Mismatch(e))) => {
                report.mismatches += 1;
                report.errors.add(e);
            }
            Ok(Ok(StreamEnd::Failed(e))) => report.errors.add(e),
            Ok(Err(_)) => {
                report.timed_out = true;
                report
                    .errors
                    .add(format!("stream not finished within {timeout:?}"));
            }
            Err(e) => report.errors.add(format!("stream task failed: {e}")),
        }
    }
    report.stream_wall = started.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let (fds_peak, peak_open) = sampler.await.unwrap_or((0, 0));
    report.fds_peak = fds_peak;
    report.peak_open = report.peak_open.max(peak_open);
    report.peak_rss_kib = procs::status_kib(sluice_pid, "VmHWM");
    report.keepalives_mean = if report.completed > 0 {
        keepalives as f64 / report.completed as f64
    } else {
        0.0
    };
    if let (Some(before), Ok(after)) = (
        calls_before,
        drive::mock_requests(&ctx.client, &ctx.mock).await,
    ) {
        report.upstream_calls = Some(after.saturating_sub(before));
    }
    if let (Some(before), Ok(after)) = (
        connections_before,
        drive::mock_stat(&ctx.client, &ctx.mock, "connections").await,
    ) {
        report.upstream_connections = Some(after.saturating_sub(before));
    }
    report
}
