//! Several sluice replicas on one database and one Redis, behind a round-robin proxy on one
//! port: what a deployment with a load balancer and no sticky sessions looks like, on one
//! machine.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example cluster -- --replicas 3 --listen 127.0.0.1:8080 \
//!     --database-url postgres://postgres@127.0.0.1:5432/sluice --redis-url redis://127.0.0.1:6379
//! ```
//!
//! Every other setting (the provider's `OPENAI_BASE_URL` and `OPENAI_API_KEY`,
//! `SLUICE_ADMIN_KEY`, …) is taken from the environment and given to every replica. The proxy
//! hands each new connection to the next replica that accepts it: a client that opens a
//! connection per request (`curl`) lands on a different replica every time. A replica that
//! exits is started again. Ctrl-C stops them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::RwLock;

#[derive(Parser, Debug)]
#[command(about = "N sluice replicas behind a round-robin proxy on one port")]
struct Args {
    /// How many replicas to run.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The database every replica uses (several replicas need PostgreSQL).
    #[arg(long, env = "SLUICE_DATABASE_URL")]
    database_url: String,
    /// The Redis every replica shares.
    #[arg(
        long,
        env = "SLUICE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// The sluice binary (default: `sluice` next to this program's directory, as
    /// `cargo build --release` leaves it).
    #[arg(long)]
    sluice: Option<PathBuf>,
}

/// One replica process and the address it listens on.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

async fn start(args: &Args, binary: &PathBuf, index: usize) -> std::io::Result<Replica> {
    let mut child = Command::new(binary)
        .env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("SLUICE_DATABASE_URL", &args.database_url)
        .env("SLUICE_REDIS_URL", &args.redis_url)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("the replica's stderr was not piped"))?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            eprintln!("[replica {index}] {line}");
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(addr) = rest.split_whitespace().next()
                && let Ok(addr) = addr.parse()
            {
                return Ok(addr);
            }
        }
        Err(std::io::Error::other("the replica exited before listening"))
    })
    .await
    .map_err(|_| std::io::Error::other("the replica did not listen within 60 s"))??;
    // Its log goes on, prefixed.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[replica {index}] {line}");
        }
    });
    Ok(Replica { child, addr })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.replicas == 0 {
        eprintln!("--replicas must be at least 1");
        std::process::exit(2);
    }
    let binary = match &args.sluice {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("sluice"))
            .ok_or_else(|| std::io::Error::other("cannot tell where the sluice binary is"))?,
    };
    if !binary.exists() {
        eprintln!(
            "{} not found: run `cargo build --release` first, or pass --sluice",
            binary.display()
        );
        std::process::exit(2);
    }
    let mut replicas = Vec::with_capacity(args.replicas);
    for index in 0..args.replicas {
        replicas.push(start(&args, &binary, index).await?);
    }
    let addrs = Arc::new(RwLock::new(
        replicas.iter().map(|r| r.addr).collect::<Vec<_>>(),
    ));
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "{} replicas behind http://{} (round robin per connection)",
        args.replicas,
        listener.local_addr()?
    );

    let next = Arc::new(AtomicUsize::new(0));
    let proxy = {
        let addrs = addrs.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (addrs, next) = (addrs.clone(), next.clone());
                tokio::spawn(async move {
                    let candidates = addrs.read().await.clone();
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    // The next replica that accepts the connection.
                    for i in 0..candidates.len() {
                        let addr = candidates[(first + i) % candidates.len()];
                        if let Ok(upstream) = TcpStream::connect(addr).await {
                            relay(client, upstream).await;
                            return;
                        }
                    }
                });
            }
        })
    };

    // A replica that exits is started again.
    let supervise = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (index, replica) in replicas.iter_mut().enumerate() {
                if let Ok(Some(status)) = replica.child.try_wait() {
                    eprintln!("replica {index} exited ({status}); starting it again");
                    match start(&args, &binary, index).await {
                        Ok(again) => {
                            addrs.write().await[index] = again.addr;
                            *replica = again;
                        }
                        Err(e) => eprintln!("replica {index} could not start again: {e}"),
                    }
                }
            }
        }
    };
    tokio::select! {
        () = supervise => {}
        _ = tokio::signal::ctrl_c() => eprintln!("stopping"),
    }
    proxy.abort();
    // SIGTERM lets each replica finish or save its running answers.
    for replica in &replicas {
        if let Some(pid) = replica.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
    for replica in &mut replicas {
        let _ = tokio::time::timeout(Duration::from_secs(40), replica.child.wait()).await;
    }
    Ok(())
}

async fn relay(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
