//! Pages of users are ordered by a column and then by id (`allUsers`): an index on both lets
//! the database read a page in order and stop after it, instead of sorting ties in a temporary
//! b-tree. The composite indexes replace the single-column ones they begin with.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    CreatedAt,
    LastLoginAt,
}

/// (composite index, the single-column index it replaces, its column)
const PAGES: [(&str, &str, Users); 2] = [
    (
        "idx_users_created_at_id",
        "idx_users_created_at",
        Users::CreatedAt,
    ),
    (
        "idx_users_last_login_at_id",
        "idx_users_last_login_at",
        Users::LastLoginAt,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, replaced, column) in PAGES {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(column)
                        .col(Users::Id)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(Index::drop().name(replaced).table(Users::Table).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, replaced, column) in PAGES {
            manager
                .create_index(
                    Index::create()
                        .name(replaced)
                        .table(Users::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
            manager
                .drop_index(Index::drop().name(name).table(Users::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
