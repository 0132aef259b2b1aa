//! Langfuse settings per organization and environment, and the results of their checks.
//!
//! - `langfuse_settings`: one row per (organization, environment); the secret key sealed with
//!   `SECRETS_KEY` (`secret_encrypted`, with the sealing key's id in `secret_key_id`) and its
//!   last four characters for display; the monitor's state (`status`, `consecutive_failures`).
//! - `langfuse_checks`: the last results per setting (the application keeps 100).
//!
//! Both go with their organization (`ON DELETE CASCADE`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LangfuseSettings {
    Table,
    Id,
    OrganizationId,
    Environment,
    Host,
    PublicKey,
    SecretEncrypted,
    SecretKeyId,
    SecretLast4,
    Enabled,
    SampleRate,
    Release,
    Tags,
    Status,
    ConsecutiveFailures,
    LastCheckedAt,
    StatusChangedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LangfuseChecks {
    Table,
    Id,
    SettingsId,
    Status,
    HttpStatus,
    LatencyMs,
    Message,
    Scheduled,
    CheckedAt,
}

#[derive(DeriveIden)]
enum Organizations {
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
                    .table(LangfuseSettings::Table)
                    .col(
                        ColumnDef::new(LangfuseSettings::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::Environment)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::Host)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::PublicKey)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::SecretEncrypted)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::SecretKeyId)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::SecretLast4)
                            .string_len(8)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::Enabled)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::SampleRate)
                            .double()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::Release)
                            .string_len(100)
                            .null(),
                    )
                    .col(ColumnDef::new(LangfuseSettings::Tags).text().not_null())
                    .col(
                        ColumnDef::new(LangfuseSettings::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::ConsecutiveFailures)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::LastCheckedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::StatusChangedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseSettings::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_langfuse_settings_organization")
                            .from(LangfuseSettings::Table, LangfuseSettings::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_langfuse_settings_organization_environment")
                    .table(LangfuseSettings::Table)
                    .col(LangfuseSettings::OrganizationId)
                    .col(LangfuseSettings::Environment)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LangfuseChecks::Table)
                    .col(
                        ColumnDef::new(LangfuseChecks::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LangfuseChecks::SettingsId).uuid().not_null())
                    .col(
                        ColumnDef::new(LangfuseChecks::Status)
                            .string_len(24)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LangfuseChecks::HttpStatus).integer().null())
                    .col(
                        ColumnDef::new(LangfuseChecks::LatencyMs)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseChecks::Message)
                            .string_len(500)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseChecks::Scheduled)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LangfuseChecks::CheckedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_langfuse_checks_settings")
                            .from(LangfuseChecks::Table, LangfuseChecks::SettingsId)
                            .to(LangfuseSettings::Table, LangfuseSettings::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_langfuse_checks_settings")
                    .table(LangfuseChecks::Table)
                    .col(LangfuseChecks::SettingsId)
                    .col(LangfuseChecks::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LangfuseChecks::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(LangfuseSettings::Table).to_owned())
            .await
    }
}
