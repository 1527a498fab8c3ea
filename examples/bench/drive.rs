//! The three targets, and one measured run of a workload against one of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::procs;
use crate::sse::{self, Answer, Dialect};

/// Most distinct error messages kept per run (the rest are counted under one line).
const ERROR_KINDS: usize = 6;
/// Setup requests (chat and question creation) in flight at once, at most.
pub const SETUP_CONCURRENCY: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Target {
    /// The mock upstream itself: the floor.
    Direct,
    /// sluice's conversations API (`GET /conversations/inference/{chat}`).
    Conversations,
    /// sluice's OpenAI-compatible API (`POST /v1/chat/completions`).
    V1,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Conversations => "conversations",
            Target::V1 => "v1",
        }
    }
}

/// Everything a request needs.
pub struct Ctx {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the mock upstream.
    pub mock: String,
    /// `http://127.0.0.1:PORT` of sluice.
    pub sluice: String,
    pub key: String,
    /// The text every answer must have.
    pub expected: String,
    pub answer_timeout: Duration,
    direct_body: Vec<u8>,
    v1_body: Vec<u8>,
}

impl Ctx {
    pub fn new(
        client: reqwest::Client,
        mock: String,
        sluice: String,
        key: String,
        expected: String,
        answer_timeout: Duration,
    ) -> Ctx {
        let body = |model: &str| {
            json!({
                "model": model,
                "messages": [{"role": "user", "content": "bench"}],
                "stream": true,
            })
            .to_string()
            .into_bytes()
        };
        Ctx {
            client,
            mock,
            sluice,
            key,
            expected,
            answer_timeout,
            direct_body: body("mock-model"),
            v1_body: body("openai/mock-model"),
        }
    }
}

/// The processes whose CPU and memory a run reads.
#[derive(Clone, Copy)]
pub struct Pids {
    pub sluice: u32,
    pub mock: u32,
}

/// Error messages with their counts.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    pub count: usize,
    pub kinds: BTreeMap<String, usize>,
}

impl Errors {
    pub fn add(&mut self, message: String) {
        self.add_n(message, 1);
    }

    fn add_n(&mut self, message: String, n: usize) {
        self.count += n;
        if self.kinds.len() < ERROR_KINDS || self.kinds.contains_key(&message) {
            *self.kinds.entry(message).or_default() += n;
        } else {
            *self.kinds.entry("(other errors)".to_owned()).or_default() += n;
        }
    }

    pub fn absorb(&mut self, other: Errors) {
        for (message, n) in other.kinds {
            self.add_n(message, n);
        }
    }
}

/// What one or more runs of one target measured.
#[derive(Debug, Default)]
pub struct Run {
    pub answers: usize,
    pub ok: usize,
    pub errors: Errors,
    pub ttft_us: Vec<u32>,
    pub gap_us: Vec<u32>,
    pub deltas: u64,
    /// Wall time of the streaming part (setup excluded).
    pub wall: Duration,
    pub setup_us: Vec<u32>,
    pub setup_wall: Duration,
    /// CPU clock ticks spent during the streaming part.
    pub cpu_sluice: u64,
    pub cpu_mock: u64,
    pub cpu_client: u64,
    /// Peak RSS of sluice during the streaming part (KiB).
    pub peak_rss_kib: Option<u64>,
    /// Whether the peak could be reset before the run (else it is the peak since start).
    pub peak_reset: bool,
    /// TCP connections the mock accepted during the streaming part: the client's for
    /// `direct`, sluice's for the others (one per answer if the pool is not reused).
    pub mock_connections: Option<u64>,
}

