//! The traits the generation core runs on, each built once at start-up as an `Arc<dyn …>`:
//! where running logs are found, how a stop reaches the process that runs an answer, and who
//! owns which generation. The implementations here are for one process; a deployment of
//! several replicas supplies shared ones (a log and a stop channel in a shared store, leases
//! that expire) without any change to the core or its callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

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
    /// Everything in this process: the only choice for SQLite, which one process owns.
    pub fn single_process(store: &Store, credits: Arc<dyn Credits>) -> Self {
        Self {
            logs: Arc::new(LocalLogs::default()),
            stops: Arc::new(LocalStops::default()),
            leases: Arc::new(SingleProcessLeases::new(store.clone())),
            credits,
        }
    }
}

/// Where the logs of running generations are published, so that a reader arriving anywhere
/// finds the one answering its question. A log is written by its generation's task (append,
/// fail, finish) and read through subscriptions from any offset; an implementation shared by
/// replicas mirrors what is published and serves readers from the mirror.
#[async_trait]
pub trait LiveLogs: Send + Sync {
    /// Makes a new generation's log findable by its question until [`LiveLogs::retire`].
    fn publish(&self, live: Arc<Live>);
    /// The running log answering `question_id`, if any.
    async fn find(&self, question_id: Uuid) -> Option<Arc<Live>>;
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

/// Who owns which generation: each process writes its owner id on the generations it starts and
/// renews a heartbeat while they run; recovery touches only generations whose owner is gone.
#[async_trait]
pub trait Leases: Send + Sync {
    /// The owner id this process writes on its generations.
    fn owner(&self) -> Uuid;
    /// Renews this process's lease on its running generations.
    async fn renew(&self) -> Result<(), DbErr>;
    /// Saves the answers of generations whose owner is gone as `incomplete`, with their usage
    /// estimated and priced by `cost`; returns how many.
    async fn recover(&self, cost: &Pricing) -> Result<u64, DbErr>;
}

/// One process owns the database (SQLite, or one replica): every generation this process did
/// not start has lost its owner. Heartbeats are written all the same, so that a database moved
/// to several replicas keeps its history of who ran what.
pub struct SingleProcessLeases {
    store: Store,
    owner: Uuid,
}

impl SingleProcessLeases {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            owner: Uuid::now_v7(),
        }
    }
}

#[async_trait]
impl Leases for SingleProcessLeases {
    fn owner(&self) -> Uuid {
        self.owner
    }

    async fn renew(&self) -> Result<(), DbErr> {
        self.store.renew_leases(self.owner).await.map(|_| ())
    }

    async fn recover(&self, cost: &Pricing) -> Result<u64, DbErr> {
        self.store
            .recover_interrupted(Orphans::NotOwnedBy(self.owner), cost)
            .await
    }
}
