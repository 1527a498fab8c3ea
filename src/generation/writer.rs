//! The answers' rows are written by one task, in batches: under a burst, every start and
//! every finish (answers, and the usage of unstored answers) that arrived while the previous batch
//! was being written goes into the next transaction, instead of each waiting its turn for the
//! database's writer (SQLite has exactly one). A lone write is a batch of one, written at once.
//! [`Store::write_batch`] keeps one failing item from failing the others.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::Live;
use crate::store::{Finish, NewGeneration, Store};

/// The inserted answer and its generation's id, or why they could not be inserted.
pub(super) type Rows = Result<(crate::domain::Message, Uuid), DbErr>;

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;

enum Write {
    Start {
        new: NewGeneration,
        live: Arc<Live>,
        reply: oneshot::Sender<Rows>,
    },
    Finish {
        record: Finish,
        reply: oneshot::Sender<Result<DateTime<Utc>, DbErr>>,
    },
}

/// Handle to the writer task; it stops when the handle is dropped.
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Write>,
}

fn stopped() -> DbErr {
    DbErr::Custom("the answer writer has stopped".into())
}

impl Writer {
    /// Spawns the writer on the current runtime.
    pub(super) fn spawn(store: Store) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, rx));
        Self { queue }
    }

    /// Queues the rows of a new answer. Once they exist, checkpoints may write to them.
    pub(super) fn insert(&self, new: NewGeneration, live: Arc<Live>) -> oneshot::Receiver<Rows> {
        let (reply, rows) = oneshot::channel();
        if let Err(mpsc::error::SendError(Write::Start { reply, .. })) =
            self.queue.send(Write::Start { new, live, reply })
        {
            let _ = reply.send(Err(stopped()));
        }
        rows
    }

    /// Writes the end of a generation; resolves to the `updated_at` it wrote.
    pub(super) async fn finish(&self, record: Finish) -> Result<DateTime<Utc>, DbErr> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Write::Finish { record, reply })
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn write(store: Store, mut queue: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let (mut starts, mut started) = (Vec::new(), Vec::new());
    let (mut finishes, mut finished) = (Vec::new(), Vec::new());
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for write in batch.drain(..) {
            match write {
                Write::Start { new, live, reply } => {
                    starts.push(new);
                    started.push((live, reply));
                }
                Write::Finish { record, reply } => {
                    finishes.push(record);
                    finished.push(reply);
                }
            }
        }
        match store.write_batch(&starts, &finishes).await {
            Ok(written) => {
                for ((live, reply), rows) in started.drain(..).zip(written.started) {
                    if rows.is_ok() {
                        live.set_row_ready();
                    }
                    // A generation that is gone no longer needs its rows.
                    let _ = reply.send(rows);
                }
                for (reply, at) in finished.drain(..).zip(written.finished) {
                    let _ = reply.send(at);
                }
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    starts = starts.len(),
                    finishes = finishes.len(),
                    "writing answers failed"
                );
                for (_, reply) in started.drain(..) {
                    let _ = reply.send(Err(DbErr::Custom(e.to_string())));
                }
                for reply in finished.drain(..) {
                    let _ = reply.send(Err(DbErr::Custom(e.to_string())));
                }
            }
        }
        starts.clear();
        finishes.clear();
    }
}
