//! The feature's tables (migration `m20261201_000009_create_langfuse`).

pub mod settings {
    use sea_orm::entity::prelude::*;

    /// One organization's Langfuse project for one environment.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "langfuse_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organization_id: Uuid,
        /// `Stage` as stored.
        pub environment: String,
        /// `https://cloud.langfuse.com`, without a trailing slash.
        pub host: String,
        pub public_key: String,
        /// Sealed with `SECRETS_KEY`; never leaves the feature in the clear but to Langfuse.
        pub secret_encrypted: String,
        /// The id of the key that sealed it (`SecretBox::key_id`).
        pub secret_key_id: String,
        pub secret_last4: String,
        pub enabled: bool,
        pub sample_rate: f64,
        pub release: Option<String>,
        /// JSON array of strings.
        pub tags: String,
        /// `UNKNOWN`, `UP` or `DOWN`.
        pub status: String,
        pub consecutive_failures: i32,
        pub last_checked_at: Option<DateTimeUtc>,
        pub status_changed_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod checks {
    use sea_orm::entity::prelude::*;

    /// One connection check's result. Ids are UUID v7: newest last.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "langfuse_checks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub settings_id: Uuid,
        /// `CheckStatus` as stored.
        pub status: String,
        pub http_status: Option<i32>,
        pub latency_ms: Option<i64>,
        pub message: String,
        /// Run by the monitor (else by someone's `testLangfuseConnection`).
        pub scheduled: bool,
        pub checked_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
