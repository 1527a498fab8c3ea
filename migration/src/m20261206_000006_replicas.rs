//! Replicas: every running sluice process that uses this database, with the heartbeat it
//! renews. A start without Redis checks that no other replica is alive; leases of generations
//! expire when their owner's heartbeat stops.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Replicas {
    Table,
    Id,
    Name,
    Shared,
    StartedAt,
    HeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Replicas::Table)
                    .if_not_exists()
                    .col(uuid(Replicas::Id).primary_key())
                    .col(string(Replicas::Name))
                    .col(boolean(Replicas::Shared))
                    .col(timestamp_with_time_zone(Replicas::StartedAt))
                    .col(timestamp_with_time_zone(Replicas::HeartbeatAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Replicas::Table).to_owned())
            .await
    }
}
