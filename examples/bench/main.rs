//! sluice's benchmark: the same streaming workload against the mock upstream called directly
//! (the floor), sluice's conversations API and sluice's OpenAI-compatible API, then an
//! open-streams scenario and a connections scenario. Everything runs on 127.0.0.1 and stops by
//! itself.
//!
//! ```text
//! cargo run --release --example bench -- [--quick] [--rounds N] [--answers N]
//!     [--concurrency 1,100,1000] [--delay-ms 0,5] [--tokens 200] [--targets direct,conversations,v1]
//!     [--open-streams 10000] [--open-first-delay-ms 15000] [--open-timeout-secs 120]
//!     [--connections 2000]
//!     [--answer-timeout-secs 60] [--postgres URL] [--upstream-http2 [STREAMS]] [--out PATH]
//!     [--no-build] [--no-warmup] [--sluice-bin PATH]
//! ```
//!
//! It builds `sluice` and the `mock_upstream` example in release mode, starts both as child
//! processes (killed when the bench ends, also on panic), prints a Markdown report on standard
//! output (and to `--out`), and exits non-zero if any answer failed.

mod conns;
mod cross;
mod drive;
mod open;
mod procs;
mod report;
mod sse;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sea_orm::ConnectionTrait;

use drive::{Ctx, Pids, Run, Target};
use procs::Proc;
use report::{LogSummary, Meta, Workload, WorkloadResult};

/// sluice's log filter: the start-up lines (with the address), warnings and errors; not one line
/// per request or per generation, which would cost sluice CPU during the measurement.
const LOG_FILTER: &str = "warn,sluice::startup=info";

#[derive(Parser, Debug)]
#[command(about = "Benchmark sluice against the mock upstream called directly")]
struct Args {
    /// CI smoke run: concurrency 1 and 10, 20 tokens, 0 and 5 ms, 1 round, 20 answers per
    /// target, 100 open streams, 50 connections (each can still be overridden).
    #[arg(long)]
    quick: bool,
    /// Rounds; each runs every workload on every target, targets in rotated order [default: 3].
    #[arg(long)]
    rounds: Option<usize>,
    /// Answers per target per workload per round [default: max(2 × concurrency, 20)].
    #[arg(long)]
    answers: Option<usize>,
    /// Concurrent clients, one workload each [default: 1,100,1000].
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Pause between tokens at the mock, in ms, one workload each [default: 0,5].
    #[arg(long = "delay-ms", value_delimiter = ',')]
    delays_ms: Option<Vec<u64>>,
    /// Tokens (mock chunks) per answer [default: 200].
    #[arg(long)]
    tokens: Option<usize>,
    /// Targets to drive [default: direct,conversations,v1].
    #[arg(long, value_delimiter = ',', value_enum)]
    targets: Option<Vec<Target>>,
    /// Runs only the cross-replica scenario, at these numbers of answers at once: two sluice
    /// processes on `--postgres` and `--redis`, every answer run by A and read on A and on B.
    #[arg(long, value_delimiter = ',')]
    cross_replica: Option<Vec<usize>>,
    /// The Redis the cross-replica scenario's processes share.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Tokens per answer in the cross-replica scenario.
    #[arg(long, default_value_t = 100)]
    cross_tokens: usize,
    /// The mock's pause between tokens in the cross-replica scenario, in ms.
    #[arg(long, default_value_t = 20)]
    cross_delay_ms: u64,
    /// Conversation streams held open at once in the open-streams scenario; 0 skips it
    /// [default: 10000].
    #[arg(long)]
    open_streams: Option<usize>,
    /// The mock's delay before the first token in the open-streams scenario [default: 15000].
    #[arg(long)]
    open_first_delay_ms: Option<u64>,
    /// The open-streams scenario fails after this long.
    #[arg(long, default_value_t = 120)]
    open_timeout_secs: u64,
    /// Connections held open at once in the connections scenario: N that send nothing, then
    /// min(N, 500) 64 KiB heads that must be answered 431, then N that each send an unfinished
    /// 30 KiB request head (sluice's RSS per connection for both batches), then min(N, 200)
    /// connections that a 2 s header timeout must close; 0 skips it [default: 2000].
    #[arg(long)]
    connections: Option<usize>,
    /// An answer not finished after this long counts as an error.
    #[arg(long, default_value_t = 60)]
    answer_timeout_secs: u64,
    /// Run sluice on a fresh database created on this PostgreSQL server (dropped at the end)
    /// instead of a SQLite file, e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long)]
    postgres: Option<String>,
    /// sluice speaks HTTP/2 (h2c) to the mock, with at most STREAMS answers per connection
    /// (`SLUICE_UPSTREAM_HTTP2`, `SLUICE_UPSTREAM_HTTP2_MAX_STREAMS`) [default: HTTP/1.1].
    #[arg(long, num_args = 0..=1, default_missing_value = "100", value_name = "STREAMS")]
    upstream_http2: Option<usize>,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the binaries already in the target directory.
    #[arg(long)]
    no_build: bool,
    /// Run this sluice binary instead of the one built here (for an A/B of two builds on one
    /// machine); the mock upstream is still this tree's.
    #[arg(long, value_name = "PATH")]
    sluice_bin: Option<PathBuf>,
    /// Skip the unrecorded warm-up pass before the first round of each workload.
    #[arg(long)]
    no_warmup: bool,
    /// One more environment variable for sluice, e.g. `TOKIO_WORKER_THREADS=1` (repeatable);
    /// it shows in the report's command line.
    #[arg(long = "sluice-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    sluice_env: Vec<(String, String)>,
}

