use sea_orm::entity::prelude::*;

/// A user's TOTP secret, encrypted with `SECRETS_KEY`. Unconfirmed until the first valid code.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_totp")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub secret_encrypted: String,
    pub confirmed_at: Option<DateTimeUtc>,
    /// The last time step accepted, so a code works only once.
    pub last_used_step: Option<i64>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
