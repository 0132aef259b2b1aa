//! The feature's own table (migration `m20261201_000008_create_organizations`); organizations,
//! members and API keys are identity's (`crate::entities`), since the tenant guard reads them.

pub mod invitations {
    use sea_orm::entity::prelude::*;

    /// An invitation to join an organization. The token is issued (and its hash stored) by the
    /// mail job, so it never sits in the request or the jobs table.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organization_invitations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organization_id: Uuid,
        /// Normalised (trimmed, lower case).
        pub email: String,
        /// `OrgRole` as stored.
        pub role: String,
        pub token_hash: Option<String>,
        pub invited_by: Option<Uuid>,
        pub expires_at: DateTimeUtc,
        pub accepted_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