fn parse_env(raw: &str) -> std::result::Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// The settings after `--quick` and the defaults are applied.
struct Plan {
    rounds: usize,
    workloads: Vec<Workload>,
    targets: Vec<Target>,
    open_streams: usize,
    open_first_delay_ms: u64,
    connections: usize,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan> {
        let quick = args.quick;
        if args.upstream_http2 == Some(0) {
            bail!("--upstream-http2 must allow at least 1 answer per connection");
        }
        let tokens = args.tokens.unwrap_or(if quick { 20 } else { 200 });
        if tokens == 0 {
            bail!("--tokens must be at least 1");
        }
        let concurrency = args.concurrency.clone().unwrap_or(if quick {
            vec![1, 10]
        } else {
            vec![1, 100, 1000]
        });
        let delays = args.delays_ms.clone().unwrap_or(vec![0, 5]);
        let mut workloads = Vec::new();
        for &c in &concurrency {
            if c == 0 {
                bail!("--concurrency values must be at least 1");
            }
            for &delay_ms in &delays {
                let answers = args
                    .answers
                    .unwrap_or(if quick { 20 } else { (2 * c).max(20) });
                workloads.push(Workload {
                    concurrency: c,
                    delay_ms,
                    tokens,
                    answers: answers.max(1),
                });
            }
        }
        let mut targets =
            args.targets
                .clone()
                .unwrap_or(vec![Target::Direct, Target::Conversations, Target::V1]);
        targets.sort();
        targets.dedup();
        Ok(Plan {
            rounds: args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            workloads,
            targets,
            open_streams: args
                .open_streams
                .unwrap_or(if quick { 100 } else { 10_000 }),
            open_first_delay_ms: args.open_first_delay_ms.unwrap_or(if quick {
                3000
            } else {
                15_000
            }),
            connections: args.connections.unwrap_or(if quick { 50 } else { 2000 }),
        })
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args, started)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some answers failed (see the report)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn revision(manifest: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// A fresh PostgreSQL database on the server of `url`, dropped by [`PgDatabase::drop_it`].
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Result<PgDatabase> {
        let name = format!(
            "sluice_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let db = sea_orm::Database::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to {admin_url}"))?;
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = db.close().await;
        // postgres://user@host:port/db?params -> same with the new database name.
        let (scheme, rest) = admin_url
            .split_once("://")
            .context("the PostgreSQL URL has no scheme")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        let mut url = format!("{scheme}://{authority}/{name}");
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    async fn drop_it(&self) {
        if let Ok(db) = sea_orm::Database::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = db.execute_unprepared(&sql).await {
                eprintln!("bench: could not drop {}: {e}", self.name);
            }
            let _ = db.close().await;
        }
    }
}

