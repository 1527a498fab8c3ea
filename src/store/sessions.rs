//! Browser sessions: looked up by the hash of the cookie's token, never by the token itself.

use chrono::{DateTime, Utc};
use entity::{api_key, web_session};
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, now, rows};
use crate::domain::ApiKey;

/// A browser session as stored (its token only as a hash).
#[derive(Clone, Debug)]
pub struct StoredSession {
    pub key_id: Uuid,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn session(row: web_session::Model) -> StoredSession {
    StoredSession {
        key_id: row.key_id,
        csrf_token: row.csrf_token,
        expires_at: row.expires_at,
    }
}

impl Store {
    /// Saves a new session, and clears expired ones while it is at it.
    pub async fn insert_session(
        &self,
        token_hash: &str,
        csrf_token: &str,
        key_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<StoredSession, DbErr> {
        let created_at = now();
        web_session::Entity::delete_many()
            .filter(web_session::Column::ExpiresAt.lt(created_at))
            .exec(&self.db)
            .await?;
        web_session::ActiveModel {
            id: Set(Uuid::now_v7()),
            token_hash: Set(token_hash.to_owned()),
            csrf_token: Set(csrf_token.to_owned()),
            key_id: Set(key_id),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
        }
        .insert(&self.db)
        .await
        .map(session)
    }

    /// The unexpired session with this token hash, with its key (revoked or not), in one query.
    pub async fn session_with_key(
        &self,
        token_hash: &str,
    ) -> Result<Option<(StoredSession, ApiKey)>, DbErr> {
        let found = web_session::Entity::find()
            .filter(web_session::Column::TokenHash.eq(token_hash))
            .filter(web_session::Column::ExpiresAt.gt(now()))
            .find_also_related(api_key::Entity)
            .one(&self.reader)
            .await?;
        Ok(found.and_then(|(row, key)| key.map(|k| (session(row), rows::api_key(k)))))
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), DbErr> {
        web_session::Entity::delete_many()
            .filter(web_session::Column::TokenHash.eq(token_hash))
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
