//! The cross-replica scenario: two sluice processes (A and B) on one PostgreSQL and one Redis.
//! Every answer is started by a reader on A (A runs it) and read at the same time by a reader
//! on B (B follows it through Redis). Both readers see the same bytes with the same event ids
//! (`<answer>:<byte offset>`), so the latency the Redis path adds to each delta is measured
//! directly: for each event B receives, the time it arrived minus the time A's reader had
//! received the same byte offset. Also: B's time to first delta minus A's, the CPU both
//! processes spent per 1,000 tokens, Redis memory per running answer (sampled mid-run) and the
//! Redis commands per upstream delta (`INFO commandstats`, reset before each level).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::json;

/// One level's figures.
pub struct CrossLevel {
    /// Both readers on one replica without Redis (the baseline), or A runs and B follows.
    pub alone: bool,
    pub streams: usize,
    pub tokens: usize,
    pub delay_ms: u64,
    pub failed: usize,
    /// Added per delta, µs: p50, p90, p99, max.
    pub added_us: [u64; 4],
    /// B's time to first delta minus A's, µs: p50, p99.
    pub ttft_added_us: [i64; 2],
    /// CPU ms per 1,000 tokens: A (runs, relays, publishes), B (follows, relays).
    pub cpu_ms_per_1000: [f64; 2],
    /// Redis memory per running answer, bytes (used_memory mid-run minus before, / streams).
    pub redis_bytes_per_answer: Option<i64>,
    /// Redis commands per upstream delta, in all and by command.
    pub commands_per_delta: f64,
    pub commands: Vec<(String, u64)>,
}

/// Times at which a reader received each event, by byte offset.
struct Seen {
    first: Option<Duration>,
    at: Vec<(usize, Instant)>,
    text: String,
    complete: bool,
}

/// Reads an SSE response to its end, noting when each delta's offset arrived.
async fn read(response: reqwest::Response, sent: Instant) -> Result<Seen> {
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    let mut seen = Seen {
        first: None,
        at: Vec::new(),
        text: String::new(),
        complete: false,
    };
    let mut body = response.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let (mut event, mut id, mut data) = ("message", "", String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = if v == "done" { "done" } else { "other" };
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v);
                }
            }
            match event {
                "message" if !data.is_empty() => {
                    seen.first.get_or_insert_with(|| now - sent);
                    seen.text.push_str(&data);
                    if let Some(offset) = id.rsplit(':').next().and_then(|o| o.parse().ok()) {
                        seen.at.push((offset, now));
                    }
                }
                "done" => seen.complete = data.contains("\"complete\""),
                _ => {}
            }
        }
    }
    Ok(seen)
}

/// The delay B added to each of its deltas, µs.
fn added(a: &Seen, b: &Seen) -> Vec<u64> {
    b.at.iter()
        .filter_map(|(offset, at_b)| {
            let (_, at_a) = a.at.iter().find(|(o, _)| o >= offset)?;
            Some(at_b.saturating_duration_since(*at_a).as_micros() as u64)
        })
        .collect()
}

fn percentile<T: Copy + Ord + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn redis_info(redis: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(redis)
        .await
        .unwrap_or_default()
}