/// How sluice is started.
struct Launch {
    bin: PathBuf,
    dir: PathBuf,
    database_url: String,
    key: String,
    mock_v1: String,
    /// `--upstream-http2`: streams per upstream connection.
    http2_streams: Option<usize>,
    /// `--sluice-env`.
    env: Vec<(String, String)>,
}

async fn start_sluice(launch: &Launch, extra: &[(&str, &str)]) -> Result<Proc> {
    let mut cmd = Command::new(&launch.bin);
    cmd.env_clear()
        .current_dir(&launch.dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("SLUICE_DATABASE_URL", &launch.database_url)
        .env("SLUICE_ADMIN_KEY", &launch.key)
        .env("OPENAI_BASE_URL", &launch.mock_v1)
        .env("OPENAI_API_KEY", "x")
        .env("SLUICE_DEFAULT_MODEL", "openai/mock-model")
        // One key drives every stream of a run: far more than a client's requests a minute.
        .env("SLUICE_RATE_LIMIT_SECRET", "100000000")
        .env("RUST_LOG", LOG_FILTER);
    if let Some(streams) = launch.http2_streams {
        cmd.env("SLUICE_UPSTREAM_HTTP2", "true")
            .env("SLUICE_UPSTREAM_HTTP2_MAX_STREAMS", streams.to_string());
    }
    for (k, v) in &launch.env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let proc = Proc::spawn("sluice", cmd, Duration::from_secs(60))?;
    // Ready when /readyz says so (bounded).
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/readyz", proc.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(proc);
        }
        if Instant::now() > deadline {
            bail!(
                "sluice is not ready after 30 s; its stderr:\n{}",
                proc.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_client(idle: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(idle)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

fn log_summary(phase: &str, proc: &Proc) -> LogSummary {
    let log = proc.log.lock().unwrap_or_else(PoisonError::into_inner);
    LogSummary {
        phase: phase.to_owned(),
        warnings: log.warnings,
        errors: log.errors,
        messages: log
            .notable
            .iter()
            .map(|(_, n, line)| (*n, line.clone()))
            .collect(),
        other: log.other,
    }
}

fn tokens_text(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!(" {prefix}{i}")).collect()
}

async fn run(args: Args, started: Instant) -> Result<bool> {
    let plan = Plan::new(&args)?;
    let command = std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let want_fds = ((plan.open_streams.max(plan.connections) as u64) * 4 + 10_000).max(65_536);
    let (nofile, fd_limit) = procs::raise_nofile(want_fds);
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    let build_started = Instant::now();
    if !args.no_build {
        eprintln!("bench: building sluice and mock_upstream (release)");
        procs::cargo_build_release(
            &manifest,
            &["--bin", "sluice", "--example", "mock_upstream"],
        )?;
    }
    let build_secs = build_started.elapsed().as_secs_f64();
    let release = procs::target_dir(&manifest).join("release");
    let sluice_bin = args
        .sluice_bin
        .clone()
        .unwrap_or_else(|| release.join("sluice"));
    let mock_bin = release.join("examples").join("mock_upstream");
    for bin in [&sluice_bin, &mock_bin] {
        if !bin.exists() {
            bail!(
                "{} does not exist (build it, or drop --no-build)",
                bin.display()
            );
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let pg = match &args.postgres {
        Some(url) => Some(PgDatabase::create(url).await?),
        None => None,
    };
    let (database_url, database) = match &pg {
        Some(pg) => (
            pg.url.clone(),
            format!("PostgreSQL, fresh database `{}`", pg.name),
        ),
        None => (
            format!("sqlite://{}/sluice.db?mode=rwc", dir.path().display()),
            "SQLite file in a temporary directory".to_owned(),
        ),
    };

    if let Some(levels) = &args.cross_replica {
        let outcome = cross_replica(
            &args,
            levels,
            &database_url,
            dir.path(),
            &sluice_bin,
            &mock_bin,
        )
        .await;
        if let Some(pg) = &pg {
            pg.drop_it().await;
        }
        let text = format!(
            "# sluice cross-replica benchmark\n\nCommand: `{command}`\nRevision: {}\nMachine: {}\nDatabase: {database}\n\n{}",
            revision(&manifest),
            procs::machine(),
            outcome?
        );
        {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        if let Some(path) = &args.out {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(!text.contains("Some answers failed"));
    }
    let outcome = run_with_database(
        &args,
        &plan,
        &database_url,
        dir.path(),
        &sluice_bin,
        &mock_bin,
        fd_limit,
    )
    .await;
    if let Some(pg) = &pg {
        pg.drop_it().await;
    }
    let outcome = outcome?;

    let clk = procs::clock_ticks();
    let meta = Meta {
        command,
        machine: procs::machine(),
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        revision: revision(&manifest),
        database,
        upstream: match args.upstream_http2 {
            Some(n) => format!("HTTP/2 (h2c), at most {n} answers per connection"),
            None => "HTTP/1.1".to_owned(),
        },
        nofile,
        clk_tck: clk.0,
        clk_tck_measured: clk.1,
        rounds: plan.rounds,
        answer_timeout_secs: args.answer_timeout_secs,
        log_filter: LOG_FILTER.to_owned(),
        warmup: !args.no_warmup,
    };
    let mut text = report::render(
        &meta,
        &outcome.results,
        outcome.open.as_ref(),
        outcome.conns.as_ref(),
        &outcome.logs,
        started.elapsed().as_secs_f64(),
        build_secs,
    );
    if let Some(fatal) = &outcome.fatal {
        text.push_str(&format!(
            "\n## The run stopped early\n\n```\n{fatal}\n```\n"
        ));
    }
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("bench: report written to {}", path.display());
    }
    let errors = outcome
        .results
        .iter()
        .flat_map(|r| r.runs.iter())
        .any(|(_, run)| run.errors.count > 0 || run.ok < run.answers);
    let open_failed = match &outcome.open {
        None => false,
        Some(Ok(o)) => o.failed(),
        Some(Err(_)) => true,
    };
    let conns_failed = match &outcome.conns {
        None => false,
        Some(Ok(c)) => c.failed(),
        Some(Err(_)) => true,
    };
    Ok(!errors && !open_failed && !conns_failed && outcome.fatal.is_none())
}

struct Outcome {
    results: Vec<WorkloadResult>,
    open: Option<Result<open::OpenReport, String>>,
    conns: Option<Result<conns::ConnsReport, String>>,
    logs: Vec<LogSummary>,
    fatal: Option<String>,
}

/// Starts the mock upstream; returns it, its base URL, and how sluice is to be started on it.
fn start_mock(
    args: &Args,
    database_url: &str,
    dir: &Path,
    sluice_bin: &Path,
    mock_bin: &Path,
) -> Result<(Proc, String, Launch)> {
    let mut mock_cmd = Command::new(mock_bin);
    mock_cmd.args(["--listen", "127.0.0.1:0"]).current_dir(dir);
    let mock = Proc::spawn("mock_upstream", mock_cmd, Duration::from_secs(30))?;
    let mock_base = format!("http://{}", mock.addr);
    eprintln!("bench: mock upstream on {mock_base}");
    let launch = Launch {
        bin: sluice_bin.to_owned(),
        dir: dir.to_owned(),
        database_url: database_url.to_owned(),
        key: format!("sk_live_{}", uuid::Uuid::new_v4().simple()),
        mock_v1: format!("{mock_base}/v1"),
        http2_streams: args.upstream_http2,
        env: args.sluice_env.clone(),
    };
    Ok((mock, mock_base, launch))
}

async fn cross_replica(
    args: &Args,
    levels: &[usize],
    database_url: &str,
    dir: &Path,
    sluice_bin: &Path,
    mock_bin: &Path,
) -> Result<String> {
    if args.postgres.is_none() {
        bail!("--cross-replica needs --postgres (replicas share a PostgreSQL database)");
    }
    let (mock, mock_base, launch) = start_mock(args, database_url, dir, sluice_bin, mock_bin)?;
    let text = cross::run(
        &launch,
        &mock_base,
        &args.redis,
        levels,
        args.cross_tokens,
        args.cross_delay_ms,
    )
    .await;
    mock.stop(Duration::from_secs(5));
    text
}

async fn run_with_database(
    args: &Args,
    plan: &Plan,
    database_url: &str,
    dir: &Path,
    sluice_bin: &Path,
    mock_bin: &Path,
    fd_limit: u64,
) -> Result<Outcome> {
    let (mock, mock_base, launch) = start_mock(args, database_url, dir, sluice_bin, mock_bin)?;
    let mut sluice = start_sluice(&launch, &[]).await?;
    eprintln!(
        "bench: sluice on http://{} (pid {})",
        sluice.addr,
        sluice.pid()
    );

    let max_concurrency = plan
        .workloads
        .iter()
        .map(|w| w.concurrency)
        .max()
        .unwrap_or(1);
    let client = http_client(max_concurrency.max(drive::SETUP_CONCURRENCY) + 64)?;
    let answer_timeout = Duration::from_secs(args.answer_timeout_secs);
    let tokens = plan.workloads.first().map_or(1, |w| w.tokens);
    let chunks = tokens_text("t", tokens);
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        mock_base.clone(),
        format!("http://{}", sluice.addr),
        launch.key.clone(),
        chunks.concat(),
        answer_timeout,
    ));
    let pids = Pids {
        sluice: sluice.pid(),
        mock: mock.pid(),
    };

    let mut results: Vec<WorkloadResult> = plan
        .workloads
        .iter()
        .map(|w| WorkloadResult {
            workload: *w,
            runs: plan.targets.iter().map(|t| (*t, Run::default())).collect(),
        })
        .collect();
    let mut fatal = None;
    'rounds: for round in 0..plan.rounds {
        for result in &mut results {
            let wl = result.workload;
            drive::set_mock_default(&client, &mock_base, &chunks, 0, wl.delay_ms).await?;
            let mut order = plan.targets.clone();
            let shift = round % order.len().max(1);
            order.rotate_left(shift);
            if round == 0 && !args.no_warmup {
                let n = wl.answers.min(wl.concurrency.max(5));
                eprintln!("bench: warm-up, {}: {n} answers per target", wl.title());
                for &target in &order {
                    let _ = drive::run_target(&ctx, target, wl.concurrency, n, pids).await;
                }
            }
            for &target in &order {
                let run = drive::run_target(&ctx, target, wl.concurrency, wl.answers, pids).await;
                eprintln!(
                    "bench: round {}/{}, {}, {}: {} ok, {} errors, {:.2} s",
                    round + 1,
                    plan.rounds,
                    wl.title(),
                    target.name(),
                    run.ok,
                    run.errors.count,
                    run.wall.as_secs_f64()
                );
                if let Some(slot) = result.runs.iter_mut().find(|(t, _)| *t == target) {
                    slot.1.absorb(run);
                }
                if let Some(status) = sluice.exited() {
                    fatal = Some(format!(
                        "sluice exited ({status}) during {}, {}; its last stderr lines:\n{}",
                        wl.title(),
                        target.name(),
                        sluice.tail()
                    ));
                    break 'rounds;
                }
            }
        }
    }
    let mut logs = vec![log_summary("workloads", &sluice)];

    let mut open = None;
    if plan.open_streams > 0 && fatal.is_none() {
        sluice.stop(Duration::from_secs(10));
        open = Some(
            open_streams(
                args, plan, &launch, &client, &mock_base, fd_limit, &mut logs,
            )
            .await
            .map_err(|e| format!("{e:#}")),
        );
    } else {
        sluice.stop(Duration::from_secs(10));
    }
    let mut conns = None;
    if plan.connections > 0 && fatal.is_none() {
        conns = Some(
            connections(plan, &launch, fd_limit, &mut logs)
                .await
                .map_err(|e| format!("{e:#}")),
        );
    }
    drop(mock);
    Ok(Outcome {
        results,
        open,
        conns,
        logs,
        fatal,
    })
}

async fn open_streams(
    args: &Args,
    plan: &Plan,
    launch: &Launch,
    client: &reqwest::Client,
    mock_base: &str,
    fd_limit: u64,
    logs: &mut Vec<LogSummary>,
) -> Result<open::OpenReport> {
    const CHUNKS: usize = 20;
    const CHUNK_DELAY_MS: u64 = 20;
    let chunks = tokens_text("s", CHUNKS);
    drive::set_mock_default(
        client,
        mock_base,
        &chunks,
        plan.open_first_delay_ms,
        CHUNK_DELAY_MS,
    )
    .await?;
    let mut sluice = start_sluice(launch, &[("SLUICE_KEEPALIVE_SECS", "2")]).await?;
    eprintln!(
        "bench: open streams: sluice restarted on http://{} (pid {})",
        sluice.addr,
        sluice.pid()
    );
    let ctx = Arc::new(Ctx::new(
        http_client(plan.open_streams + 64)?,
        mock_base.to_owned(),
        format!("http://{}", sluice.addr),
        launch.key.clone(),
        chunks.concat(),
        Duration::from_secs(args.open_timeout_secs),
    ));
    let report = open::run(
        &ctx,
        sluice.pid(),
        plan.open_streams,
        plan.open_first_delay_ms,
        CHUNKS,
        Duration::from_secs(args.open_timeout_secs),
        fd_limit,
    )
    .await;
    let mut report = report;
    report.upstream_http2 = args.upstream_http2;
    logs.push(log_summary("open streams", &sluice));
    if let Some(status) = sluice.exited() {
        report.sluice_exit = Some(format!(
            "sluice exited ({status}) during the scenario; its last stderr lines:\n{}",
            sluice.tail()
        ));
    }
    sluice.stop(Duration::from_secs(10));
    Ok(report)
}

/// The connections scenario, on a sluice restarted with a long header timeout and a connection
/// cap above what it holds, then the header-timeout check on one restarted with a short one.
async fn connections(
    plan: &Plan,
    launch: &Launch,
    fd_limit: u64,
    logs: &mut Vec<LogSummary>,
) -> Result<conns::ConnsReport> {
    let n = plan.connections;
    // sluice holds one descriptor per connection (and about 250 of its own); so does the bench.
    let needed = n as u64 + 500;
    if needed > fd_limit {
        bail!(
            "{n} connections need about {needed} file descriptors in sluice and in the bench, \
             more than RLIMIT_NOFILE {fd_limit}"
        );
    }
    let max_connections = 2 * n + conns::oversized_count(n) + 100;
    let header_timeout = conns::HELD_HEADER_TIMEOUT_SECS.to_string();
    let max = max_connections.to_string();
    let mut sluice = start_sluice(
        launch,
        &[
            ("SLUICE_HEADER_TIMEOUT_SECS", &header_timeout),
            ("SLUICE_MAX_CONNECTIONS", &max),
        ],
    )
    .await?;
    eprintln!(
        "bench: connections: sluice restarted on http://{} (pid {})",
        sluice.addr,
        sluice.pid()
    );
    let addr: SocketAddr = sluice
        .addr
        .parse()
        .with_context(|| format!("sluice's address {:?}", sluice.addr))?;
    let mut report = conns::run(sluice.pid(), addr, n, max_connections).await;
    logs.push(log_summary("connections", &sluice));
    if let Some(status) = sluice.exited() {
        report.sluice_exit = Some(format!(
            "sluice exited ({status}) during the scenario; its last stderr lines:\n{}",
            sluice.tail()
        ));
        return Ok(report);
    }
    sluice.stop(Duration::from_secs(10));

    let short = conns::SHORT_HEADER_TIMEOUT_SECS.to_string();
    let mut sluice = match start_sluice(launch, &[("SLUICE_HEADER_TIMEOUT_SECS", &short)]).await {
        Ok(sluice) => sluice,
        Err(e) => {
            report.timeout_error = Some(format!("{e:#}"));
            return Ok(report);
        }
    };
    let addr: SocketAddr = sluice
        .addr
        .parse()
        .with_context(|| format!("sluice's address {:?}", sluice.addr))?;
    report.timeout = Some(conns::header_timeout(addr, conns::timeout_count(n)).await);
    logs.push(log_summary(
        &format!("connections, {short} s header timeout"),
        &sluice,
    ));
    if let Some(status) = sluice.exited() {
        report.sluice_exit = Some(format!(
            "sluice exited ({status}) during the header-timeout check; its last stderr lines:\n{}",
            sluice.tail()
        ));
    }
    sluice.stop(Duration::from_secs(10));
    Ok(report)
}
