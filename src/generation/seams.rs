//! The traits the generation core runs on, each built once at start-up as an `Arc<dyn …>`:
//! where running logs are found, how a stop reaches the process that runs an answer, and who
//! owns which generation. The implementations here are for one process; a deployment of
//! several replicas supplies shared ones (a log and a stop channel in a shared store, leases
//! that expire) without any change to the core or its callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::DbErr;
use uuid::Uuid;

use super::Live;
use crate::policy::Credits;
use crate::store::{Orphans, Pricing, Store};

/// The implementations a [`super::Hub`] is built with.
pub struct Seams {
    pub logs: Arc<dyn LiveLogs>,
    pub stops: Arc<dyn StopSignal>,
    pub leases: Arc<dyn Leases>,
    pub credits: Arc<dyn Credits>,
}

impl Seams {
    /// Logs in this process, leases in the database; with `redis` (a Redis shared by
    /// replicas), stops travel between replicas and other replicas may use the database too.
    pub fn new(
        store: &Store,
        credits: Arc<dyn Credits>,
        redis: Option<&str>,
        cost: Arc<Pricing>,
    ) -> Result<Self, String> {
        let leases = DatabaseLeases::new(store.clone(), redis.is_some(), cost);
        let (logs, stops): (Arc<dyn LiveLogs>, Arc<dyn StopSignal>) = match redis {
            Some(url) => (
                Arc::new(super::shared_logs::RedisLogs::new(url, store.clone())?),
                Arc::new(super::shared_stops::RedisStops::new(url, leases.owner())?),
            ),
            None => (
                Arc::new(LocalLogs::default()),
                Arc::new(LocalStops::default()),
            ),
        };
        Ok(Self {
            logs,
            stops,
            leases: Arc::new(leases),
            credits,
        })
    }
}

/// The outcome of [`LiveLogs::claim`].
pub enum Claim {
    /// This process answers the question.
    Won,
    /// Another replica started an answer to it first: its log, as this process follows it.
    Taken(Arc<Live>),
}

/// Where the logs of running generations are published, so that a reader arriving anywhere
/// finds the one answering its question. A log is written by its generation's task (append,
/// fail, finish) and read through subscriptions from any offset; an implementation shared by
/// replicas mirrors what is published and serves readers from the mirror.
#[async_trait]
pub trait LiveLogs: Send + Sync {
    /// Makes a new generation's log findable by its question until [`LiveLogs::retire`].
    fn publish(&self, live: Arc<Live>);
    /// The running log answering `question_id`, here or on another replica, if any.
    async fn find(&self, question_id: Uuid) -> Option<Arc<Live>>;
    /// Whether other replicas may run the answers this process reads.
    fn shared(&self) -> bool {
        false
    }
    /// Decides, once among every replica, who answers `question_id` (in chat `chat_id`, with
    /// the answer `message_id`). Within one process the hub's start lock already decides.
    async fn claim(&self, _question_id: Uuid, _message_id: Uuid, _chat_id: Uuid) -> Claim {
        Claim::Won
    }
    /// Gives up a claim that [`LiveLogs::claim`] won when no generation was started after all.
    async fn release(&self, _question_id: Uuid, _message_id: Uuid) {}
    /// The log of answer `message_id`, whose row says it is running but which this process
    /// does not run: followed from the shared log. `None` where logs are not shared.
    async fn follow(
        &self,
        _message_id: Uuid,
        _chat_id: Uuid,
        _question_id: Uuid,
    ) -> Option<Arc<Live>> {
        None
    }
    /// The running answer `message_id` of a chat, wherever it runs (found before its row is
    /// written: its id is given to clients at once).
    async fn running(&self, chat_id: Uuid, message_id: Uuid) -> Option<Arc<Live>> {
        self.of_chat(chat_id)
            .into_iter()
            .find(|live| live.message_id == message_id)
    }
    /// Renews what this process holds in a shared store for its running generations (with its
    /// leases).
    fn renew(&self) {}
    /// Waits, at most `limit`, until everything published reached the shared log (at shutdown).
    async fn flush(&self, _limit: Duration) {}
    /// The running logs of a chat that this process runs.
    fn of_chat(&self, chat_id: Uuid) -> Vec<Arc<Live>>;
    /// Every running log this process runs.
    fn all(&self) -> Vec<Arc<Live>>;
    /// Withdraws a finished generation's log: its answer is saved, readers replay it from there.
    fn retire(&self, question_id: Uuid);
    /// How many generations this process runs.
    fn running_count(&self) -> usize;
}

/// Running logs in this process's memory.
#[derive(Default)]
pub struct LocalLogs {
    running: Mutex<HashMap<Uuid, Arc<Live>>>,
}

