//! Shares of a chat with end users (read-only), revoked by stamping them.

use entity::share;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

use super::{Store, now};
use crate::domain::Share;

fn to_share(row: share::Model) -> Share {
    Share {
        user_id: row.end_user_id,
        permission: row.permission,
        created_at: row.created_at,
    }
}

impl Store {
    /// Shares a chat with an end user; the share and whether it is new (sharing again is a
    /// no-op that returns the existing share).
    pub async fn share_chat(
        &self,
        chat_id: Uuid,
        user_id: &str,
        permission: &str,
    ) -> Result<(Share, bool), DbErr> {
        let existing = share::Entity::find()
            .filter(share::Column::ChatId.eq(chat_id))
            .filter(share::Column::EndUserId.eq(user_id))
            .filter(share::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?;
        if let Some(found) = existing {
            return Ok((to_share(found), false));
        }
        let row = share::ActiveModel {
            id: Set(Uuid::now_v7()),
            chat_id: Set(chat_id),
            end_user_id: Set(user_id.to_owned()),
            permission: Set(permission.to_owned()),
            created_at: Set(now()),
            revoked_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok((to_share(row), true))
    }

    /// A chat's live shares, oldest first.
    pub async fn shares(&self, chat_id: Uuid) -> Result<Vec<Share>, DbErr> {
        let found = share::Entity::find()
            .filter(share::Column::ChatId.eq(chat_id))
            .filter(share::Column::RevokedAt.is_null())
            .order_by_asc(share::Column::CreatedAt)
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(to_share).collect())
    }

    /// Revokes a chat's share with a user; `false` when it had none.
    pub async fn revoke_share(&self, chat_id: Uuid, user_id: &str) -> Result<bool, DbErr> {
        let revoked = share::Entity::update_many()
            .col_expr(
                share::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Some(now())),
            )
            .filter(share::Column::ChatId.eq(chat_id))
            .filter(share::Column::EndUserId.eq(user_id))
            .filter(share::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(revoked.rows_affected > 0)
    }

    /// Which of these chats are shared with anyone.
    pub async fn shared_among(
        &self,
        chat_ids: &[Uuid],
    ) -> Result<std::collections::HashSet<Uuid>, DbErr> {
        if chat_ids.is_empty() {
            return Ok(Default::default());
        }
        let found = share::Entity::find()
            .filter(share::Column::ChatId.is_in(chat_ids.iter().copied()))
            .filter(share::Column::RevokedAt.is_null())
            .all(&self.reader)
            .await?;
        Ok(found.into_iter().map(|s| s.chat_id).collect())
    }
}
