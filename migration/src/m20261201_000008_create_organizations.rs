//! Organizations, their members, invitations and API keys; the audit log learns which
//! organization an entry belongs to and which API key acted.
//!
//! - `organizations`: `slug` is unique (lower case, validated by the application).
//! - `organization_members`: one row per member, primary key (organization, user); `role` is
//!   `OWNER`, `ADMIN`, `MEMBER` or `VIEWER` as text.
//! - `organization_invitations`: `token_hash` is set when the mail job issues the token (never in
//!   the request), so only the last mailed link works; accepted or revoked rows are kept.
//! - `api_keys`: only a keyed hash of the key (`secret_hash`), and of the one it replaced while
//!   its grace period runs (`previous_hash`, `previous_expires_at`). `scopes` is a JSON array.
//!
//! Everything of an organization goes with it (`ON DELETE CASCADE`); the audit log keeps its
//! entries (no foreign key on `audit_log.organization_id`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Slug,
    Name,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrganizationMembers {
    Table,
    OrganizationId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrganizationInvitations {
    Table,
    Id,
    OrganizationId,
    Email,
    Role,
    TokenHash,
    InvitedBy,
    ExpiresAt,
    AcceptedAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrganizationId,
    Environment,
    Name,
    Prefix,
    SecretHash,
    PreviousHash,
    PreviousExpiresAt,
    Scopes,
    CreatedBy,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    OrganizationId,
    ActorApiKeyId,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

fn timestamp(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_timestamp(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn organization_fk(
    name: &str,
    table: impl IntoIden,
    column: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, column)
        .to(Organizations::Table, Organizations::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
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
                    .table(Organizations::Table)
                    .col(
                        ColumnDef::new(Organizations::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Organizations::Slug)
                            .string_len(40)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Organizations::Name)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Organizations::CreatedBy).uuid().null())
                    .col(timestamp(Organizations::CreatedAt))
                    .col(timestamp(Organizations::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_organizations_created_by")
                            .from(Organizations::Table, Organizations::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrganizationMembers::Table)
                    .col(
                        ColumnDef::new(OrganizationMembers::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationMembers::UserId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationMembers::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(timestamp(OrganizationMembers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(OrganizationMembers::OrganizationId)
                            .col(OrganizationMembers::UserId),
                    )
                    .foreign_key(&mut organization_fk(
                        "fk_organization_members_organization",
                        OrganizationMembers::Table,
                        OrganizationMembers::OrganizationId,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_organization_members_user")
                            .from(OrganizationMembers::Table, OrganizationMembers::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_organization_members_user")
                    .table(OrganizationMembers::Table)
                    .col(OrganizationMembers::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrganizationInvitations::Table)
                    .col(
                        ColumnDef::new(OrganizationInvitations::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(OrganizationInvitations::OrganizationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationInvitations::Email)
                            .string_len(320)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationInvitations::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationInvitations::TokenHash)
                            .string_len(64)
                            .null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(OrganizationInvitations::InvitedBy)
                            .uuid()
                            .null(),
                    )
                    .col(timestamp(OrganizationInvitations::ExpiresAt))
                    .col(optional_timestamp(OrganizationInvitations::AcceptedAt))
                    .col(optional_timestamp(OrganizationInvitations::RevokedAt))
                    .col(timestamp(OrganizationInvitations::CreatedAt))
                    .foreign_key(&mut organization_fk(
                        "fk_organization_invitations_organization",
                        OrganizationInvitations::Table,
                        OrganizationInvitations::OrganizationId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_organization_invitations_organization_email")
                    .table(OrganizationInvitations::Table)
                    .col(OrganizationInvitations::OrganizationId)
                    .col(OrganizationInvitations::Email)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::OrganizationId).uuid().not_null())
                    .col(
                        ColumnDef::new(ApiKeys::Environment)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ApiKeys::Name).string_len(100).not_null())
                    .col(ColumnDef::new(ApiKeys::Prefix).string_len(32).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::SecretHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::PreviousHash)
                            .string_len(64)
                            .null()
                            .unique_key(),
                    )
                    .col(optional_timestamp(ApiKeys::PreviousExpiresAt))
                    .col(ColumnDef::new(ApiKeys::Scopes).text().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedBy).uuid().null())
                    .col(optional_timestamp(ApiKeys::ExpiresAt))
                    .col(optional_timestamp(ApiKeys::RevokedAt))
                    .col(optional_timestamp(ApiKeys::LastUsedAt))
                    .col(timestamp(ApiKeys::CreatedAt))
                    .foreign_key(&mut organization_fk(
                        "fk_api_keys_organization",
                        ApiKeys::Table,
                        ApiKeys::OrganizationId,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_keys_created_by")
                            .from(ApiKeys::Table, ApiKeys::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_organization")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrganizationId)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;

        // SQLite alters one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(AuditLog::Table)
                    .add_column(ColumnDef::new(AuditLog::OrganizationId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditLog::Table)
                    .add_column(ColumnDef::new(AuditLog::ActorApiKeyId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_log_organization")
                    .table(AuditLog::Table)
                    .col(AuditLog::OrganizationId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_audit_log_organization")
                    .table(AuditLog::Table)
                    .to_owned(),
            )
            .await?;
        for column in [AuditLog::ActorApiKeyId, AuditLog::OrganizationId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditLog::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(OrganizationInvitations::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(OrganizationMembers::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Organizations::Table).to_owned())
            .await
    }
}