impl LocalLogs {
    fn running(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<Live>>> {
        // Every update is a single insert or remove: consistent even after a panic.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl LiveLogs for LocalLogs {
    fn publish(&self, live: Arc<Live>) {
        self.running().insert(live.question_id, live);
    }

    async fn find(&self, question_id: Uuid) -> Option<Arc<Live>> {
        self.running().get(&question_id).cloned()
    }

    fn of_chat(&self, chat_id: Uuid) -> Vec<Arc<Live>> {
        self.running()
            .values()
            .filter(|l| l.chat_id == chat_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Arc<Live>> {
        self.running().values().cloned().collect()
    }

    fn retire(&self, question_id: Uuid) {
        self.running().remove(&question_id);
    }

    fn running_count(&self) -> usize {
        self.running().len()
    }
}

/// What a stop is addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopTarget {
    /// Every running answer of a chat.
    Chat(Uuid),
    /// The running answer to one question.
    Question(Uuid),
}

/// Where a process's stops are delivered.
pub type StopHandler = Box<dyn Fn(StopTarget) + Send + Sync>;

/// Carries a stop to the process that runs the answer, wherever the request arrived.
pub trait StopSignal: Send + Sync {
    /// Asks whichever process runs the target's generations to stop them.
    fn send(&self, target: StopTarget);
    /// Hands the stops addressed to this process to `handler` (set once, by the hub).
    fn listen(&self, handler: StopHandler);
    /// Whether a stop may reach answers that other replicas run.
    fn shared(&self) -> bool {
        false
    }
}

/// Stops delivered within this process, at once.
#[derive(Default)]
pub struct LocalStops {
    handler: OnceLock<StopHandler>,
}

impl StopSignal for LocalStops {
    fn send(&self, target: StopTarget) {
        if let Some(handler) = self.handler.get() {
            handler(target);
        }
    }

    fn listen(&self, handler: StopHandler) {
        if self.handler.set(handler).is_err() {
            tracing::warn!("a second stop handler was refused");
        }
    }
}

/// How long a replica or a generation may stay silent before it counts as gone: two missed
/// heartbeats (they are written every three seconds). With the sweep every three seconds, a
/// dead replica's answers are saved within ten.
pub const LEASE_EXPIRY: Duration = Duration::from_secs(7);

/// Who owns which generation: each process writes its owner id on the generations it starts and
/// renews a heartbeat while they run; recovery touches only generations whose owner is gone.
#[async_trait]
pub trait Leases: Send + Sync {
    /// The owner id this process writes on its generations.
    fn owner(&self) -> Uuid;
    /// Says this process uses the database, once at start-up, before [`Leases::recover`]. May
    /// refuse: a replica without a shared store must be the only one.
    async fn join(&self) -> Result<(), String>;
    /// Renews this process's heartbeat and its lease on its running generations.
    async fn renew(&self) -> Result<(), DbErr>;
    /// At start-up: saves the answers of generations whose owner is gone as `incomplete`, with
    /// their usage estimated; returns how many.
    async fn recover(&self) -> Result<u64, DbErr>;
    /// While running: the same for generations whose owner stopped renewing its lease.
    async fn sweep(&self) -> Result<u64, DbErr>;
    /// Says this process stopped (a clean shutdown).
    async fn leave(&self);
}

/// Leases in the database. Alone (`shared: false`, no Redis) a process must be the only one
/// using the database: it waits for another replica's heartbeat to go silent and refuses to
/// start if it does not, then takes every generation it did not start as orphaned. Among
/// replicas that share a Redis (`shared: true`) a generation is orphaned only once its owner
/// stopped renewing it, so a starting replica never touches a live replica's answers.
pub struct DatabaseLeases {
    store: Store,
    owner: Uuid,
    shared: bool,
    cost: Arc<Pricing>,
}

impl DatabaseLeases {
    pub fn new(store: Store, shared: bool, cost: Arc<Pricing>) -> Self {
        Self {
            store,
            owner: Uuid::now_v7(),
            shared,
            cost,
        }
    }

    fn silent_since() -> chrono::DateTime<chrono::Utc> {
        crate::store::now()
            - chrono::Duration::from_std(LEASE_EXPIRY).unwrap_or(chrono::Duration::seconds(7))
    }
}

/// This process, for messages: host and process id.
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host} (pid {})", std::process::id())
}

#[async_trait]
impl Leases for DatabaseLeases {
    fn owner(&self) -> Uuid {
        self.owner
    }

    async fn join(&self) -> Result<(), String> {
        let failed = |e: DbErr| format!("cannot register this replica: {e}");
        if !self.shared {
            // A replica that crashed leaves a heartbeat that goes silent within the expiry:
            // wait that long for it rather than refuse a restart.
            let deadline = tokio::time::Instant::now() + LEASE_EXPIRY + Duration::from_secs(1);
            loop {
                let others = self
                    .store
                    .other_replicas(self.owner, Self::silent_since())
                    .await
                    .map_err(failed)?;
                let Some(other) = others.first() else { break };
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "another sluice replica ({}, alive at {}) uses this database; several \
                         replicas must share a Redis: set SLUICE_REDIS_URL on each",
                        other.name,
                        other
                            .heartbeat_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ));
                }
                tracing::info!(
                    replica = %other.name,
                    "waiting for another replica's heartbeat to go silent"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        self.store
            .register_replica(self.owner, &replica_name(), self.shared)
            .await
            .map_err(failed)
    }

    async fn renew(&self) -> Result<(), DbErr> {
        self.store.replica_heartbeat(self.owner).await?;
        self.store.renew_leases(self.owner).await.map(|_| ())
    }

    async fn recover(&self) -> Result<u64, DbErr> {
        let orphans = if self.shared {
            Orphans::SilentSince {
                since: Self::silent_since(),
                except: self.owner,
            }
        } else {
            Orphans::NotOwnedBy(self.owner)
        };
        self.store
            .recover_interrupted(orphans, self.cost.as_ref())
            .await
    }

    async fn sweep(&self) -> Result<u64, DbErr> {
        self.store
            .recover_interrupted(
                Orphans::SilentSince {
                    since: Self::silent_since(),
                    except: self.owner,
                },
                self.cost.as_ref(),
            )
            .await
    }

    async fn leave(&self) {
        if let Err(e) = self.store.remove_replica(self.owner).await {
            tracing::warn!(error = %e, "could not unregister this replica");
        }
    }
}
