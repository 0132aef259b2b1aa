//! Accounts at external identity providers (OAuth2, Telegram) linked to users.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LinkedAccounts {
    Table,
    Id,
    UserId,
    Provider,
    Subject,
    Email,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LinkedAccounts::Table)
                    .col(
                        ColumnDef::new(LinkedAccounts::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LinkedAccounts::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(LinkedAccounts::Provider)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LinkedAccounts::Subject)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LinkedAccounts::Email).string_len(254).null())
                    .col(
                        ColumnDef::new(LinkedAccounts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(LinkedAccounts::Table, LinkedAccounts::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_linked_accounts_provider_subject")
                    .table(LinkedAccounts::Table)
                    .col(LinkedAccounts::Provider)
                    .col(LinkedAccounts::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_linked_accounts_user_id")
                    .table(LinkedAccounts::Table)
                    .col(LinkedAccounts::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(LinkedAccounts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
