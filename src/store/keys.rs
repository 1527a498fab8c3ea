//! API keys, stored as a display prefix and a SHA-256 hash only.

use entity::api_key;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use uuid::Uuid;

use super::{Store, now, rows};
use crate::domain::{ApiKey, KeyKind};

/// A key row to insert.
pub struct NewKey<'a> {
    pub workspace_id: Uuid,
    pub kind: KeyKind,
    pub name: Option<&'a str>,
    pub prefix: &'a str,
    pub hash: &'a str,
    pub is_admin: bool,
    pub allowed_origins: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
}

impl Store {
    pub async fn insert_key(&self, key: NewKey<'_>) -> Result<ApiKey, DbErr> {
        api_key::ActiveModel {
            id: Set(Uuid::now_v7()),
            workspace_id: Set(key.workspace_id),
            kind: Set(key.kind.as_str().to_owned()),
            name: Set(key.name.map(str::to_owned)),
            prefix: Set(key.prefix.to_owned()),
            key_hash: Set(key.hash.to_owned()),
            is_admin: Set(key.is_admin),
            allowed_origins: Set(key.allowed_origins.map(|o| serde_json::json!(o))),
            created_at: Set(now()),
            revoked_at: Set(None),
            rate_limit: Set(key.rate_limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX))),
        }
        .insert(&self.db)
        .await
        .map(rows::api_key)
    }

    /// The key with this hash, whether revoked or not.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, DbErr> {
        let found = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(hash))
            .one(&self.reader)
            .await?;
        Ok(found.map(rows::api_key))
    }

    pub async fn count_keys(&self) -> Result<u64, DbErr> {
        api_key::Entity::find().count(&self.reader).await
    }

    /// A workspace's keys, oldest first, revoked ones included.
    pub async fn list_keys(&self, workspace_id: Uuid) -> Result<Vec<ApiKey>, DbErr> {
        use sea_orm::QueryOrder;
        let found = api_key::Entity::find()
            .filter(api_key::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(rows::api_key).collect())
    }

    /// Revokes a key of a workspace; `false` when it has no such key. Revoking twice keeps the
    /// first time.
    pub async fn revoke_key(&self, workspace_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
        let found = api_key::Entity::find_by_id(id)
            .filter(api_key::Column::WorkspaceId.eq(workspace_id))
            .one(&self.db)
            .await?;
        let Some(key) = found else {
            return Ok(false);
        };
        if key.revoked_at.is_none() {
            api_key::Entity::update_many()
                .col_expr(
                    api_key::Column::RevokedAt,
                    sea_orm::sea_query::Expr::value(Some(now())),
                )
                .filter(api_key::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
        }
        Ok(true)
    }
}
