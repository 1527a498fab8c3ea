//! The first schema: workspaces, keys, chats, messages, generations, shares and usage.
//!
//! Portable on purpose: the same statements run on SQLite and PostgreSQL. Money is stored as
//! integer micro-dollars so that sums are exact on every backend.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Slug,
    Name,
    CreditLimitMicros,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    WorkspaceId,
    Kind,
    Name,
    Prefix,
    KeyHash,
    IsAdmin,
    AllowedOrigins,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Chats {
    Table,
    Id,
    WorkspaceId,
    Name,
    EndUserId,
    AgentId,
    CreatedVia,
    Provider,
    Model,
    SystemPrompt,
    Temperature,
    MaxTokens,
    TopP,
    AgentFramework,
    Metadata,
    Status,
    PublicLinkId,
    LastSeq,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ChatId,
    Seq,
    Role,
    Content,
    Status,
    ReplyTo,
    FinishReason,
    Provider,
    Model,
    PromptTokens,
    CompletionTokens,
    UsageEstimated,
    CostMicros,
    Sources,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Generations {
    Table,
    Id,
    ChatId,
    ReplyTo,
    MessageId,
    Status,
    ErrorCode,
    ErrorMessage,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Shares {
    Table,
    Id,
    ChatId,
    EndUserId,
    Permission,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    Id,
    WorkspaceId,
    ChatId,
    MessageId,
    Provider,
    Model,
    PromptTokens,
    CompletionTokens,
    Estimated,
    CostMicros,
    CreatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .if_not_exists()
                    .col(uuid(Workspaces::Id).primary_key())
                    .col(string_uniq(Workspaces::Slug))
                    .col(string(Workspaces::Name))
                    .col(big_integer_null(Workspaces::CreditLimitMicros))
                    .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                    .col(timestamp_with_time_zone(Workspaces::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(uuid(ApiKeys::WorkspaceId))
                    .col(string(ApiKeys::Kind))
                    .col(string_null(ApiKeys::Name))
                    .col(string(ApiKeys::Prefix))
                    .col(string_uniq(ApiKeys::KeyHash))
                    .col(boolean(ApiKeys::IsAdmin))
                    .col(json_null(ApiKeys::AllowedOrigins))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_api_keys_workspace",
                        (ApiKeys::Table, ApiKeys::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Chats::Table)
                    .if_not_exists()
                    .col(uuid(Chats::Id).primary_key())
                    .col(uuid(Chats::WorkspaceId))
                    .col(string(Chats::Name))
                    .col(string_null(Chats::EndUserId))
                    .col(uuid_null(Chats::AgentId))
                    .col(string(Chats::CreatedVia))
                    .col(string_null(Chats::Provider))
                    .col(string_null(Chats::Model))
                    .col(text_null(Chats::SystemPrompt))
                    .col(double_null(Chats::Temperature))
                    .col(integer_null(Chats::MaxTokens))
                    .col(double_null(Chats::TopP))
                    .col(string_null(Chats::AgentFramework))
                    .col(json_null(Chats::Metadata))
                    .col(string(Chats::Status))
                    .col(uuid_null(Chats::PublicLinkId).unique_key())
                    .col(big_integer(Chats::LastSeq).default(0))
                    .col(timestamp_with_time_zone(Chats::CreatedAt))
                    .col(timestamp_with_time_zone(Chats::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_chats_workspace",
                        (Chats::Table, Chats::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chats_workspace_created")
                    .table(Chats::Table)
                    .col(Chats::WorkspaceId)
                    .col(Chats::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(uuid(Messages::Id).primary_key())
                    .col(uuid(Messages::ChatId))
                    .col(big_integer(Messages::Seq))
                    .col(string(Messages::Role))
                    .col(text(Messages::Content))
                    .col(string(Messages::Status))
                    // An answer names the question it answers; at most one answer per question
                    // is a database guarantee, not a convention.
                    .col(uuid_null(Messages::ReplyTo).unique_key())
                    .col(string_null(Messages::FinishReason))
                    .col(string_null(Messages::Provider))
                    .col(string_null(Messages::Model))
                    .col(integer_null(Messages::PromptTokens))
                    .col(integer_null(Messages::CompletionTokens))
                    .col(boolean(Messages::UsageEstimated).default(false))
                    .col(big_integer_null(Messages::CostMicros))
                    .col(json_null(Messages::Sources))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .col(timestamp_with_time_zone(Messages::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_messages_chat",
                        (Messages::Table, Messages::ChatId),
                        (Chats::Table, Chats::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_chat_seq")
                    .table(Messages::Table)
                    .col(Messages::ChatId)
                    .col(Messages::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_status")
                    .table(Messages::Table)
                    .col(Messages::Status)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Generations::Table)
                    .if_not_exists()
                    .col(uuid(Generations::Id).primary_key())
                    .col(uuid(Generations::ChatId))
                    .col(uuid(Generations::ReplyTo))
                    .col(uuid(Generations::MessageId))
                    .col(string(Generations::Status))
                    .col(string_null(Generations::ErrorCode))
                    .col(text_null(Generations::ErrorMessage))
                    .col(timestamp_with_time_zone(Generations::CreatedAt))
                    .col(timestamp_with_time_zone(Generations::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Generations::FinishedAt))
                    .foreign_key(&mut fk(
                        "fk_generations_chat",
                        (Generations::Table, Generations::ChatId),
                        (Chats::Table, Chats::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_generations_message",
                        (Generations::Table, Generations::MessageId),
                        (Messages::Table, Messages::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_generations_message")
                    .table(Generations::Table)
                    .col(Generations::MessageId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Shares::Table)
                    .if_not_exists()
                    .col(uuid(Shares::Id).primary_key())
                    .col(uuid(Shares::ChatId))
                    .col(string(Shares::EndUserId))
                    .col(string(Shares::Permission))
                    .col(timestamp_with_time_zone(Shares::CreatedAt))
                    .col(timestamp_with_time_zone_null(Shares::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_shares_chat",
                        (Shares::Table, Shares::ChatId),
                        (Chats::Table, Chats::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        // Usage outlives the chat it came from: deleting a chat must not refund its spend.
        manager
            .create_table(
                Table::create()
                    .table(UsageRecords::Table)
                    .if_not_exists()
                    .col(uuid(UsageRecords::Id).primary_key())
                    .col(uuid(UsageRecords::WorkspaceId))
                    .col(uuid_null(UsageRecords::ChatId))
                    .col(uuid_null(UsageRecords::MessageId))
                    .col(string(UsageRecords::Provider))
                    .col(string(UsageRecords::Model))
                    .col(integer(UsageRecords::PromptTokens))
                    .col(integer(UsageRecords::CompletionTokens))
                    .col(boolean(UsageRecords::Estimated))
                    .col(big_integer(UsageRecords::CostMicros))
                    .col(timestamp_with_time_zone(UsageRecords::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_usage_workspace",
                        (UsageRecords::Table, UsageRecords::WorkspaceId),
                        (Workspaces::Table, Workspaces::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_workspace")
                    .table(UsageRecords::Table)
                    .col(UsageRecords::WorkspaceId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            UsageRecords::Table.into_iden(),
            Shares::Table.into_iden(),
            Generations::Table.into_iden(),
            Messages::Table.into_iden(),
            Chats::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Workspaces::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
