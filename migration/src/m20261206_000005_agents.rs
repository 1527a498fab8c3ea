//! Agents: versioned presets of a workspace. `agents` holds each agent's current version (its
//! fields as one JSON document, with the name and type as columns to filter on);
//! `agent_versions` every version ever made, never rewritten. An answer records the version
//! that produced it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    WorkspaceId,
    Name,
    AgentType,
    Version,
    Fields,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum AgentVersions {
    Table,
    AgentId,
    Version,
    Fields,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    AgentVersion,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(uuid(Agents::Id).primary_key())
                    .col(uuid(Agents::WorkspaceId))
                    .col(string(Agents::Name))
                    .col(string_null(Agents::AgentType))
                    .col(integer(Agents::Version))
                    .col(json(Agents::Fields))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .col(timestamp_with_time_zone(Agents::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Agents::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agents_workspace")
                            .from(Agents::Table, Agents::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_agents_workspace_created")
                    .table(Agents::Table)
                    .col(Agents::WorkspaceId)
                    .col(Agents::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AgentVersions::Table)
                    .if_not_exists()
                    .col(uuid(AgentVersions::AgentId))
                    .col(integer(AgentVersions::Version))
                    .col(json(AgentVersions::Fields))
                    .col(timestamp_with_time_zone(AgentVersions::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(AgentVersions::AgentId)
                            .col(AgentVersions::Version),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agent_versions_agent")
                            .from(AgentVersions::Table, AgentVersions::AgentId)
                            .to(Agents::Table, Agents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(integer_null(Messages::AgentVersion))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::AgentVersion)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(AgentVersions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await
    }
}
