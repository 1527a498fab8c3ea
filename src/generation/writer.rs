//! The answers' rows, inserted in batches by one task: under a burst of new questions, every
//! start that arrived while the previous batch was being written goes into the next
//! transaction, instead of each waiting its turn for SQLite's single writer. A lone start is a
//! batch of one, written at once.

use std::sync::Arc;

use entity::{generation, message};
use sea_orm::DbErr;
use tokio::sync::{mpsc, oneshot};

use super::Live;
use crate::store::{NewGeneration, Store};

/// The inserted answer row and its generation, or why they could not be inserted.
pub(super) type Rows = Result<(message::Model, generation::Model), DbErr>;

/// Most starts written in one transaction.
const MAX_BATCH: usize = 256;

struct Start {
    new: NewGeneration,
    live: Arc<Live>,
    reply: oneshot::Sender<Rows>,
}

/// Handle to the writer task; it stops when the handle is dropped.
pub(super) struct Starts {
    queue: mpsc::UnboundedSender<Start>,
}

impl Starts {
    /// Spawns the writer on the current runtime.
    pub(super) fn spawn(store: Store) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, rx));
        Self { queue }
    }

    /// Queues the rows of a new answer. Once they exist, checkpoints may write to them.
    pub(super) fn insert(&self, new: NewGeneration, live: Arc<Live>) -> oneshot::Receiver<Rows> {
        let (reply, rows) = oneshot::channel();
        if let Err(mpsc::error::SendError(start)) = self.queue.send(Start { new, live, reply }) {
            let _ = start
                .reply
                .send(Err(DbErr::Custom("the start writer has stopped".into())));
        }
        rows
    }
}

async fn write(store: Store, mut queue: mpsc::UnboundedReceiver<Start>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (news, waiting): (Vec<NewGeneration>, Vec<_>) =
            batch.drain(..).map(|s| (s.new, (s.live, s.reply))).unzip();
        match store.start_generations(&news).await {
            Ok(results) => {
                for ((live, reply), rows) in waiting.into_iter().zip(results) {
                    if rows.is_ok() {
                        live.set_row_ready();
                    }
                    // A generation that is gone no longer needs its rows.
                    let _ = reply.send(rows);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = news.len(), "starting answers failed");
                for (_, reply) in waiting {
                    let _ = reply.send(Err(DbErr::Custom(e.to_string())));
                }
            }
        }
    }
}
