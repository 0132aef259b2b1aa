use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Lower-cased.
    #[sea_orm(unique)]
    pub email: String,
    #[sea_orm(unique)]
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// `None` for accounts that only sign in through a provider.
    pub password_hash: Option<String>,
    pub is_active: bool,
    pub is_verified: bool,
    pub banned_at: Option<DateTimeUtc>,
    pub ban_reason: Option<String>,
    pub banned_until: Option<DateTimeUtc>,
    /// Bumped to invalidate every access token issued before.
    pub session_epoch: i64,
    pub last_login_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user_roles::Entity")]
    UserRoles,
    #[sea_orm(has_many = "super::refresh_tokens::Entity")]
    RefreshTokens,
}

impl Related<super::user_roles::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::UserRoles.def()
    }
}

impl Related<super::roles::Entity> for Entity {
    fn to() -> RelationDef {
        super::user_roles::Relation::Roles.def()
    }

    fn via() -> Option<RelationDef> {
        Some(super::user_roles::Relation::Users.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Banned now: a ban without an end, or one whose end is still ahead.
    pub fn is_banned_at(&self, now: DateTimeUtc) -> bool {
        self.banned_at.is_some() && self.banned_until.is_none_or(|until| until > now)
    }
}

impl Model {
    /// A row of which only `columns` were selected, in that order (a list that shows two fields
    /// need not read, copy and decode fourteen). The columns not selected hold placeholders
    /// (empty, `None`, `false`, zero, the epoch) that nothing may read: only a caller that knows
    /// which fields it will resolve (`features::users::User::columns_for`) selects this way.
    ///
    /// # Errors
    /// A selected column's value does not decode to its field's type.
    pub fn from_columns(row: &QueryResult, columns: &[Column]) -> Result<Self, DbErr> {
        let mut model = Self {
            id: Uuid::nil(),
            email: String::new(),
            username: None,
            display_name: None,
            password_hash: None,
            is_active: false,
            is_verified: false,
            banned_at: None,
            ban_reason: None,
            banned_until: None,
            session_epoch: 0,
            last_login_at: None,
            created_at: DateTimeUtc::UNIX_EPOCH,
            updated_at: DateTimeUtc::UNIX_EPOCH,
        };
        for (at, column) in columns.iter().enumerate() {
            match column {
                Column::Id => model.id = row.try_get_by(at)?,
                Column::Email => model.email = row.try_get_by(at)?,
                Column::Username => model.username = row.try_get_by(at)?,
                Column::DisplayName => model.display_name = row.try_get_by(at)?,
                Column::PasswordHash => model.password_hash = row.try_get_by(at)?,
                Column::IsActive => model.is_active = row.try_get_by(at)?,
                Column::IsVerified => model.is_verified = row.try_get_by(at)?,
                Column::BannedAt => model.banned_at = row.try_get_by(at)?,
                Column::BanReason => model.ban_reason = row.try_get_by(at)?,
                Column::BannedUntil => model.banned_until = row.try_get_by(at)?,
                Column::SessionEpoch => model.session_epoch = row.try_get_by(at)?,
                Column::LastLoginAt => model.last_login_at = row.try_get_by(at)?,
                Column::CreatedAt => model.created_at = row.try_get_by(at)?,
                Column::UpdatedAt => model.updated_at = row.try_get_by(at)?,
            }
        }
        Ok(model)
    }
}
