//! The sluice processes: started on fixed ports, killed with SIGKILL, started again on the same
//! port and database. Each one's stderr goes to a file, kept across its restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sea_orm::ConnectionTrait;
use tokio::process::{Child, Command};

pub struct Config {
    pub binary: PathBuf,
    pub database_url: String,
    pub redis_url: Option<String>,
    /// The mock upstream's `/v1` base URL.
    pub upstream: String,
    /// Where the processes' logs go.
    pub logs: PathBuf,
}

struct Replica {
    addr: SocketAddr,
    log: PathBuf,
    child: Child,
}

pub struct Fleet {
    config: Config,
    admin_key: String,
    replicas: Vec<Replica>,
}

impl Fleet {
    pub async fn start(config: Config, count: usize) -> Result<Fleet> {
        if !config.binary.exists() {
            bail!(
                "{} is missing: build it (`cargo build --release --bin sluice`) or drop --no-build",
                config.binary.display()
            );
        }
        let admin_key = format!("sk_live_{}", uuid::Uuid::new_v4().simple());
        let mut fleet = Fleet {
            config,
            admin_key,
            replicas: Vec::new(),
        };
        for i in 0..count {
            // A port of its own, kept across restarts: readers come back to the same address.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let log = fleet.config.logs.join(format!("sluice-{i}.log"));
            let child = fleet.spawn(addr, &log).await?;
            fleet.replicas.push(Replica { addr, log, child });
        }
        Ok(fleet)
    }

    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    pub fn logs(&self) -> Vec<PathBuf> {
        self.replicas.iter().map(|r| r.log.clone()).collect()
    }

    async fn spawn(&self, addr: SocketAddr, log: &Path) -> Result<Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(&self.config.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLUICE_LISTEN", addr.to_string())
            .env("SLUICE_DATABASE_URL", &self.config.database_url)
            .env("SLUICE_ADMIN_KEY", &self.admin_key)
            .env("OPENAI_API_KEY", "soak")
            .env("OPENAI_BASE_URL", &self.config.upstream)
            .env("SLUICE_RATE_LIMIT_SECRET", "1000000")
            .env("SLUICE_UPSTREAM_FIRST_TOKEN_TIMEOUT_SECS", "2")
            .env("SLUICE_UPSTREAM_IDLE_TIMEOUT_SECS", "2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        if let Some(redis) = &self.config.redis_url {
            command.env("SLUICE_REDIS_URL", redis);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.config.binary.display()))?;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "sluice on {addr} exited at start ({status}); see {}",
                    log.display()
                );
            }
            let ready = client
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(child);
            }
            if Instant::now() > deadline {
                bail!(
                    "sluice on {addr} was not ready within 60 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL to one replica, then the same process again on its port.
    pub async fn kill_and_restart(&mut self, index: usize) -> Result<()> {
        let replica = &mut self.replicas[index];
        replica.child.start_kill()?;
        replica.child.wait().await?;
        let (addr, log) = (replica.addr, replica.log.clone());
        let child = self.spawn(addr, &log).await?;
        self.replicas[index].child = child;
        Ok(())
    }

    pub async fn stop(mut self) {
        for replica in &mut self.replicas {
            let _ = replica.child.start_kill();
            let _ = replica.child.wait().await;
        }
    }
}

/// Drops every table of a PostgreSQL database, so that the soak starts from nothing: only a
/// database whose name says it is for this (`soak` or `test` in it).
pub async fn empty_postgres(url: &str) -> Result<()> {
    let name = url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    if !(name.contains("soak") || name.contains("test")) {
        bail!(
            "the soak empties its database first: name one with `soak` or `test` in it, not `{name}`"
        );
    }
    let db = sea_orm::Database::connect(url)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    db.execute_unprepared("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await?;
    db.close().await?;
    Ok(())
}
