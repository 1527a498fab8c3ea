//! Generation leases: the process that runs a generation writes its owner id on the row and
//! renews a heartbeat while it runs, so that recovery touches only generations whose owner is
//! gone. Rows written before this change have neither, and count as orphaned.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Generations {
    Table,
    OwnerId,
    HeartbeatAt,
    Status,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Generations::Table)
                    .add_column(uuid_null(Generations::OwnerId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Generations::Table)
                    .add_column(timestamp_with_time_zone_null(Generations::HeartbeatAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_generations_status_owner")
                    .table(Generations::Table)
                    .col(Generations::Status)
                    .col(Generations::OwnerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_generations_status_owner")
                    .table(Generations::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Generations::Table)
                    .drop_column(Generations::HeartbeatAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Generations::Table)
                    .drop_column(Generations::OwnerId)
                    .to_owned(),
            )
            .await
    }
}
