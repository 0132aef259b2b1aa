use sea_orm::entity::prelude::*;

/// A machine client's key for one organization and environment. The key itself is never
/// stored: only a keyed hash of it (and of the key it replaced, while the grace period of a
/// rotation runs).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    /// `Stage` as stored (`DEVELOPMENT`, `STAGING`, `PRODUCTION`).
    pub environment: String,
    pub name: String,
    /// The first characters of the key (`mpk_prod_AbCd1234`), to recognise it by.
    pub prefix: String,
    pub secret_hash: String,
    pub previous_hash: Option<String>,
    pub previous_expires_at: Option<DateTimeUtc>,
    /// JSON array of organization permission names.
    pub scopes: String,
    pub created_by: Option<Uuid>,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