fn used_memory(info: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `cmdstat_xadd:calls=12,...` → (xadd, 12).
fn command_calls(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

async fn ask(client: &reqwest::Client, base: &str, key: &str, i: usize) -> Result<String> {
    let chat: serde_json::Value = client
        .post(format!("{base}/chats/create"))
        .bearer_auth(key)
        .json(&json!({"name": format!("cross {i}")}))
        .send()
        .await?
        .json()
        .await?;
    let id = chat["id"].as_str().context("chat id")?.to_owned();
    let created = client
        .post(format!("{base}/conversations/create"))
        .bearer_auth(key)
        .json(&json!({"chat_id": id, "role": "Human", "message": "go"}))
        .send()
        .await?;
    if created.status().as_u16() != 201 {
        bail!("conversations/create: HTTP {}", created.status());
    }
    Ok(id)
}

/// What every level sends and expects.
struct Workload<'a> {
    client: reqwest::Client,
    key: &'a str,
    redis_url: &'a str,
    tokens: usize,
    delay_ms: u64,
    expected: String,
}

/// Every level against A and B (the same process for the baseline).
async fn each_level(
    w: &Workload<'_>,
    a: (&str, u32),
    b: (&str, u32),
    levels: &[usize],
) -> Result<Vec<CrossLevel>> {
    let mut results = Vec::with_capacity(levels.len());
    for &streams in levels {
        results.push(level(w, a, b, streams).await?);
    }
    Ok(results)
}

/// Runs one level: `streams` answers at once, each read on A and on B.
async fn level(
    w: &Workload<'_>,
    a: (&str, u32),
    b: (&str, u32),
    streams: usize,
) -> Result<CrossLevel> {
    let Workload {
        client,
        key,
        redis_url,
        tokens,
        delay_ms,
        expected,
    } = w;
    let (key, redis_url, tokens, delay_ms, expected) =
        (*key, *redis_url, *tokens, *delay_ms, expected.as_str());
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    // Questions first (on A), a few at a time.
    let mut chats = Vec::with_capacity(streams);
    let mut asked = futures::stream::iter(0..streams)
        .map(|i| ask(client, a.0, key, i))
        .buffer_unordered(32);
    while let Some(chat) = asked.next().await {
        chats.push(chat?);
    }
    let before = used_memory(&redis_info(&mut redis, "memory").await);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut redis)
        .await?;
    let cpu_before = (
        super::procs::cpu_ticks(Some(a.1))?,
        super::procs::cpu_ticks(Some(b.1))?,
    );
    let started = Instant::now();
    let readers = chats.iter().map(|chat| {
        let (client, key) = (client.clone(), key.to_owned());
        let (url_a, url_b) = (
            format!("{}/conversations/inference/{chat}", a.0),
            format!("{}/conversations/inference/{chat}", b.0),
        );
        async move {
            let sent_a = Instant::now();
            let on_a = client.get(&url_a).bearer_auth(&key).send().await?;
            // A runs the answer from its first request on; B attaches right after.
            let sent_b = Instant::now();
            let on_b = client.get(&url_b).bearer_auth(&key).send().await?;
            let (seen_a, seen_b) = tokio::join!(read(on_a, sent_a), read(on_b, sent_b));
            anyhow::Ok((seen_a?, seen_b?, sent_b - sent_a))
        }
    });
    let all = futures::future::join_all(readers);
    tokio::pin!(all);
    // Redis memory while every answer runs: sampled at half the answers' length.
    let half = Duration::from_millis(delay_ms * tokens as u64 / 2);
    let mut mid = None;
    let results = tokio::select! {
        results = &mut all => results,
        () = tokio::time::sleep(half) => {
            mid = used_memory(&redis_info(&mut redis, "memory").await);
            all.await
        }
    };
    let elapsed = started.elapsed();
    let alone = a.1 == b.1;
    let cpu_after = (
        super::procs::cpu_ticks(Some(a.1))?,
        super::procs::cpu_ticks(Some(b.1))?,
    );
    let commands = command_calls(&redis_info(&mut redis, "commandstats").await);
    let (tck, _) = super::procs::clock_ticks();
    let ms = |ticks: u64| ticks as f64 * 1000.0 / tck as f64;
    let total_tokens = (streams * tokens) as f64;

    let mut added_all = Vec::new();
    let mut ttft = Vec::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok((seen_a, seen_b, offset))
                if seen_a.complete
                    && seen_b.complete
                    && seen_a.text == expected
                    && seen_b.text == expected =>
            {
                added_all.extend(added(&seen_a, &seen_b));
                if let (Some(fa), Some(fb)) = (seen_a.first, seen_b.first) {
                    ttft.push((fb + offset).as_micros() as i64 - fa.as_micros() as i64);
                }
            }
            Ok(_) => failed += 1,
            Err(e) => {
                eprintln!("bench: cross-replica reader failed: {e:#}");
                failed += 1;
            }
        }
    }
    added_all.sort_unstable();
    ttft.sort_unstable();
    let calls: u64 = commands
        .iter()
        .filter(|(name, _)| !["info", "config"].contains(&name.as_str()))
        .map(|(_, c)| c)
        .sum();
    eprintln!(
        "bench: cross-replica, {streams} streams: {:.1} s, {failed} failed",
        elapsed.as_secs_f64()
    );
    Ok(CrossLevel {
        alone,
        streams,
        tokens,
        delay_ms,
        failed,
        added_us: [
            percentile(&added_all, 0.5),
            percentile(&added_all, 0.9),
            percentile(&added_all, 0.99),
            added_all.last().copied().unwrap_or_default(),
        ],
        ttft_added_us: [percentile(&ttft, 0.5), percentile(&ttft, 0.99)],
        cpu_ms_per_1000: [
            ms(cpu_after.0 - cpu_before.0) * 1000.0 / total_tokens,
            if alone {
                0.0
            } else {
                ms(cpu_after.1 - cpu_before.1) * 1000.0 / total_tokens
            },
        ],
        redis_bytes_per_answer: match (before, mid) {
            (Some(before), Some(mid)) => Some((mid - before) / streams as i64),
            _ => None,
        },
        commands_per_delta: calls as f64 / total_tokens,
        commands,
    })
}

