//! A chaos soak: many readers over every dialect against sluice processes that are killed with
//! SIGKILL and started again every few seconds, on an upstream that cuts, fails, stalls and
//! splits characters; then every promise is checked against the database and against what each
//! reader saw.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 10
//! cargo run --release --example soak -- --minutes 10 --replicas 2 \
//!     --database-url postgres://postgres@127.0.0.1:5432/soak --redis-url redis://127.0.0.1:6379
//! ```
//!
//! Loopback only, bounded in time. Readers leave and come back with `Last-Event-ID`, stop
//! answers, regenerate them, and come back after a kill to whichever replica answers. At the end
//! (no more kills, every replica up, every answer ended) it checks that:
//! - no answer is lost: every question has exactly one answer row, with a final status;
//! - no text is duplicated, reordered or cut silently: every delta ends at the offset its id
//!   names, every reader's text is a prefix of the stored text, the stored text of every answer
//!   is a prefix of what the upstream sends, and an answer whose `done` said `complete` is all
//!   of it, stored the same;
//! - no response is a 5xx, and no process logged a panic.
//!
//! It prints the counts and exits non-zero on any violation. With `--replicas 2` (PostgreSQL and
//! Redis) one replica at a time is killed, and readers resume on either.

#[path = "../mock_upstream/mock.rs"]
mod mock;
#[allow(dead_code)]
#[path = "../bench/procs.rs"]
mod procs;

mod check;
mod client;
mod fleet;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;

use client::{Counts, Fault, Readers};
use fleet::Fleet;

#[derive(Parser, Debug)]
#[command(about = "A chaos soak of sluice: kills, faults, resumes, then every invariant checked")]
struct Args {
    /// How long to run the chaos, in minutes (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// sluice processes (more than one needs --database-url postgres://… and --redis-url).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The database (default: a new SQLite file). A PostgreSQL database is emptied first, so
    /// its name must say `soak` or `test`.
    #[arg(long)]
    database_url: Option<String>,
    /// Redis, shared by the replicas.
    #[arg(long)]
    redis_url: Option<String>,
    /// Mean seconds between kills (each one 0.5 to 1.5 times this).
    #[arg(long, default_value_t = 4.0)]
    kill_every: f64,
    /// The seed of every random choice (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not build sluice first (`cargo build --release --bin sluice`).
    #[arg(long)]
    no_build: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    if args.replicas > 1
        && (args.redis_url.is_none()
            || !args
                .database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres")))
    {
        bail!("--replicas above 1 needs --database-url postgres://… and --redis-url");
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !args.no_build {
        eprintln!("soak: building sluice (release)");
        procs::cargo_build_release(&manifest, &["--bin", "sluice"])?;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let work = tempfile::tempdir()?;
    let upstream = mock::MockUpstream::start_on(
        "127.0.0.1:0".parse()?,
        mock::Script {
            chunk_delay_ms: 40,
            ..mock::Script::text(client::CHUNKS)
        },
    )
    .await?;
    let database_url = match &args.database_url {
        Some(url) => {
            fleet::empty_postgres(url).await?;
            url.clone()
        }
        None => format!(
            "sqlite://{}?mode=rwc",
            work.path().join("soak.db").display()
        ),
    };
    let mut fleet = Fleet::start(
        fleet::Config {
            binary: procs::target_dir(&manifest).join("release/sluice"),
            database_url: database_url.clone(),
            redis_url: args.redis_url.clone(),
            upstream: upstream.base_url(),
            logs: work.path().to_owned(),
        },
        args.replicas,
    )
    .await?;
    eprintln!(
        "soak: {} replica(s) on {}, {} clients, {:.1} min, seed {seed}",
        args.replicas,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.clients,
        args.minutes
    );

    let counts = Arc::new(Counts::default());
    let readers = Readers::new(
        fleet.addresses(),
        fleet.admin_key().to_owned(),
        Arc::clone(&counts),
    )?;
    let chaos_until = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let readers = readers.clone();
        let upstream = upstream.clone();
        let seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        clients.push(tokio::spawn(async move {
            let mut rng = client::Rng::new(seed);
            let mut seen = Vec::new();
            while Instant::now() < chaos_until {
                let fault = Fault::pick(&mut rng);
                upstream.push(fault.script());
                readers.counts.fault(fault);
                seen.extend(readers.exchange(&mut rng).await);
            }
            seen
        }));
    }

    // The killer: one replica at a time, at random intervals, until the chaos ends.
    let mut rng = client::Rng::new(seed.rotate_left(17));
    while Instant::now() < chaos_until {
        let pause = args.kill_every * (0.5 + rng.unit());
        tokio::time::sleep(
            Duration::from_secs_f64(pause).min(
                chaos_until.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
            ),
        )
        .await;
        if Instant::now() >= chaos_until {
            break;
        }
        let victim = rng.below(args.replicas);
        fleet.kill_and_restart(victim).await?;
        counts.kill();
    }
    eprintln!("soak: chaos over; letting the last exchanges end");
    let mut readings = Vec::new();
    for client in clients {
        readings.extend(client.await?);
    }

    let report = check::everything(
        &database_url,
        &readings,
        &counts,
        fleet.logs(),
        readers.statuses(),
    )
    .await?;
    fleet.stop().await;
    std::io::stdout().write_all(report.to_string().as_bytes())?;
    Ok(report.violations.is_empty())
}
