//! Chats, always read through a `Scope`.

use entity::chat;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Select, Set,
};
use uuid::Uuid;

use super::{Scope, Store, now, rows};
use crate::domain::{Chat, ChatName, ChatSettings, KeyKind};

/// A chat row to insert.
pub struct NewChat {
    pub workspace_id: Uuid,
    pub name: ChatName,
    pub end_user_id: Option<String>,
    pub created_via: KeyKind,
    pub settings: ChatSettings,
    pub agent_framework: Option<String>,
    pub agent_id: Option<Uuid>,
    pub metadata: Option<serde_json::Value>,
}

/// Changes to a chat; `None` leaves a field as it is.
#[derive(Default)]
pub struct ChatChanges {
    pub name: Option<ChatName>,
    pub settings: Option<ChatSettings>,
    pub agent_framework: Option<Option<String>>,
}

fn scoped(scope: &Scope) -> Select<chat::Entity> {
    let mut cond = Condition::all().add(chat::Column::WorkspaceId.eq(scope.workspace_id));
    if let Some(user) = &scope.end_user {
        // The user's own chats, and those shared with them.
        let shared = Query::select()
            .column(entity::share::Column::ChatId)
            .from(entity::share::Entity)
            .and_where(entity::share::Column::EndUserId.eq(user.as_str()))
            .and_where(entity::share::Column::RevokedAt.is_null())
            .to_owned();
        cond = cond.add(
            Condition::any()
                .add(chat::Column::EndUserId.eq(user.as_str()))
                .add(chat::Column::Id.in_subquery(shared)),
        );
    }
    if scope.publishable_only {
        cond = cond.add(chat::Column::CreatedVia.eq("publishable"));
    }
    chat::Entity::find().filter(cond)
}

impl Store {
    pub async fn create_chat(&self, new: NewChat) -> Result<Chat, DbErr> {
        let at = now();
        chat::ActiveModel {
            id: Set(Uuid::new_v4()),
            workspace_id: Set(new.workspace_id),
            name: Set(new.name.into_string()),
            end_user_id: Set(new.end_user_id),
            agent_id: Set(new.agent_id),
            created_via: Set(new.created_via.as_str().to_owned()),
            provider: Set(new.settings.provider),
            model: Set(new.settings.model),
            system_prompt: Set(new.settings.system_prompt),
            temperature: Set(new.settings.temperature.map(|t| t.get())),
            max_tokens: Set(new.settings.max_tokens.map(rows::tokens)),
            top_p: Set(new.settings.top_p.map(|t| t.get())),
            agent_framework: Set(new.agent_framework),
            metadata: Set(new.metadata),
            status: Set("active".to_owned()),
            public_link_id: Set(None),
            last_seq: Set(0),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&self.db)
        .await
        .map(rows::chat)
    }

    pub async fn chat(&self, scope: &Scope, id: Uuid) -> Result<Option<Chat>, DbErr> {
        Ok(self.chat_row(scope, id).await?.map(rows::chat))
    }

    async fn chat_row(&self, scope: &Scope, id: Uuid) -> Result<Option<chat::Model>, DbErr> {
        scoped(scope)
            .filter(chat::Column::Id.eq(id))
            .one(&self.reader)
            .await
    }

    /// Newest first; ties (same millisecond) broken by id so pages are stable.
    pub async fn list_chats(
        &self,
        scope: &Scope,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Chat>, DbErr> {
        let found = scoped(scope)
            .order_by_desc(chat::Column::CreatedAt)
            .order_by_desc(chat::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::chat).collect())
    }

