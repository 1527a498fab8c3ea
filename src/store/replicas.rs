//! The replicas using this database and their heartbeats.

use entity::replica;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, now};

/// Another replica that said it was alive.
#[derive(Clone, Debug)]
pub struct OtherReplica {
    pub name: String,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    pub async fn register_replica(&self, id: Uuid, name: &str, shared: bool) -> Result<(), DbErr> {
        let at = now();
        replica::ActiveModel {
            id: Set(id),
            name: Set(name.to_owned()),
            shared: Set(shared),
            started_at: Set(at),
            heartbeat_at: Set(at),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    pub async fn replica_heartbeat(&self, id: Uuid) -> Result<(), DbErr> {
        replica::Entity::update_many()
            .col_expr(replica::Column::HeartbeatAt, Expr::value(now()))
            .filter(replica::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    /// The other replicas whose heartbeat is newer than `since`; older rows are removed (their
    /// replica is gone).
    pub async fn other_replicas(
        &self,
        me: Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<OtherReplica>, DbErr> {
        replica::Entity::delete_many()
            .filter(replica::Column::HeartbeatAt.lt(since))
            .exec(&self.db)
            .await?;
        Ok(replica::Entity::find()
            .filter(replica::Column::Id.ne(me))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| OtherReplica {
                name: r.name,
                heartbeat_at: r.heartbeat_at,
            })
            .collect())
    }

    pub async fn remove_replica(&self, id: Uuid) -> Result<(), DbErr> {
        replica::Entity::delete_by_id(id)
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
