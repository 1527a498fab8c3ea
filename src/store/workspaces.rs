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

    /// A workspace's credit limit in micro-dollars (`None`: unlimited, or no such workspace).
    pub async fn credit_limit(&self, workspace_id: Uuid) -> Result<Option<i64>, DbErr> {
        Ok(workspace::Entity::find_by_id(workspace_id)
            .one(&self.reader)
            .await?
            .and_then(|w| w.credit_limit_micros))
    }

    /// Renames a workspace and/or changes its credit limit (`Some(None)` lifts it); the
    /// updated workspace, `None` when there is no such workspace.
    pub async fn update_workspace(
        &self,
        workspace_id: Uuid,
        name: Option<String>,
        credit_limit_micros: Option<Option<i64>>,
    ) -> Result<Option<Workspace>, DbErr> {
        let mut update = workspace::Entity::update_many()
            .col_expr(
                workspace::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(now()),
            )
            .filter(workspace::Column::Id.eq(workspace_id));
        if let Some(name) = name {
            update = update.col_expr(
                workspace::Column::Name,
                sea_orm::sea_query::Expr::value(name),
            );
        }
        if let Some(limit) = credit_limit_micros {
            update = update.col_expr(
                workspace::Column::CreditLimitMicros,
                sea_orm::sea_query::Expr::value(limit),
            );
        }
        update.exec(&self.db).await?;
        Ok(workspace::Entity::find_by_id(workspace_id)
            .one(&self.db)
            .await?
            .map(rows::workspace))
    }

    /// Sets (or, with `None`, lifts) a workspace's credit limit.
    pub async fn set_credit_limit(
        &self,
        workspace_id: Uuid,
        limit_micros: Option<i64>,
    ) -> Result<(), DbErr> {
        workspace::Entity::update_many()
            .col_expr(
                workspace::Column::CreditLimitMicros,
                sea_orm::sea_query::Expr::value(limit_micros),
            )
            .col_expr(
                workspace::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(now()),
            )
            .filter(workspace::Column::Id.eq(workspace_id))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    /// What a workspace's answers cost so far, in micro-dollars.
    pub async fn spent_micros(&self, workspace_id: Uuid) -> Result<i64, DbErr> {
        use entity::usage_record;
        use sea_orm::QuerySelect;
        // PostgreSQL sums a BIGINT column as NUMERIC: cast back, on both backends.
        let total: Option<i64> = usage_record::Entity::find()
            .select_only()
            .column_as(
                sea_orm::sea_query::Expr::cust("CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT)"),
                "total",
            )
            .filter(usage_record::Column::WorkspaceId.eq(workspace_id))
            .into_tuple()
            .one(&self.reader)
            .await?;
        Ok(total.unwrap_or(0))
    }
}
