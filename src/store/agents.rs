//! Agents and their versions. A change writes the new current row and its version in one
//! transaction; the version's primary key (agent, number) makes two concurrent changes of one
//! agent fail instead of both claiming the same number.

use entity::{agent, agent_version};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    Set, TransactionTrait,
};
use uuid::Uuid;

use super::{Store, now, rows};
use crate::domain::{Agent, AgentFields, AgentVersion};

impl Store {
    /// A new agent at version 1.
    pub async fn insert_agent(
        &self,
        workspace_id: Uuid,
        fields: &AgentFields,
    ) -> Result<Agent, DbErr> {
        let at = now();
        let id = Uuid::now_v7();
        let json = rows::agent_fields_json(fields);
        let txn = self.db.begin().await?;
        let row = agent::ActiveModel {
            id: Set(id),
            workspace_id: Set(workspace_id),
            name: Set(fields.name.clone()),
            agent_type: Set(fields.agent_type.clone()),
            version: Set(1),
            fields: Set(json.clone()),
            created_at: Set(at),
            updated_at: Set(at),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await?;
        agent_version::ActiveModel {
            agent_id: Set(id),
            version: Set(1),
            fields: Set(json),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(rows::agent(row))
    }

    /// An agent of the workspace, deleted ones included (their chats still name them).
    pub async fn agent(&self, workspace_id: Uuid, id: Uuid) -> Result<Option<Agent>, DbErr> {
        Ok(agent::Entity::find_by_id(id)
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .one(&self.reader)
            .await?
            .map(rows::agent))
    }

    /// The workspace's agents that are not deleted, newest first.
    pub async fn list_agents(
        &self,
        workspace_id: Uuid,
        agent_type: Option<&str>,
    ) -> Result<Vec<Agent>, DbErr> {
        let mut query = agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::DeletedAt.is_null());
        if let Some(kind) = agent_type {
            query = query.filter(agent::Column::AgentType.eq(kind));
        }
        Ok(query
            .order_by_desc(agent::Column::CreatedAt)
            .order_by_desc(agent::Column::Id)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(rows::agent)
            .collect())
    }

    /// Makes `fields` the agent's next version; `None` when there is no such live agent.
    pub async fn update_agent(
        &self,
        workspace_id: Uuid,
        id: Uuid,
        fields: &AgentFields,
    ) -> Result<Option<Agent>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = agent::Entity::find_by_id(id)
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::DeletedAt.is_null())
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let at = now();
        let version = row.version + 1;
        let json = rows::agent_fields_json(fields);
        agent_version::ActiveModel {
            agent_id: Set(id),
            version: Set(version),
            fields: Set(json.clone()),
            created_at: Set(at),
        }
        .insert(&txn)
        .await?;
        let mut active = row.into_active_model();
        active.name = Set(fields.name.clone());
        active.agent_type = Set(fields.agent_type.clone());
        active.version = Set(version);
        active.fields = Set(json);
        active.updated_at = Set(at);
        let row = active.update(&txn).await?;
        txn.commit().await?;
        Ok(Some(rows::agent(row)))
    }

    /// Marks an agent deleted; false when there is no such live agent.
    pub async fn delete_agent(&self, workspace_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let done = agent::Entity::update_many()
            .col_expr(
                agent::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(now()),
            )
            .filter(agent::Column::Id.eq(id))
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::DeletedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected > 0)
    }

    /// Every version of an agent, newest first.
    pub async fn agent_versions(&self, agent: &Agent) -> Result<Vec<AgentVersion>, DbErr> {
        Ok(agent_version::Entity::find()
            .filter(agent_version::Column::AgentId.eq(agent.id))
            .order_by_desc(agent_version::Column::Version)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| rows::agent_version(row, &agent.fields.name))
            .collect())
    }

    pub async fn agent_version(
        &self,
        agent: &Agent,
        version: i32,
    ) -> Result<Option<AgentVersion>, DbErr> {
        Ok(agent_version::Entity::find_by_id((agent.id, version))
            .one(&self.reader)
            .await?
            .map(|row| rows::agent_version(row, &agent.fields.name)))
    }
}
