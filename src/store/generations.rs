//! Generations: the row pair (assistant message + generation) a server-owned task writes.

use entity::{chat, generation, message, usage_record};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use uuid::Uuid;

use super::rows::{self, tokens};
use super::{Store, now};
use crate::domain::{Message, MessageStatus, Role, StreamFailure, Usage, UsageEntry};

/// A generation row, running: `id` and the message it writes (its answer, or the question until
/// the answer's row exists, see `Pledge`), its owner's heartbeat at `at`.
pub(super) fn running(
    id: Uuid,
    chat_id: Uuid,
    reply_to: Uuid,
    message_id: Uuid,
    owner: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> generation::ActiveModel {
    generation::ActiveModel {
        id: Set(id),
        chat_id: Set(chat_id),
        reply_to: Set(reply_to),
        message_id: Set(message_id),
        status: Set("processing".to_owned()),
        error_code: Set(None),
        error_message: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
        finished_at: Set(None),
        owner_id: Set(Some(owner)),
        heartbeat_at: Set(Some(at)),
    }
}

/// What starting a generation records.
pub struct NewGeneration {
    /// The answer's message id, chosen before the row exists (readers see it at once).
    pub message_id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: Uuid,
    pub reply_to: Uuid,
    pub provider: String,
    pub model: String,
    /// The prompt's estimated size, recorded until the provider reports its own count (kept
    /// if it never does, as after a crash).
    pub prompt_tokens: u32,
    /// The process that runs it (see [`Orphans`]).
    pub owner: Uuid,
    /// The question's previous answer, deleted in the same transaction (regenerate).
    pub replaces: Option<Uuid>,
    /// The version of the chat's agent that answers, for an agent's chat.
    pub agent_version: Option<i32>,
}

/// Prices a usage by provider and model, in micro-dollars.
pub type Pricing = dyn Fn(&str, &str, Usage) -> i64 + Send + Sync;

/// Which running generations have lost their owner, for [`Store::recover_interrupted`].
#[derive(Clone, Copy, Debug)]
pub enum Orphans {
    /// Every one not run by this owner (the database has one process).
    NotOwnedBy(Uuid),
    /// Every one whose owner has not renewed its lease since then, except `except`'s own.
    SilentSince {
        since: chrono::DateTime<chrono::Utc>,
        except: Uuid,
    },
}

/// Usage that belongs to no stored message (the `/v1` dialect stores no text).
pub struct UsageRecord {
    pub workspace_id: Uuid,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_micros: i64,
}

/// What the end of a generation writes.
pub enum Finish {
    /// The answer, its generation's outcome and its usage.
    Answer(std::sync::Arc<FinishRecord>),
    /// A usage record only.
    Usage(std::sync::Arc<UsageRecord>),
}

/// The outcome of a [`Store::write_batch`], item by item in input order.
pub struct Written {
    /// The answer's message and its generation's id.
    pub started: Vec<Result<(Message, Uuid), DbErr>>,
    /// The `updated_at` each finish wrote.
    pub finished: Vec<Result<chrono::DateTime<chrono::Utc>, DbErr>>,
}

/// What finishing a generation records.
pub struct FinishRecord {
    pub workspace_id: Uuid,
    pub chat_id: Uuid,
    pub message_id: Uuid,
    pub generation_id: Uuid,
    pub content: String,
    pub status: MessageStatus,
    pub finish_reason: Option<String>,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_micros: i64,
    pub error: Option<StreamFailure>,
    /// The sources the answer was given (the internet variant).
    pub sources: Option<serde_json::Value>,
}

/// Rows per checkpoint statement (three parameters each, well under any database's limit).
const CHECKPOINT_ROWS: usize = 100;

/// Ends an item's savepoint, keeping its writes if it succeeded. Without a savepoint, a failed
/// item means the batch cannot go on (`false`).
async fn settle(savepoint: Option<sea_orm::DatabaseTransaction>, ok: bool) -> Result<bool, DbErr> {
    match savepoint {
        Some(savepoint) if ok => savepoint.commit().await.map(|()| true),
        Some(savepoint) => savepoint.rollback().await.map(|()| true),
        None => Ok(ok),
    }
}

/// A usage record: what one answer cost, charged to a workspace.
#[allow(clippy::too_many_arguments)]
fn usage_row(
    workspace_id: Uuid,
    chat_id: Option<Uuid>,
    message_id: Option<Uuid>,
    provider: &str,
    model: &str,
    usage: Usage,
    cost_micros: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> usage_record::ActiveModel {
    usage_record::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(workspace_id),
        chat_id: Set(chat_id),
        message_id: Set(message_id),
        provider: Set(provider.to_owned()),
        model: Set(model.to_owned()),
        prompt_tokens: Set(tokens(usage.prompt_tokens)),
        completion_tokens: Set(tokens(usage.completion_tokens)),
        estimated: Set(usage.estimated),
        cost_micros: Set(cost_micros),
        created_at: Set(at),
    }
}

impl Store {
    /// Writes a batch of starts and finishes in one transaction. Starts are written first: a
    /// finish always belongs to a start written in an earlier batch. Results are in input
    /// order.
    ///
    /// Usually every item succeeds, so the batch is first written without savepoints (each
    /// savepoint costs two more statements). If an item fails (a chat deleted meanwhile), that
    /// transaction is rolled back and the batch is written again with a savepoint per item, so
    /// that the failure is that item's alone.
    pub async fn write_batch(
        &self,
        starts: &[NewGeneration],
        finishes: &[Finish],
    ) -> Result<Written, DbErr> {
        if let Some(written) = self.write_batch_once(starts, finishes, false).await? {
            return Ok(written);
        }
        self.write_batch_once(starts, finishes, true)
            .await?
            .ok_or_else(|| {
                DbErr::Custom("a batch written item by item cannot fail as a whole".into())
            })
    }

    /// One attempt at a batch. With `isolated`, every item has a savepoint of its own and may
    /// fail alone; without, a failed item rolls everything back and gives `None`.
    async fn write_batch_once(
        &self,
        starts: &[NewGeneration],
        finishes: &[Finish],
        isolated: bool,
    ) -> Result<Option<Written>, DbErr> {
        let txn = self.db.begin().await?;
        let mut written = Written {
            started: Vec::with_capacity(starts.len()),
            finished: Vec::with_capacity(finishes.len()),
        };
        for new in starts {
            let savepoint = if isolated {
                Some(txn.begin().await?)
            } else {
                None
            };
            let result = Store::insert_generation(savepoint.as_ref().unwrap_or(&txn), new).await;
            if !settle(savepoint, result.is_ok()).await? {
                txn.rollback().await?;
                return Ok(None);
            }
            written.started.push(result);
        }
        for record in finishes {
            let at = now();
            let savepoint = if isolated {
                Some(txn.begin().await?)
            } else {
                None
            };
            let result = Store::write_finish(savepoint.as_ref().unwrap_or(&txn), record, at)
                .await
                .map(|()| at);
            if !settle(savepoint, result.is_ok()).await? {
                txn.rollback().await?;
                return Ok(None);
            }
            written.finished.push(result);
        }
        txn.commit().await?;
        Ok(Some(written))
    }

    /// Inserts the `streaming` assistant message (with the id chosen for it) and its
    /// generation, after deleting the answer it replaces. A second start for the same question
    /// fails on the unique `reply_to`.
    async fn insert_generation<C: sea_orm::ConnectionTrait>(
        txn: &C,
        new: &NewGeneration,
    ) -> Result<(Message, Uuid), DbErr> {
        if let Some(previous) = new.replaces {
            message::Entity::delete_many()
                .filter(message::Column::Id.eq(previous))
                .filter(message::Column::ChatId.eq(new.chat_id))
                .filter(message::Column::ReplyTo.eq(new.reply_to))
                .exec(txn)
                .await?;
        }
        let seq = Store::next_seq(txn, new.chat_id).await?;
        let at = now();
        let mut msg = super::messages::new_message(
            new.chat_id,
            seq,
            Role::Assistant,
            String::new(),
            MessageStatus::Streaming,
            at,
        );
        msg.id = Set(new.message_id);
        msg.reply_to = Set(Some(new.reply_to));
        msg.provider = Set(Some(new.provider.clone()));
        msg.model = Set(Some(new.model.clone()));
        msg.prompt_tokens = Set(Some(tokens(new.prompt_tokens)));
        msg.usage_estimated = Set(true);
        msg.agent_version = Set(new.agent_version);
        let msg = msg.insert(txn).await?;
        // A generation is named after its answer: the one its question's request pledged
        // (`Pledge`) is written over, in this statement.
        let generation = running(msg.id, new.chat_id, new.reply_to, msg.id, new.owner, at);
        generation::Entity::insert(generation)
            .on_conflict(
                OnConflict::column(generation::Column::Id)
                    .update_columns([
                        generation::Column::MessageId,
                        generation::Column::Status,
                        generation::Column::UpdatedAt,
                        generation::Column::OwnerId,
                        generation::Column::HeartbeatAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
        Ok((rows::message(msg), new.message_id))
    }

    /// Writes the running text of many generations in one transaction, one statement per
    /// hundred rows (`SET content = CASE id WHEN … END`): on SQLite every statement is a round
    /// trip to the connection's worker thread. Rows that are no longer `streaming` are left
    /// alone, so a late checkpoint can never overwrite a final answer.
    pub async fn checkpoint(
        &self,
        batch: &[(Uuid, &str, Option<&serde_json::Value>)],
    ) -> Result<(), DbErr> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await?;
        let at = now();
        for chunk in batch.chunks(CHECKPOINT_ROWS) {
            let mut content = sea_orm::sea_query::CaseStatement::new();
            for (id, text, _) in chunk {
                content = content.case(message::Column::Id.eq(*id), *text);
            }
            message::Entity::update_many()
                .col_expr(message::Column::Content, content.into())
                .col_expr(message::Column::UpdatedAt, Expr::value(at))
                .filter(message::Column::Id.is_in(chunk.iter().map(|(id, _, _)| *id)))
                .filter(message::Column::Status.eq(MessageStatus::Streaming.as_str()))
                .exec(&txn)
                .await?;
        }
        // Sources go in once, with the answer's first checkpoint after its search.
        for (id, _, sources) in batch {
            if let Some(sources) = sources {
                message::Entity::update_many()
                    .col_expr(message::Column::Sources, Expr::value((*sources).clone()))
                    .filter(message::Column::Id.eq(*id))
                    .filter(message::Column::Status.eq(MessageStatus::Streaming.as_str()))
                    .exec(&txn)
                    .await?;
            }
        }
        txn.commit().await
    }

    /// Writes the end of a generation inside the caller's transaction.
    async fn write_finish<C: sea_orm::ConnectionTrait>(
        txn: &C,
        finish: &Finish,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbErr> {
        match finish {
            Finish::Answer(record) => Store::write_answer(txn, record, at).await,
            Finish::Usage(u) if u.usage.total_tokens > 0 => {
                usage_row(
                    u.workspace_id,
                    None,
                    None,
                    &u.provider,
                    &u.model,
                    u.usage,
                    u.cost_micros,
                    at,
                )
                .insert(txn)
                .await?;
                Ok(())
            }
            Finish::Usage(_) => Ok(()),
        }
    }

    /// Saves the final answer, the generation's outcome and the usage record.
    async fn write_answer<C: sea_orm::ConnectionTrait>(
        txn: &C,
        r: &FinishRecord,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbErr> {
        message::Entity::update_many()
            .col_expr(message::Column::Content, Expr::value(r.content.as_str()))
            .col_expr(message::Column::Status, Expr::value(r.status.as_str()))
            .col_expr(
                message::Column::FinishReason,
                Expr::value(r.finish_reason.clone()),
            )
            .col_expr(message::Column::Provider, Expr::value(r.provider.as_str()))
            .col_expr(message::Column::Model, Expr::value(r.model.as_str()))
            .col_expr(
                message::Column::PromptTokens,
                Expr::value(tokens(r.usage.prompt_tokens)),
            )
            .col_expr(
                message::Column::CompletionTokens,
                Expr::value(tokens(r.usage.completion_tokens)),
            )
            .col_expr(
                message::Column::UsageEstimated,
                Expr::value(r.usage.estimated),
            )
            .col_expr(message::Column::CostMicros, Expr::value(r.cost_micros))
            .col_expr(message::Column::Sources, Expr::value(r.sources.clone()))
            .col_expr(message::Column::UpdatedAt, Expr::value(at))
            .filter(message::Column::Id.eq(r.message_id))
            .exec(txn)
            .await?;
        generation::Entity::update_many()
            .col_expr(
                generation::Column::Status,
                Expr::value(r.status.generation_status()),
            )
            .col_expr(
                generation::Column::ErrorCode,
                Expr::value(r.error.as_ref().map(|e| e.code.clone())),
            )
            .col_expr(
                generation::Column::ErrorMessage,
                Expr::value(r.error.as_ref().map(|e| e.message.clone())),
            )
            .col_expr(generation::Column::UpdatedAt, Expr::value(at))
            .col_expr(generation::Column::FinishedAt, Expr::value(Some(at)))
            .filter(generation::Column::Id.eq(r.generation_id))
            .exec(txn)
            .await?;
        if r.usage.total_tokens > 0 {
            usage_row(
                r.workspace_id,
                Some(r.chat_id),
                Some(r.message_id),
                &r.provider,
                &r.model,
                r.usage,
                r.cost_micros,
                at,
            )
            .insert(txn)
            .await?;
        }
        Ok(())
    }

    /// Usage records of a workspace, newest last.
    pub async fn usage_records(&self, workspace_id: Uuid) -> Result<Vec<UsageEntry>, DbErr> {
        use sea_orm::QueryOrder;
        let found = usage_record::Entity::find()
            .filter(usage_record::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(usage_record::Column::CreatedAt)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::usage).collect())
    }

    /// Renews `owner`'s lease on the generations it runs; returns how many it holds.
    pub async fn renew_leases(&self, owner: Uuid) -> Result<u64, DbErr> {
        let renewed = generation::Entity::update_many()
            .col_expr(generation::Column::HeartbeatAt, Expr::value(Some(now())))
            .filter(generation::Column::OwnerId.eq(owner))
            .filter(generation::Column::Status.eq("processing"))
            .exec(&self.db)
            .await?;
        Ok(renewed.rows_affected)
    }

    /// Marks the answers of generations whose owner is gone (`orphans`) `incomplete`, their
    /// checkpointed text kept, and charges each one's usage, estimated (the provider's own count
    /// was never seen): the prompt's estimate recorded at the start, the saved text's size.
    /// `cost` prices a usage by provider and model. A pledged answer whose row was never
    /// written gets one, `failed` and empty. Returns how many answers it ended.
    pub async fn recover_interrupted(
        &self,
        orphans: Orphans,
        cost: &Pricing,
    ) -> Result<u64, DbErr> {
        use sea_orm::Condition;
        let at = now();
        let txn = self.db.begin().await?;
        let gone = match orphans {
            Orphans::NotOwnedBy(owner) => Condition::any()
                .add(generation::Column::OwnerId.is_null())
                .add(generation::Column::OwnerId.ne(owner)),
            Orphans::SilentSince { since, except } => Condition::all()
                .add(
                    Condition::any()
                        .add(generation::Column::OwnerId.is_null())
                        .add(generation::Column::OwnerId.ne(except)),
                )
                .add(
                    Condition::any()
                        .add(generation::Column::HeartbeatAt.is_null())
                        .add(generation::Column::HeartbeatAt.lt(since)),
                ),
        };
        let orphaned: Vec<generation::Model> = generation::Entity::find()
            .filter(generation::Column::Status.eq("processing"))
            .filter(gone)
            .all(&txn)
            .await?;
        if orphaned.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        let answers: Vec<message::Model> = message::Entity::find()
            .filter(message::Column::Id.is_in(orphaned.iter().map(|g| g.message_id)))
            .filter(message::Column::Role.eq(Role::Assistant.as_str()))
            .all(&txn)
            .await?;
        // A pledged answer (`Pledge`: still pointing at its question) whose row its owner never
        // wrote: the question gets a `failed` answer, under the id its client may hold.
        let mut unanswered = 0_u64;
        for pledged in orphaned.iter().filter(|g| g.message_id == g.reply_to) {
            let seq = Store::next_seq(&txn, pledged.chat_id).await?;
            let mut row = super::messages::new_message(
                pledged.chat_id,
                seq,
                Role::Assistant,
                String::new(),
                MessageStatus::Failed,
                at,
            );
            row.id = Set(pledged.id);
            row.reply_to = Set(Some(pledged.reply_to));
            // A question deleted with its chat meanwhile, or answered after all: nothing to do.
            let chat_exists = chat::Entity::find_by_id(pledged.chat_id)
                .one(&txn)
                .await?
                .is_some();
            let answered = message::Entity::find()
                .filter(message::Column::ReplyTo.eq(pledged.reply_to))
                .one(&txn)
                .await?
                .is_some();
            if chat_exists && !answered {
                row.insert(&txn).await?;
                generation::Entity::update_many()
                    .col_expr(generation::Column::MessageId, Expr::value(pledged.id))
                    .filter(generation::Column::Id.eq(pledged.id))
                    .exec(&txn)
                    .await?;
                unanswered += 1;
            }
        }
        let cut: Vec<message::Model> = answers
            .into_iter()
            .filter(|m| m.status == MessageStatus::Streaming.as_str())
            .collect();
        let workspaces: std::collections::HashMap<Uuid, Uuid> = chat::Entity::find()
            .filter(chat::Column::Id.is_in(cut.iter().map(|m| m.chat_id)))
            .all(&txn)
            .await?
            .into_iter()
            .map(|c| (c.id, c.workspace_id))
            .collect();
        for answer in &cut {
            let prompt = answer
                .prompt_tokens
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0);
            let usage = Usage::new(prompt, Usage::estimate_tokens(&answer.content), true);
            let provider = answer.provider.clone().unwrap_or_default();
            let model = answer.model.clone().unwrap_or_default();
            let cost_micros = cost(&provider, &model, usage);
            message::Entity::update_many()
                .col_expr(
                    message::Column::Status,
                    Expr::value(MessageStatus::Incomplete.as_str()),
                )
                .col_expr(
                    message::Column::PromptTokens,
                    Expr::value(tokens(usage.prompt_tokens)),
                )
                .col_expr(
                    message::Column::CompletionTokens,
                    Expr::value(tokens(usage.completion_tokens)),
                )
                .col_expr(message::Column::UsageEstimated, Expr::value(true))
                .col_expr(message::Column::CostMicros, Expr::value(cost_micros))
                .col_expr(message::Column::UpdatedAt, Expr::value(at))
                .filter(message::Column::Id.eq(answer.id))
                .filter(message::Column::Status.eq(MessageStatus::Streaming.as_str()))
                .exec(&txn)
                .await?;
            if let Some(workspace_id) = workspaces.get(&answer.chat_id)
                && usage.total_tokens > 0
            {
                usage_row(
                    *workspace_id,
                    Some(answer.chat_id),
                    Some(answer.id),
                    &provider,
                    &model,
                    usage,
                    cost_micros,
                    at,
                )
                .insert(&txn)
                .await?;
            }
        }
        generation::Entity::update_many()
            .col_expr(generation::Column::Status, Expr::value("failed"))
            .col_expr(
                generation::Column::ErrorCode,
                Expr::value(StreamFailure::INTERRUPTED),
            )
            .col_expr(
                generation::Column::ErrorMessage,
                Expr::value("the server stopped while this answer was being generated"),
            )
            .col_expr(generation::Column::UpdatedAt, Expr::value(at))
            .col_expr(generation::Column::FinishedAt, Expr::value(Some(at)))
            .filter(generation::Column::Id.is_in(orphaned.iter().map(|g| g.id)))
            .filter(generation::Column::Status.eq("processing"))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(u64::try_from(cut.len())
            .unwrap_or(u64::MAX)
            .saturating_add(unanswered))
    }

    /// The failure the generation of an answer recorded, if any.
    pub async fn failure_of(&self, message_id: Uuid) -> Result<Option<StreamFailure>, DbErr> {
        let found = generation::Entity::find()
            .filter(generation::Column::MessageId.eq(message_id))
            .one(&self.reader)
            .await?;
        Ok(found.and_then(|g| {
            g.error_code
                .map(|code| StreamFailure::new(code, g.error_message.unwrap_or_default()))
        }))
    }
}
