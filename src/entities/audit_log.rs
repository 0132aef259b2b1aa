use sea_orm::entity::prelude::*;

/// One recorded action. Written in the transaction of the change it records; never updated.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    /// The actor's email when the entry was written (kept after the account is deleted).
    pub actor_email: Option<String>,
    /// The API key that acted (then `actor_id` is empty).
    pub actor_api_key_id: Option<Uuid>,
    /// The organization the change belongs to, if any (kept after it is deleted).
    pub organization_id: Option<Uuid>,
    /// `user.ban`, `auth.login`, …
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// JSON: reason, before/after, counts.
    pub metadata: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
