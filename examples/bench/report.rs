//! Percentiles and the Markdown report.

use std::fmt::Write as _;

use crate::conns::{ConnsReport, Held};
use crate::drive::{Errors, Run, Target};
use crate::open::OpenReport;

/// One workload: how many clients at once, the pause between tokens, the answer length.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub concurrency: usize,
    pub delay_ms: u64,
    pub tokens: usize,
    /// Answers per target per round.
    pub answers: usize,
}

impl Workload {
    pub fn title(&self) -> String {
        format!(
            "concurrency {}, {} ms between tokens",
            self.concurrency, self.delay_ms
        )
    }
}

/// The runs of one workload, per target (merged over the rounds).
pub struct WorkloadResult {
    pub workload: Workload,
    pub runs: Vec<(Target, Run)>,
}

/// What the header of the report says.
pub struct Meta {
    pub command: String,
    pub cores: usize,
    pub machine: String,
    pub revision: String,
    pub database: String,
    /// How sluice speaks to the mock.
    pub upstream: String,
    pub nofile: String,
    pub clk_tck: u64,
    pub clk_tck_measured: bool,
    pub rounds: usize,
    pub answer_timeout_secs: u64,
    pub log_filter: String,
    pub warmup: bool,
}

/// The WARN and ERROR lines sluice wrote during one phase.
pub struct LogSummary {
    pub phase: String,
    pub warnings: usize,
    pub errors: usize,
    /// Distinct messages: how often, and the first line.
    pub messages: Vec<(usize, String)>,
    /// Lines of further distinct messages.
    pub other: usize,
}

/// Sorted copy's percentile (nearest rank), `p` in 0..=100.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Pcts {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

fn pcts(samples: &[u32]) -> Pcts {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let ms = |p| percentile(&sorted, p).map(|us| f64::from(us) / 1000.0);
    Pcts {
        p50: ms(50.0),
        p90: ms(90.0),
        p99: ms(99.0),
    }
}

fn ms(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

fn diff(a: Option<f64>, b: Option<f64>, decimals: usize) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.decimals$}", a - b),
        _ => "–".to_owned(),
    }
}

/// Derived numbers of one target's runs.
struct Row {
    ttft: Pcts,
    gap: Pcts,
    setup: Pcts,
    tokens_per_s: f64,
    answers_per_s: f64,
    /// CPU cores kept busy by sluice, the mock and the client together.
    cores_busy: f64,
}

fn row(run: &Run, workload: &Workload, clk_tck: u64) -> Row {
    let secs = run.wall.as_secs_f64();
    let cpu = (run.cpu_sluice + run.cpu_mock + run.cpu_client) as f64 / clk_tck.max(1) as f64;
    let tokens = (run.ok * workload.tokens) as f64;
    Row {
        ttft: pcts(&run.ttft_us),
        gap: pcts(&run.gap_us),
        setup: pcts(&run.setup_us),
        tokens_per_s: if secs > 0.0 { tokens / secs } else { 0.0 },
        answers_per_s: if secs > 0.0 {
            run.ok as f64 / secs
        } else {
            0.0
        },
        cores_busy: if secs > 0.0 { cpu / secs } else { 0.0 },
    }
}

