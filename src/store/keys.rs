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
}