/// The scenario's section of the report.
pub fn render(levels: &[CrossLevel]) -> String {
    let mut out = String::from(
        "## Cross-replica readers (A runs every answer, B follows it through Redis)\n\n\
         The baseline rows run one replica without Redis, both readers on it: what a second \
         reader costs and sees there.\n\n\
         | readers | streams | tokens × delay | failed | added per delta p50 / p90 / p99 / max | \
         TTFT added p50 / p99 | CPU ms per 1,000 tokens A / B | Redis bytes per running answer | \
         Redis commands per delta |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for l in levels {
        out.push_str(&format!(
            "| {} | {} | {} × {} ms | {} | {:.2} / {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} / {} | {} | {} |\n",
            if l.alone { "both on one replica (baseline)" } else { "A runs, B follows" },
            l.streams,
            l.tokens,
            l.delay_ms,
            l.failed,
            l.added_us[0] as f64 / 1000.0,
            l.added_us[1] as f64 / 1000.0,
            l.added_us[2] as f64 / 1000.0,
            l.added_us[3] as f64 / 1000.0,
            l.ttft_added_us[0] as f64 / 1000.0,
            l.ttft_added_us[1] as f64 / 1000.0,
            l.cpu_ms_per_1000[0],
            if l.alone { "–".to_owned() } else { format!("{:.1}", l.cpu_ms_per_1000[1]) },
            match l.redis_bytes_per_answer {
                Some(bytes) if !l.alone => bytes.to_string(),
                _ => "–".to_owned(),
            },
            if l.alone { "–".to_owned() } else { format!("{:.3}", l.commands_per_delta) },
        ));
    }
    out.push_str("\nRedis commands by name (calls during each level):\n\n");
    for l in levels.iter().filter(|l| !l.alone) {
        let mut commands = l.commands.clone();
        commands.sort_by_key(|c| std::cmp::Reverse(c.1));
        let list: Vec<String> = commands
            .iter()
            .map(|(name, calls)| format!("{name} {calls}"))
            .collect();
        out.push_str(&format!(
            "- {} streams ({} deltas): {}\n",
            l.streams,
            l.streams * l.tokens,
            list.join(", ")
        ));
    }
    out
}

/// Runs every level against two fresh sluice processes sharing `redis_url`.
pub async fn run(
    launch: &super::Launch,
    mock: &str,
    redis_url: &str,
    levels: &[usize],
    tokens: usize,
    delay_ms: u64,
) -> Result<String> {
    let client = super::http_client(levels.iter().copied().max().unwrap_or(1) * 2 + 64)?;
    let chunks = super::tokens_text("t", tokens);
    super::drive::set_mock_default(&client, mock, &chunks, 0, delay_ms).await?;
    let workload = Workload {
        client,
        key: &launch.key,
        redis_url,
        tokens,
        delay_ms,
        expected: chunks.concat(),
    };
    // The baseline: one replica, no Redis, both readers on it.
    let lone = super::start_sluice(launch, &[]).await?;
    let base = format!("http://{}", lone.addr);
    let one = (base.as_str(), lone.pid());
    let mut results = each_level(&workload, one, one, levels).await?;
    lone.stop(Duration::from_secs(10));
    let extra = [("SLUICE_REDIS_URL", redis_url)];
    let a = super::start_sluice(launch, &extra).await?;
    let b = super::start_sluice(launch, &extra).await?;
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    results.extend(each_level(&workload, (&base_a, a.pid()), (&base_b, b.pid()), levels).await?);
    let failed = results.iter().any(|l| l.failed > 0);
    a.stop(Duration::from_secs(10));
    b.stop(Duration::from_secs(10));
    let mut text = render(&results);
    if failed {
        text.push_str("\nSome answers failed: see the bench's standard error.\n");
    }
    Ok(text)
}
