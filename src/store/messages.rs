//! Messages of a chat, in sequence order.

use entity::message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use uuid::Uuid;

use super::{Store, now, rows};
use crate::domain::{Message, MessageStatus, Role};

/// A message row; the fields a new message does not know yet start empty.
pub(super) fn new_message(
    chat_id: Uuid,
    seq: i64,
    role: Role,
    content: String,
    status: MessageStatus,
    at: chrono::DateTime<chrono::Utc>,
) -> message::ActiveModel {
    message::ActiveModel {
        id: Set(Uuid::new_v4()),
        chat_id: Set(chat_id),
        seq: Set(seq),
        role: Set(role.as_str().to_owned()),
        content: Set(content),
        status: Set(status.as_str().to_owned()),
        reply_to: Set(None),
        finish_reason: Set(None),
        provider: Set(None),
        model: Set(None),
        prompt_tokens: Set(None),
        completion_tokens: Set(None),
        usage_estimated: Set(false),
        cost_micros: Set(None),
        sources: Set(None),
        agent_version: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// The answer a question's own request starts, promised with the question: its id, and the
/// process that starts it. Saved in the question's transaction as the answer's generation (named
/// by the answer's id, pointing at the question until the answer's row exists), so that a crash
/// before the answer's first row leaves a generation whose owner is gone, which recovery turns
/// into a `failed` answer: never a question without an answer.
#[derive(Clone, Copy, Debug)]
pub struct Pledge {
    pub answer_id: Uuid,
    pub owner: Uuid,
}

impl Store {
    /// Appends a finished message (a question, or an answer written by the client itself);
    /// with a [`Pledge`], the generation of the answer the same request starts.
    pub async fn insert_message(
        &self,
        chat_id: Uuid,
        role: Role,
        content: String,
        pledge: Option<Pledge>,
    ) -> Result<Message, DbErr> {
        let txn = self.db.begin().await?;
        let seq = Store::next_seq(&txn, chat_id).await?;
        let at = now();
        let row = new_message(chat_id, seq, role, content, MessageStatus::Complete, at)
            .insert(&txn)
            .await?;
        if let Some(pledge) = pledge {
            // The answer's generation, with the id its start will write over (see
            // `insert_generation`).
            super::generations::running(
                pledge.answer_id,
                chat_id,
                row.id,
                row.id,
                pledge.owner,
                at,
            )
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(rows::message(row))
    }

    /// Deletes a question whose pledged answer could not start, and the pledge, unless an
    /// answer was written after all.
    pub async fn withdraw_question(&self, question_id: Uuid, pledge: Pledge) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        let answered = message::Entity::find()
            .filter(message::Column::ReplyTo.eq(question_id))
            .one(&txn)
            .await?
            .is_some();
        if !answered {
            entity::generation::Entity::delete_by_id(pledge.answer_id)
                .exec(&txn)
                .await?;
            message::Entity::delete_by_id(question_id)
                .exec(&txn)
                .await?;
        }
        txn.commit().await
    }

    /// Every message of a chat in order, optionally without `system` messages.
    pub async fn list_messages(
        &self,
        chat_id: Uuid,
        include_system: bool,
    ) -> Result<Vec<Message>, DbErr> {
        let mut q = message::Entity::find().filter(message::Column::ChatId.eq(chat_id));
        if !include_system {
            q = q.filter(message::Column::Role.ne(Role::System.as_str()));
        }
        let found = q
            .order_by_asc(message::Column::Seq)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::message).collect())
    }

    pub async fn message(&self, id: Uuid) -> Result<Option<Message>, DbErr> {
        let found = message::Entity::find_by_id(id).one(&self.reader).await?;
        Ok(found.map(rows::message))
    }

    /// The messages among `ids` that are no longer `streaming`.
    pub async fn settled_among(&self, ids: &[Uuid]) -> Result<Vec<Message>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = message::Entity::find()
            .filter(message::Column::Id.is_in(ids.iter().copied()))
            .filter(message::Column::Status.ne(crate::domain::MessageStatus::Streaming.as_str()))
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::message).collect())
    }

    /// The answer to a question, if one was started.
    pub async fn answer_to(&self, question_id: Uuid) -> Result<Option<Message>, DbErr> {
        let found = message::Entity::find()
            .filter(message::Column::ReplyTo.eq(question_id))
            .one(&self.reader)
            .await?;
        Ok(found.map(rows::message))
    }

    /// Deletes messages of a chat (their generations go with them); usage records stay, so
    /// that what was spent is still counted.
    pub async fn delete_messages(&self, chat_id: Uuid, ids: &[Uuid]) -> Result<u64, DbErr> {
        let deleted = message::Entity::delete_many()
            .filter(message::Column::ChatId.eq(chat_id))
            .filter(message::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await?;
        Ok(deleted.rows_affected)
    }
}
