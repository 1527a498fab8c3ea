//! The database layer: connection set-up and the sea-orm queries of each aggregate.
//!
//! Nothing here is SQLite-only: the same statements run on PostgreSQL. Every query that reads a
//! workspace's data takes a `Scope` and filters by it in the query itself.

mod chats;
pub use chats::NewChat;
mod generations;
mod keys;
pub use keys::NewKey;
mod messages;
mod workspaces;

use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use uuid::Uuid;

pub use generations::{FinishRecord, NewGeneration};

/// What a caller may see: one workspace, optionally narrowed to one end user's chats, or to
/// chats created through publishable keys.
#[derive(Clone, Debug)]
pub struct Scope {
    pub workspace_id: Uuid,
    pub end_user: Option<String>,
    pub publishable_only: bool,
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            // One connection: SQLite has one writer anyway, and a single connection avoids
            // SQLITE_BUSY on read-to-write upgrades. WAL keeps readers of the file unblocked.
            options
                .max_connections(1)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                });
        } else {
            options.max_connections(16).min_connections(1);
        }
        let db = Database::connect(options).await?;
        Ok(Self { db })
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
