//! The append-only audit log. No foreign keys: entries outlive the users they mention.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    ActorId,
    ActorEmail,
    Action,
    TargetType,
    TargetId,
    RequestId,
    Ip,
    UserAgent,
    Metadata,
    CreatedAt,
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
                    .table(AuditLog::Table)
                    .col(ColumnDef::new(AuditLog::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AuditLog::ActorId).uuid().null())
                    .col(ColumnDef::new(AuditLog::ActorEmail).string_len(254).null())
                    .col(ColumnDef::new(AuditLog::Action).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLog::TargetType).string_len(32).null())
                    .col(ColumnDef::new(AuditLog::TargetId).string_len(64).null())
                    .col(ColumnDef::new(AuditLog::RequestId).string_len(128).null())
                    .col(ColumnDef::new(AuditLog::Ip).string_len(45).null())
                    .col(ColumnDef::new(AuditLog::UserAgent).string_len(255).null())
                    .col(ColumnDef::new(AuditLog::Metadata).text().not_null())
                    .col(
                        ColumnDef::new(AuditLog::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_audit_log_created_at", AuditLog::CreatedAt),
            ("idx_audit_log_actor_id", AuditLog::ActorId),
            ("idx_audit_log_action", AuditLog::Action),
            ("idx_audit_log_target_id", AuditLog::TargetId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditLog::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        // Filters and orders of the admin user list.
        for (name, column) in [
            ("idx_users_last_login_at", Alias::new("last_login_at")),
            ("idx_users_banned_at", Alias::new("banned_at")),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Alias::new("users"))
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["idx_users_last_login_at", "idx_users_banned_at"] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Alias::new("users"))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AuditLog::Table).if_exists().to_owned())
            .await
    }
}