fn cpu_per_1k(ticks: u64, run: &Run, workload: &Workload, clk_tck: u64) -> String {
    let tokens = (run.ok * workload.tokens) as f64;
    if tokens == 0.0 {
        return "–".to_owned();
    }
    let secs = ticks as f64 / clk_tck.max(1) as f64;
    format!("{:.4}", secs * 1000.0 / tokens)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn errors_cell(errors: &Errors) -> String {
    errors.count.to_string()
}

/// The whole report as Markdown.
pub fn render(
    meta: &Meta,
    results: &[WorkloadResult],
    open: Option<&Result<OpenReport, String>>,
    conns: Option<&Result<ConnsReport, String>>,
    sluice_log: &[LogSummary],
    wall_secs: f64,
    build_secs: f64,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# sluice benchmark\n");
    let _ = writeln!(w, "- command: `{}`", meta.command);
    let _ = writeln!(w, "- machine: {}", meta.machine);
    let _ = writeln!(w, "- revision: {}", meta.revision);
    let _ = writeln!(
        w,
        "- database: {}; sluice to the mock: {}; sluice `RUST_LOG={}`; RLIMIT_NOFILE {}",
        meta.database, meta.upstream, meta.log_filter, meta.nofile
    );
    let _ = writeln!(
        w,
        "- rounds: {} (targets in rotated order each round{}); per-answer timeout {} s; CPU from /proc/PID/stat with CLK_TCK {}{}",
        meta.rounds,
        if meta.warmup {
            ", after one unrecorded warm-up pass per workload"
        } else {
            ""
        },
        meta.answer_timeout_secs,
        meta.clk_tck,
        if meta.clk_tck_measured {
            " (getconf)"
        } else {
            " (assumed)"
        }
    );
    let _ = writeln!(
        w,
        "- wall time: {wall_secs:.1} s ({build_secs:.1} s of it building sluice and the mock)\n"
    );
    let _ = writeln!(
        w,
        "TTFT: from sending the streaming request to the first delta. Gap: between consecutive deltas of one answer \
         (sluice sends whatever text has accumulated as one delta, so a slow reader sees fewer, larger deltas: see deltas/answer). \
         tokens/s and answers/s: over the target's wall time, setup (creating chats and questions) excluded; \
         setup is timed separately. CPU s per 1,000 tokens: CPU time of each process during the target's streaming part \
         (counted in ticks of 1/CLK_TCK s, so coarse for targets whose wall time is under a second). \
         cores busy: CPU seconds of sluice, mock and client together per second of wall time (the machine has {} cores). \
         sluice peak RSS: VmHWM, reset before each target.\n\n\
         With 0 ms between tokens the mock answers as fast as it can, so every target runs closed-loop at saturation: \
         TTFT there is mostly queueing behind other answers; compare tokens/s and CPU per token. With 5 ms the offered load is \
         concurrency × 1000 ÷ delay tokens/s; where cores busy approaches the core count, the machine, not the target, is the limit.\n",
        meta.cores
    );

    for result in results {
        let wl = &result.workload;
        let _ = writeln!(
            w,
            "## {} ({} tokens per answer, {} answers per target per round)\n",
            wl.title(),
            wl.tokens,
            wl.answers
        );
        let _ = writeln!(
            w,
            "| target | ok | errors | wall s | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | gap p50 ms | gap p99 ms | deltas/answer | tokens/s | answers/s | CPU s/1k tok sluice | mock | client | cores busy | sluice peak RSS MiB | setup p50 / p99 ms | connections to the mock |"
        );
        let _ = writeln!(
            w,
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for (target, run) in &result.runs {
            let r = row(run, wl, meta.clk_tck);
            let deltas = if run.ok > 0 {
                format!("{:.1}", run.deltas as f64 / run.ok as f64)
            } else {
                "–".to_owned()
            };
            let setup = if *target == Target::Conversations {
                format!("{} / {}", ms(r.setup.p50, 2), ms(r.setup.p99, 2))
            } else {
                "–".to_owned()
            };
            let rss = if *target == Target::Direct {
                "–".to_owned()
            } else {
                mib(run.peak_rss_kib)
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {} | {:.2} | {} | {} | {} |",
                target.name(),
                run.ok,
                errors_cell(&run.errors),
                run.wall.as_secs_f64(),
                ms(r.ttft.p50, 2),
                ms(r.ttft.p90, 2),
                ms(r.ttft.p99, 2),
                ms(r.gap.p50, 3),
                ms(r.gap.p99, 3),
                deltas,
                r.tokens_per_s,
                r.answers_per_s,
                cpu_per_1k(run.cpu_sluice, run, wl, meta.clk_tck),
                cpu_per_1k(run.cpu_mock, run, wl, meta.clk_tck),
                cpu_per_1k(run.cpu_client, run, wl, meta.clk_tck),
                r.cores_busy,
                rss,
                setup,
                run.mock_connections
                    .map_or_else(|| "–".to_owned(), |c| c.to_string()),
            );
        }
        let _ = writeln!(w);
    }

    // sluice vs direct, every workload in one table.
    let _ = writeln!(w, "## sluice vs direct\n");
    let _ = writeln!(
        w,
        "Differences are sluice minus direct (ms); the throughput ratio is sluice's tokens/s ÷ direct's.\n"
    );
    let _ = writeln!(
        w,
        "| workload | target | TTFT p50 +ms | TTFT p99 +ms | gap p99 +ms | throughput ratio |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|");
    for result in results {
        let wl = &result.workload;
        let Some((_, direct)) = result.runs.iter().find(|(t, _)| *t == Target::Direct) else {
            continue;
        };
        let d = row(direct, wl, meta.clk_tck);
        for (target, run) in result.runs.iter().filter(|(t, _)| *t != Target::Direct) {
            let r = row(run, wl, meta.clk_tck);
            let ratio = if d.tokens_per_s > 0.0 {
                format!("{:.3}", r.tokens_per_s / d.tokens_per_s)
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                wl.title(),
                target.name(),
                diff(r.ttft.p50, d.ttft.p50, 2),
                diff(r.ttft.p99, d.ttft.p99, 2),
                diff(r.gap.p99, d.gap.p99, 3),
                ratio
            );
        }
    }
    let _ = writeln!(w);

    match open {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(w, "## Open streams\n\nThe scenario could not run: {e}\n");
        }
        Some(Ok(o)) => render_open(w, o),
    }

    match conns {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(w, "## Connections\n\nThe scenario could not run: {e}\n");
        }
        Some(Ok(c)) => render_conns(w, c),
    }

    let errors: Vec<_> = results
        .iter()
        .flat_map(|r| {
            r.runs
                .iter()
                .filter(|(_, run)| run.errors.count > 0)
                .map(move |(t, run)| (r.workload.title(), t.name(), &run.errors))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(w, "## Errors\n");
        for (workload, target, errs) in errors {
            for (message, n) in &errs.kinds {
                let _ = writeln!(w, "- {workload}, {target}: {n} × {message}");
            }
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## sluice's log\n");
    for log in sluice_log {
        let _ = writeln!(
            w,
            "- {}: {} WARN and {} ERROR lines on stderr",
            log.phase, log.warnings, log.errors
        );
        for (n, line) in &log.messages {
            let _ = writeln!(w, "  - {n} × like `{}`", line.replace('`', "'"));
        }
        if log.other > 0 {
            let _ = writeln!(w, "  - {} lines of other messages", log.other);
        }
    }
    out
}

fn render_open(w: &mut String, o: &OpenReport) {
    let _ = writeln!(w, "## Open streams\n");
    let _ = writeln!(
        w,
        "sluice restarted with `SLUICE_KEEPALIVE_SECS=2`; the mock waits {} ms before the first of {} chunks. \
         {} chats with one question each were created ({} ok, {:.1} s at {} requests in flight), then {} \
         conversation streams were opened at once. RSS per stream = (VmRSS once every stream had its `: ok` − VmRSS before opening) ÷ open streams.\n",
        o.first_delay_ms,
        o.chunks,
        o.requested,
        o.setup_ok,
        o.setup_wall.as_secs_f64(),
        crate::drive::SETUP_CONCURRENCY,
        o.setup_ok,
    );
    // Each open stream holds the client's socket in sluice, and over HTTP/1.1 an upstream one.
    let requested = o.requested as u64;
    let (needed, held) = match o.upstream_http2 {
        Some(per) => (
            requested + requested.div_ceil(per.max(1) as u64) + 64,
            "the client's socket, plus one upstream connection per HTTP/2 connection's worth of streams",
        ),
        None => (2 * requested + 64, "two sockets (client and upstream)"),
    };
    if needed > o.fd_limit {
        let _ = writeln!(
            w,
            "**Note:** each open stream holds {held} in sluice, so {} streams open at once need about {needed} file descriptors, \
             more than RLIMIT_NOFILE {} (the bench could not raise the hard limit): had they all been open at the same time, sluice would have run out of descriptors.\n",
            o.requested, o.fd_limit
        );
    }
    let _ = writeln!(w, "| measure | value |");
    let _ = writeln!(w, "|---|--:|");
    let _ = writeln!(w, "| streams requested | {} |", o.requested);
    let _ = writeln!(w, "| opened (`: ok` received) | {} |", o.opened);
    let _ = writeln!(
        w,
        "| time until all were open | {:.2} s |",
        o.open_wall.as_secs_f64()
    );
    let ok = pcts(&o.ok_us);
    let _ = writeln!(
        w,
        "| request → `: ok`, p50 / p99 / max | {} / {} / {} ms |",
        ms(ok.p50, 1),
        ms(ok.p99, 1),
        ms(o.ok_us.iter().max().map(|us| f64::from(*us) / 1000.0), 1)
    );
    let _ = writeln!(
        w,
        "| most streams open at the same time (sampled) | {} |",
        o.peak_open
    );
    let _ = writeln!(
        w,
        "| completed with `done` and the right text | {} |",
        o.completed
    );
    let _ = writeln!(w, "| text mismatches | {} |", o.mismatches);
    let _ = writeln!(w, "| other errors | {} |", o.errors.count - o.mismatches);
    let _ = writeln!(
        w,
        "| sluice VmRSS before opening | {} MiB |",
        mib(o.rss_before_kib)
    );
    let _ = writeln!(
        w,
        "| sluice VmRSS with all open | {} MiB |",
        mib(o.rss_open_kib)
    );
    let _ = writeln!(
        w,
        "| RSS per open stream | {} KiB{} |",
        o.rss_per_stream_kib()
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}")),
        if o.tokens_before_reading {
            " (some streams had tokens already)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        w,
        "| sluice peak RSS during the scenario | {} MiB |",
        mib(o.peak_rss_kib)
    );
    let _ = writeln!(
        w,
        "| sluice fds before opening / peak | {} / {} |",
        o.fds_before
            .map_or_else(|| "–".to_owned(), |v| v.to_string()),
        o.fds_peak
    );
    let _ = writeln!(
        w,
        "| keep-alive comments per completed stream (mean) | {:.1} |",
        o.keepalives_mean
    );
    let _ = writeln!(
        w,
        "| upstream calls made by sluice | {} |",
        o.upstream_calls
            .map_or_else(|| "–".to_owned(), |v| v.to_string())
    );
    let _ = writeln!(
        w,
        "| connections the mock accepted (sluice's upstream connections) | {} |",
        o.upstream_connections
            .map_or_else(|| "–".to_owned(), |v| v.to_string())
    );
    let _ = writeln!(
        w,
        "| time until every stream ended | {:.2} s{} |",
        o.stream_wall.as_secs_f64(),
        if o.timed_out { " (timed out)" } else { "" }
    );
    let _ = writeln!(w);
    if let Some(exit) = &o.sluice_exit {
        let _ = writeln!(w, "**sluice died:**\n\n```\n{exit}\n```\n");
    }
    if o.errors.count > 0 {
        let _ = writeln!(w, "Open-stream errors:\n");
        for (message, n) in &o.errors.kinds {
            let _ = writeln!(w, "- {n} × {message}");
        }
        let _ = writeln!(w);
    }
}

fn held_row(w: &mut String, what: &str, h: &Held) {
    let count = |v: Option<usize>| v.map_or_else(|| "–".to_owned(), |v| v.to_string());
    let _ = writeln!(
        w,
        "| {what} | {} of {} | {} → {}{} | {} | {:.2} s | {} | {} | **{}** | {} | {} | {} | {} |",
        h.opened,
        h.requested,
        count(h.fds_before),
        count(h.fds_open),
        if h.settled {
            ""
        } else {
            " (not all accepted and read)"
        },
        count(h.sockets_open),
        h.open_wall.as_secs_f64(),
        mib(h.rss_before_kib),
        mib(h.rss_open_kib),
        h.rss_per_conn_kib()
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.2} KiB")),
        h.closed_in.map_or_else(
            || "not within 30 s".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64())
        ),
        mib(h.rss_closed_kib),
        mib(h.rss_closed_later_kib),
        mib(h.rss_after_traffic_kib),
    );
}

fn render_conns(w: &mut String, c: &ConnsReport) {
    let _ = writeln!(w, "## Connections\n");
    let _ = writeln!(
        w,
        "sluice restarted with `SLUICE_HEADER_TIMEOUT_SECS={}` (so that it closes none of the held connections itself) \
         and `SLUICE_MAX_CONNECTIONS={}`. Each batch: {} connections opened ({} connects in flight at a time), held until \
         sluice had accepted every one (its descriptors) and read every byte sent (the receive queues of its sockets in \
         `/proc/PID/net/tcp`), then 1 s more; RSS per connection = (VmRSS then − VmRSS before the batch) ÷ connections. \
         Then every client end is closed at once, and VmRSS read 1 s and 5 s after sluice's descriptors are back, \
         and 1 s after {} `GET /healthz` requests that follow (an allocator may give freed memory back only when it runs again). \
         The oversized heads (below) are sent between the two batches. \
         The unfinished head is `GET / HTTP/1.1`, `Host: x` and an `X-Pad:` field of {} bytes with no line end \
         (under the 32 KiB limit).\n",
        c.header_timeout_secs,
        c.max_connections,
        c.requested,
        crate::conns::CONNECTS_IN_FLIGHT,
        crate::conns::TRAFFIC_REQUESTS,
        crate::conns::PARTIAL_PAD,
    );
    let _ = writeln!(
        w,
        "| connections | opened | sluice fds before → all open | sluice's established sockets | until all accepted and read | VmRSS before MiB | VmRSS all open MiB | RSS per connection | closing: until fds back | VmRSS 1 s after MiB | 5 s after MiB | after the requests MiB |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    held_row(w, "silent (send nothing)", &c.silent);
    held_row(
        w,
        &format!("unfinished head ({} bytes sent)", c.partial.sent_bytes),
        &c.partial,
    );
    let _ = writeln!(w);
    for (what, h) in [("silent", &c.silent), ("unfinished head", &c.partial)] {
        for (message, n) in &h.errors.kinds {
            let _ = writeln!(w, "- {what}: {n} × {message}");
        }
    }
    if c.silent.errors.count + c.partial.errors.count > 0 {
        let _ = writeln!(w);
    }

    let o = &c.oversized;
    let _ = writeln!(
        w,
        "Oversized heads: {} connections at once, each sending a complete head of {} bytes (one `X-Pad:` field of {} bytes) \
         and reading the answer.\n",
        o.requested,
        o.sent_bytes,
        crate::conns::OVERSIZED_PAD,
    );
    let _ = writeln!(w, "| measure | value |");
    let _ = writeln!(w, "|---|--:|");
    let _ = writeln!(
        w,
        "| answered 431 | **{} of {}** |",
        o.refused_431, o.requested
    );
    let _ = writeln!(w, "| anything else | {} |", o.other.count);
    let _ = writeln!(w, "| wall time | {:.2} s |", o.wall.as_secs_f64());
    let _ = writeln!(w, "| sluice VmRSS before | {} MiB |", mib(o.rss_before_kib));
    let _ = writeln!(
        w,
        "| sluice peak RSS (VmHWM{}) | {} MiB |",
        if o.peak_reset {
            ", reset before"
        } else {
            " since start: it could not be reset"
        },
        mib(o.rss_peak_kib)
    );
    let _ = writeln!(
        w,
        "| sluice VmRSS 1 s after | {} MiB |",
        mib(o.rss_after_kib)
    );
    let _ = writeln!(w);
    for (message, n) in &o.other.kinds {
        let _ = writeln!(w, "- {n} × {message}");
    }
    if o.other.count > 0 {
        let _ = writeln!(w);
    }

    match (&c.timeout, &c.timeout_error) {
        (_, Some(e)) => {
            let _ = writeln!(w, "The header-timeout check could not run: {e}\n");
        }
        (Some(t), None) => {
            let after = pcts(&t.closed_after_us);
            let max = t
                .closed_after_us
                .iter()
                .max()
                .map(|us| f64::from(*us) / 1_000_000.0);
            let _ = writeln!(
                w,
                "Header timeout: sluice restarted with `SLUICE_HEADER_TIMEOUT_SECS={}`; {} connections that send nothing and {} \
                 that send the unfinished head, all at once: **{} of {} closed by sluice**, after p50 {} s, max {} s \
                 from connecting ({} bytes sent back on them).\n",
                t.header_timeout_secs,
                t.silent,
                t.partial,
                t.closed,
                t.silent + t.partial,
                after
                    .p50
                    .map_or_else(|| "–".to_owned(), |ms| format!("{:.2}", ms / 1000.0)),
                max.map_or_else(|| "–".to_owned(), |s| format!("{s:.2}")),
                t.answered_bytes,
            );
            for (message, n) in &t.errors.kinds {
                let _ = writeln!(w, "- {n} × {message}");
            }
            if t.errors.count > 0 {
                let _ = writeln!(w);
            }
        }
        (None, None) => {}
    }
    if let Some(exit) = &c.sluice_exit {
        let _ = writeln!(w, "**sluice died:**\n\n```\n{exit}\n```\n");
    }
}