    pub async fn rename_chat(
        &self,
        scope: &Scope,
        id: Uuid,
        name: ChatName,
        updated_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<Chat>, DbErr> {
        let Some(found) = self.chat_row(scope, id).await? else {
            return Ok(None);
        };
        let mut active = found.into_active_model();
        active.name = Set(name.into_string());
        active.updated_at = Set(updated_at.unwrap_or_else(now));
        active
            .update(&self.db)
            .await
            .map(|row| Some(rows::chat(row)))
    }

    /// Applies `changes` to a chat the scope can see; the updated chat, `None` when none.
    pub async fn update_chat(
        &self,
        scope: &Scope,
        id: Uuid,
        changes: ChatChanges,
    ) -> Result<Option<Chat>, DbErr> {
        let Some(found) = self.chat_row(scope, id).await? else {
            return Ok(None);
        };
        let mut active = found.into_active_model();
        if let Some(name) = changes.name {
            active.name = Set(name.into_string());
        }
        if let Some(settings) = changes.settings {
            active.provider = Set(settings.provider);
            active.model = Set(settings.model);
            active.system_prompt = Set(settings.system_prompt);
            active.temperature = Set(settings.temperature.map(|t| t.get()));
            active.max_tokens = Set(settings.max_tokens.map(rows::tokens));
            active.top_p = Set(settings.top_p.map(|t| t.get()));
        }
        if let Some(framework) = changes.agent_framework {
            active.agent_framework = Set(framework);
        }
        active.updated_at = Set(now());
        active
            .update(&self.db)
            .await
            .map(|row| Some(rows::chat(row)))
    }

    /// Gives a chat the scope can see a public link id, or takes it away (`None`).
    pub async fn set_public_link(
        &self,
        scope: &Scope,
        id: Uuid,
        link: Option<Uuid>,
    ) -> Result<Option<Chat>, DbErr> {
        let Some(found) = self.chat_row(scope, id).await? else {
            return Ok(None);
        };
        let mut active = found.into_active_model();
        active.public_link_id = Set(link);
        active.updated_at = Set(now());
        active
            .update(&self.db)
            .await
            .map(|row| Some(rows::chat(row)))
    }

    /// The chat whose public link this is, whatever its workspace.
    pub async fn chat_by_public_link(&self, link: Uuid) -> Result<Option<Chat>, DbErr> {
        let found = chat::Entity::find()
            .filter(chat::Column::PublicLinkId.eq(link))
            .one(&self.reader)
            .await?;
        Ok(found.map(rows::chat))
    }

    /// Deletes the chat; its messages, generations and shares go with it (foreign-key cascade).
    pub async fn delete_chat(&self, scope: &Scope, id: Uuid) -> Result<Option<Chat>, DbErr> {
        let Some(found) = self.chat(scope, id).await? else {
            return Ok(None);
        };
        chat::Entity::delete_by_id(found.id).exec(&self.db).await?;
        Ok(Some(found))
    }

    /// Reserves the next sequence number of a chat. The row update serialises concurrent
    /// writers on every backend; call it inside the transaction that inserts the message.
    pub(super) async fn next_seq<C: sea_orm::ConnectionTrait>(
        conn: &C,
        chat_id: Uuid,
    ) -> Result<i64, DbErr> {
        // One statement: UPDATE … RETURNING (SQLite ≥ 3.35 and PostgreSQL).
        let update = Query::update()
            .table(chat::Entity)
            .value(
                chat::Column::LastSeq,
                Expr::col(chat::Column::LastSeq).add(1),
            )
            .and_where(chat::Column::Id.eq(chat_id))
            .returning_col(chat::Column::LastSeq)
            .to_owned();
        let row = conn
            .query_one(&update)
            .await?
            .ok_or(DbErr::RecordNotFound("chat".into()))?;
        row.try_get::<i64>("", "last_seq")
    }
}

impl Store {
    /// Chats bound to an agent, newest first: one end user's when `user` names one, and of
    /// these agents when `agents` is given.
    pub async fn list_agent_chats(
        &self,
        scope: &Scope,
        user: Option<&str>,
        agents: Option<&[Uuid]>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Chat>, DbErr> {
        let mut query = scoped(scope).filter(chat::Column::AgentId.is_not_null());
        if let Some(user) = user {
            query = query.filter(chat::Column::EndUserId.eq(user));
        }
        if let Some(agents) = agents {
            query = query.filter(chat::Column::AgentId.is_in(agents.iter().copied()));
        }
        let found = query
            .order_by_desc(chat::Column::CreatedAt)
            .order_by_desc(chat::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::chat).collect())
    }
}
