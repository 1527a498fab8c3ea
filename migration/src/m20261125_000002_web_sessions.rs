//! Browser sessions of the chat page: a cookie token and a CSRF token per sign-in, tied to the
//! key that signed in (revoking the key ends its sessions; deleting it deletes them).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebSessions {
    Table,
    Id,
    TokenHash,
    CsrfToken,
    KeyId,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebSessions::Table)
                    .if_not_exists()
                    .col(uuid(WebSessions::Id).primary_key())
                    .col(string_uniq(WebSessions::TokenHash))
                    .col(string(WebSessions::CsrfToken))
                    .col(uuid(WebSessions::KeyId))
                    .col(timestamp_with_time_zone(WebSessions::CreatedAt))
                    .col(timestamp_with_time_zone(WebSessions::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_web_sessions_key")
                            .from(WebSessions::Table, WebSessions::KeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_web_sessions_expires")
                    .table(WebSessions::Table)
                    .col(WebSessions::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(WebSessions::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
