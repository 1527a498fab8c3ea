//! Workspaces: the tenant boundary.

use entity::workspace;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, now, rows};
use crate::domain::Workspace;

pub const DEFAULT_SLUG: &str = "default";

impl Store {
    /// Returns the `default` workspace, creating it on first use.
    pub async fn ensure_default_workspace(&self) -> Result<Workspace, DbErr> {
        if let Some(ws) = self.workspace_by_slug(DEFAULT_SLUG).await? {
            return Ok(ws);
        }
        match self.create_workspace(DEFAULT_SLUG, "Default").await {
            Ok(ws) => Ok(ws),
            // Another process created it at the same moment.
            Err(e) if super::is_unique_violation(&e) => self
                .workspace_by_slug(DEFAULT_SLUG)
                .await?
                .ok_or(DbErr::RecordNotFound("default workspace".into())),
            Err(e) => Err(e),
        }
    }

    pub async fn workspace_by_slug(&self, slug: &str) -> Result<Option<Workspace>, DbErr> {
        let found = workspace::Entity::find()
            .filter(workspace::Column::Slug.eq(slug))
            .one(&self.reader)
            .await?;
        Ok(found.map(rows::workspace))
    }

    /// Finds a workspace by UUID or slug.
    pub async fn find_workspace(&self, id_or_slug: &str) -> Result<Option<Workspace>, DbErr> {
        match Uuid::parse_str(id_or_slug) {
            Ok(id) => Ok(workspace::Entity::find_by_id(id)
                .one(&self.reader)
                .await?
                .map(rows::workspace)),
            Err(_) => self.workspace_by_slug(id_or_slug).await,
        }
    }

    pub async fn create_workspace(&self, slug: &str, name: &str) -> Result<Workspace, DbErr> {
        let at = now();
        workspace::ActiveModel {
            id: Set(Uuid::now_v7()),
            slug: Set(slug.to_owned()),
            name: Set(name.to_owned()),
            credit_limit_micros: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&self.db)
        .await
        .map(rows::workspace)
    }
}
