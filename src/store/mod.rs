//! The database layer: connection set-up and the sea-orm queries of each aggregate.
//!
//! Nothing here is SQLite-only: the same statements run on PostgreSQL. Every query that reads a
//! workspace's data takes a `Scope` and filters by it in the query itself.

mod agents;
mod chats;
pub use chats::{ChatChanges, NewChat};
mod generations;
mod keys;
pub use keys::NewKey;
pub use messages::Pledge;
mod messages;
mod replicas;
pub use replicas::OtherReplica;
mod rows;
mod sessions;
mod shares;
pub use sessions::StoredSession;
mod workspaces;

use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use uuid::Uuid;

pub use generations::{Finish, FinishRecord, NewGeneration, Orphans, Pricing, UsageRecord};

/// What a caller may see: one workspace, optionally narrowed to one end user's chats, or to
/// chats created through publishable keys.
#[derive(Clone, Debug)]
pub struct Scope {
    pub workspace_id: Uuid,
    pub end_user: Option<String>,
    pub publishable_only: bool,
}

/// Handle to the database; cheap to clone.
///
/// On SQLite, writes go through one connection (SQLite has one writer anyway, and a single
/// writer cannot hit `SQLITE_BUSY` on a read-to-write upgrade) while reads use a small pool of
/// their own: in WAL mode readers never wait for the writer, so a burst of new streams does not
/// queue its lookups behind every checkpoint and insert. On PostgreSQL both are one pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    reader: DatabaseConnection,
}

fn sqlite_options(options: &mut ConnectOptions, connections: u32) {
    options
        .max_connections(connections)
        .min_connections(1)
        // A SQLite connection lives in this process: there is no server or network that could
        // have dropped it. The pool's default ping before every checkout would be one more round
        // trip to the connection's thread for every statement.
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
}

/// Readers of a SQLite file, besides its one writer. Each connection is a thread of its own that
/// the operating system must schedule for every query: on a busy machine a read waits for that
/// more than for SQLite, so more readers hide the wait (at 1,000 streams on 2 cores, 4 readers
/// made requests wait over 2 s for a connection; 12 never did).
const SQLITE_READERS: u32 = 12;

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if !url.starts_with("sqlite:") {
            // Ping a server connection before handing it out only once it has been idle long
            // enough to have been dropped by the server or a proxy, not before every statement.
            options
                .max_connections(16)
                .min_connections(1)
                .test_before_acquire_if_idle_for(Duration::from_secs(30));
            let db = Database::connect(options).await?;
            return Ok(Self {
                reader: db.clone(),
                db,
            });
        }
        let mut reader_options = options.clone();
        sqlite_options(&mut options, 1);
        let db = Database::connect(options).await?;
        // An in-memory database exists once per connection: it cannot have separate readers.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(Self {
                reader: db.clone(),
                db,
            });
        }
        sqlite_options(&mut reader_options, SQLITE_READERS);
        let reader = Database::connect(reader_options).await?;
        Ok(Self { db, reader })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        migration::Migrator::up(&self.db, None).await
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Self, DbErr> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    pub async fn close(self) -> Result<(), DbErr> {
        self.reader.close().await?;
        self.db.close().await
    }
}

/// Current time at the precision every backend stores (milliseconds), so that what a create
/// returns equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

/// True when a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
