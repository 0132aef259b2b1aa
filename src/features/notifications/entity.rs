//! The feature's tables (migration `m20261201_000007_create_notifications`).

pub mod notifications {
    use sea_orm::entity::prelude::*;

    /// One notification of one recipient. Ids are UUID v7: ordered by creation.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub recipient_id: Uuid,
        /// `NotificationKind` as stored (`SECURITY`, …).
        pub kind: String,
        pub title: String,
        pub body: String,
        /// JSON object (`{"link": "/…", …}`).
        pub payload: String,
        /// Makes a fan-out idempotent: one row per recipient and source.
        pub source_key: Option<String>,
        pub read_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod preferences {
    use sea_orm::entity::prelude::*;

    /// A user's choice for one kind; absent means the kind's defaults.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_preferences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        pub in_app: bool,
        pub email: bool,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