impl Run {
    pub fn absorb(&mut self, other: Run) {
        self.answers += other.answers;
        self.ok += other.ok;
        self.errors.absorb(other.errors);
        self.ttft_us.extend(other.ttft_us);
        self.gap_us.extend(other.gap_us);
        self.deltas += other.deltas;
        self.wall += other.wall;
        self.setup_us.extend(other.setup_us);
        self.setup_wall += other.setup_wall;
        self.cpu_sluice += other.cpu_sluice;
        self.cpu_mock += other.cpu_mock;
        self.cpu_client += other.cpu_client;
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
        self.peak_reset = other.peak_reset;
        self.mock_connections = match (self.mock_connections, other.mock_connections) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// The mock's control API

/// Replaces the mock's default script.
pub async fn set_mock_default(
    client: &reqwest::Client,
    mock: &str,
    chunks: &[String],
    first_delay_ms: u64,
    chunk_delay_ms: u64,
) -> Result<()> {
    let script = json!({
        "chunks": chunks,
        "first_delay_ms": first_delay_ms,
        "chunk_delay_ms": chunk_delay_ms,
    });
    let response = client
        .post(format!("{mock}/__mock/default"))
        .json(&script)
        .send()
        .await
        .context("POST /__mock/default")?;
    if !response.status().is_success() {
        bail!("POST /__mock/default: HTTP {}", response.status());
    }
    Ok(())
}

/// How many `/v1/chat/completions` requests the mock has received.
pub async fn mock_requests(client: &reqwest::Client, mock: &str) -> Result<u64> {
    mock_stat(client, mock, "requests").await
}

/// One counter of the mock's `/__mock/stats`.
pub async fn mock_stat(client: &reqwest::Client, mock: &str, name: &str) -> Result<u64> {
    let stats: Value = client
        .get(format!("{mock}/__mock/stats"))
        .send()
        .await
        .context("GET /__mock/stats")?
        .json()
        .await
        .context("GET /__mock/stats body")?;
    Ok(stats[name].as_u64().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Creates a chat with one `Human` question; returns the chat id.
pub async fn create_chat(ctx: &Ctx) -> Result<String, String> {
    let response = ctx
        .client
        .post(format!("{}/chats/create", ctx.sluice))
        .bearer_auth(&ctx.key)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .map_err(|e| format!("chats/create: {}", chain(&e)))?;
    let status = response.status();
    if status.as_u16() != 201 {
        return Err(format!("chats/create: HTTP {status}"));
    }
    let chat: Value = response
        .json()
        .await
        .map_err(|e| format!("chats/create body: {}", chain(&e)))?;
    let id = chat["id"]
        .as_str()
        .ok_or_else(|| "chats/create: no id".to_owned())?
        .to_owned();
    let response = ctx
        .client
        .post(format!("{}/conversations/create", ctx.sluice))
        .bearer_auth(&ctx.key)
        .json(&json!({"chat_id": id, "role": "Human", "message": "bench"}))
        .send()
        .await
        .map_err(|e| format!("conversations/create: {}", chain(&e)))?;
    let status = response.status();
    // Read the body to the end so that the connection goes back to the pool.
    let _ = response.bytes().await;
    if status.as_u16() != 201 {
        return Err(format!("conversations/create: HTTP {status}"));
    }
    Ok(id)
}

/// Creates `n` chats with one question each, `concurrency` at a time.
pub async fn setup_chats(
    ctx: &Arc<Ctx>,
    n: usize,
    concurrency: usize,
    per_request_timeout: Duration,
) -> (Vec<String>, Vec<u32>, Errors, Duration) {
    let start = Instant::now();
    let results: Vec<(Result<String, String>, u32)> = futures::stream::iter(0..n)
        .map(|_| {
            let ctx = Arc::clone(ctx);
            async move {
                let t = Instant::now();
                let result = tokio::time::timeout(per_request_timeout, create_chat(&ctx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("setup took longer than {per_request_timeout:?}"))
                    });
                (result, micros(t.elapsed()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = start.elapsed();
    let mut ids = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut errors = Errors::default();
    for (result, us) in results {
        match result {
            Ok(id) => {
                ids.push(id);
                times.push(us);
            }
            Err(e) => errors.add(format!("setup: {e}")),
        }
    }
    (ids, times, errors, wall)
}

/// Sends the streaming request of `target` and reads the answer.
async fn one_answer(
    ctx: &Ctx,
    target: Target,
    chat: Option<&str>,
    gaps: &mut Vec<u32>,
) -> Result<Answer, String> {
    let (request, dialect) = match target {
        Target::Direct => (
            ctx.client
                .post(format!("{}/v1/chat/completions", ctx.mock))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(ctx.direct_body.clone()),
            Dialect::OpenAi,
        ),
        Target::V1 => (
            ctx.client
                .post(format!("{}/v1/chat/completions", ctx.sluice))
                .bearer_auth(&ctx.key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(ctx.v1_body.clone()),
            Dialect::OpenAi,
        ),
        Target::Conversations => {
            let chat = chat.ok_or_else(|| "no chat for this answer".to_owned())?;
            (
                ctx.client
                    .get(format!("{}/conversations/inference/{chat}", ctx.sluice))
                    .bearer_auth(&ctx.key),
                Dialect::Conversations,
            )
        }
    };
    let sent = Instant::now();
    let response = request
        .send()
        .await
        .map_err(|e| format!("request: {}", chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", sse::truncate(&body, 200)));
    }
    sse::read_answer(response, dialect, sent, &ctx.expected, gaps, None, None).await
}

#[derive(Default)]
struct Acc {
    ok: usize,
    errors: Errors,
    ttft_us: Vec<u32>,
    gap_us: Vec<u32>,
    deltas: u64,
}

/// Claims answers until `total` were claimed. After a timeout anywhere the run is stuck: no new
/// answers are started, and the ones left count as errors.
async fn worker(
    ctx: Arc<Ctx>,
    target: Target,
    next: Arc<AtomicUsize>,
    total: usize,
    chats: Arc<Vec<String>>,
    stuck: Arc<AtomicBool>,
) -> Acc {
    let mut acc = Acc::default();
    let mut gaps = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return acc;
        }
        if stuck.load(Ordering::Relaxed) {
            acc.errors
                .add("not started: an earlier answer timed out".to_owned());
            continue;
        }
        gaps.clear();
        let chat = chats.get(i).map(String::as_str);
        let answer = tokio::time::timeout(
            ctx.answer_timeout,
            one_answer(&ctx, target, chat, &mut gaps),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => {
                acc.ok += 1;
                acc.ttft_us.extend(answer.ttft_us);
                acc.gap_us.extend_from_slice(&gaps);
                acc.deltas += answer.deltas as u64;
            }
            Ok(Err(e)) => acc.errors.add(e),
            Err(_) => {
                stuck.store(true, Ordering::Relaxed);
                acc.errors.add(format!(
                    "answer not finished within {:?}",
                    ctx.answer_timeout
                ));
            }
        }
    }
}

fn ticks(pids: Pids) -> (u64, u64, u64) {
    (
        procs::cpu_ticks(Some(pids.sluice)).unwrap_or(0),
        procs::cpu_ticks(Some(pids.mock)).unwrap_or(0),
        procs::cpu_ticks(None).unwrap_or(0),
    )
}

/// `concurrency` clients stream answers from `target` until `answers` answers are done.
pub async fn run_target(
    ctx: &Arc<Ctx>,
    target: Target,
    concurrency: usize,
    answers: usize,
    pids: Pids,
) -> Run {
    let mut run = Run {
        answers,
        ..Run::default()
    };
    let mut chats = Vec::new();
    let total = if target == Target::Conversations {
        let (ids, times, errors, wall) = setup_chats(
            ctx,
            answers,
            concurrency.clamp(1, SETUP_CONCURRENCY),
            ctx.answer_timeout,
        )
        .await;
        run.setup_us = times;
        run.setup_wall = wall;
        run.errors = errors;
        chats = ids;
        chats.len()
    } else {
        answers
    };
    let chats = Arc::new(chats);
    run.peak_reset = procs::reset_peak_rss(pids.sluice);
    let connections = mock_stat(&ctx.client, &ctx.mock, "connections").await.ok();
    let before = ticks(pids);
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency.min(total))
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(ctx),
                target,
                Arc::clone(&next),
                total,
                Arc::clone(&chats),
                Arc::clone(&stuck),
            ))
        })
        .collect();
    for joined in futures::future::join_all(workers).await {
        match joined {
            Ok(acc) => {
                run.ok += acc.ok;
                run.errors.absorb(acc.errors);
                run.ttft_us.extend(acc.ttft_us);
                run.gap_us.extend(acc.gap_us);
                run.deltas += acc.deltas;
            }
            Err(e) => run.errors.add(format!("client task failed: {e}")),
        }
    }
    run.wall = start.elapsed();
    let after = ticks(pids);
    run.cpu_sluice = after.0.saturating_sub(before.0);
    run.cpu_mock = after.1.saturating_sub(before.1);
    run.cpu_client = after.2.saturating_sub(before.2);
    run.peak_rss_kib = procs::status_kib(pids.sluice, "VmHWM");
    let after = mock_stat(&ctx.client, &ctx.mock, "connections").await.ok();
    // The stats requests themselves reuse the bench's pooled connection.
    run.mock_connections = connections.zip(after).map(|(a, b)| b.saturating_sub(a));
    run
}
