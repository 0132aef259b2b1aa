use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;

use super::loaders::Loaders;
use super::service;
use crate::entities::users;
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, RequirePermission};
use crate::identity::permissions::ADMIN_READ;
use crate::identity::{accounts, sessions};

/// An account.
pub struct User(pub users::Model);

#[derive(SimpleObject)]
#[graphql(cache_control(max_age = 300, private))]
pub struct Role {
    pub name: String,
    pub description: Option<String>,
}

/// Whoever returns users tags them (`ctx.cache_tag(USER_TAG, …)`), so a cached response that
/// shows one is dropped when it changes; fields read from other tables opt out (`no_cache`).
//
// Every field that waits on the database or a loader awaits it `.boxed()`: async-graphql
// resolves a field through one generated `match`, so all of a type's fields share one future
// type as large as the largest, and each selected field of each user is boxed (and copied) at
// that size — 2.5 KiB for `id` alone before, forty times for a page of twenty users and two
// fields. Boxed, a database field pays one small allocation of its own; the rest stay small.
#[Object(cache_control(max_age = 300, private))]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn username(&self) -> Option<&str> {
        self.0.username.as_deref()
    }

    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }

    async fn is_verified(&self) -> bool {
        self.0.is_verified
    }

    async fn is_active(&self) -> bool {
        self.0.is_active
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_login_at
    }

    /// Whether signing in needs a second factor. (Read from its own table: never cached.)
    #[graphql(cache_control(no_cache))]
    async fn two_factor_enabled(&self, ctx: &Context<'_>) -> Result<bool> {
        accounts::two_factor_enabled(&ctx.state()?.db, self.0.id)
            .boxed()
            .await
            .gql()
    }

    async fn roles(&self, ctx: &Context<'_>) -> Result<Vec<Role>> {
        // The viewer's own roles came with authentication (keyed by the viewer's id, so never
        // another user's).
        if let Some(viewer) = own(ctx, self.0.id) {
            return Ok(viewer
                .profile
                .roles
                .iter()
                .map(|r| Role {
                    name: r.name.clone(),
                    description: r.description.clone(),
                })
                .collect());
        }
        let roles = match ctx.data_opt::<Loaders>() {
            Some(loaders) => loaders
                .get()
                .roles
                .load_one(self.0.id)
                .boxed()
                .await
                .map_err(|e| AppError::Database((*e).clone()))
                .gql()?
                .unwrap_or_default(),
            None => accounts::roles_of(&ctx.state()?.db, self.0.id)
                .boxed()
                .await
                .gql()?,
        };
        Ok(roles
            .into_iter()
            .map(|r| Role {
                name: r.name,
                description: r.description,
            })
            .collect())
    }

    /// Every permission the user holds through their roles.
    async fn permissions(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        if let Some(viewer) = own(ctx, self.0.id) {
            return Ok(viewer.permissions.iter().cloned().collect());
        }
        let permissions = match ctx.data_opt::<Loaders>() {
            Some(loaders) => loaders
                .get()
                .permissions
                .load_one(self.0.id)
                .boxed()
                .await
                .map_err(|e| AppError::Database((*e).clone()))
                .gql()?
                .unwrap_or_default(),
            None => {
                accounts::load_access(&ctx.state()?.db, self.0.id)
                    .boxed()
                    .await
                    .gql()?
                    .permissions
            }
        };
        Ok(permissions.into_iter().collect())
    }

    /// Banned now (a timed ban that ended no longer counts). Admins only.
    #[graphql(guard = "RequirePermission(ADMIN_READ)")]
    async fn is_banned(&self) -> bool {
        self.0.is_banned_at(Utc::now())
    }

    #[graphql(guard = "RequirePermission(ADMIN_READ)")]
    async fn ban_reason(&self) -> Option<&str> {
        self.0.ban_reason.as_deref()
    }

    /// When a timed ban ends. Admins only.
    #[graphql(guard = "RequirePermission(ADMIN_READ)")]
    async fn banned_until(&self) -> Option<DateTime<Utc>> {
        self.0.banned_until
    }

    /// Active sessions. Admins only. (Changes with every sign-in: never cached.)
    #[graphql(guard = "RequirePermission(ADMIN_READ)", cache_control(no_cache))]
    async fn sessions_count(&self, ctx: &Context<'_>) -> Result<u64> {
        sessions::count_live(&ctx.state()?.db, self.0.id)
            .boxed()
            .await
            .gql()
    }

    /// Providers the account can sign in with (`google`, `github`, `telegram`, …). Admins only.
    /// (Read from its own table: never cached.)
    #[graphql(guard = "RequirePermission(ADMIN_READ)", cache_control(no_cache))]
    async fn linked_providers(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        service::linked_providers(&ctx.state()?.db, self.0.id)
            .boxed()
            .await
            .gql()
    }
}

impl User {
    /// The columns that resolving the `User` fields named in `fields` reads, for a list that
    /// selects only those (`users::Model::from_columns`): `id` always, and every column for a
    /// field this does not know (`__typename` aside). **Keep it in step with the resolvers
    /// above**: a field that reads another column must say so here, or a list answers with that
    /// column's placeholder (`admin::every_field_of_a_listed_user_matches_the_whole_row` checks
    /// every field the schema has).
    pub fn columns_for<'a>(
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Option<Vec<users::Column>> {
        use users::Column as C;
        let mut columns = vec![C::Id];
        for field in fields {
            let needs: &[C] = match field {
                // `id` is always there; these read other tables by it.
                "id" | "__typename" | "twoFactorEnabled" | "roles" | "permissions"
                | "sessionsCount" | "linkedProviders" => &[],
                "email" => &[C::Email],
                "username" => &[C::Username],
                "displayName" => &[C::DisplayName],
                "isVerified" => &[C::IsVerified],
                "isActive" => &[C::IsActive],
                "createdAt" => &[C::CreatedAt],
                "lastLoginAt" => &[C::LastLoginAt],
                "isBanned" => &[C::BannedAt, C::BannedUntil],
                "banReason" => &[C::BanReason],
                "bannedUntil" => &[C::BannedUntil],
                _ => return None,
            };
            for column in needs {
                let held = std::mem::discriminant(column);
                if !columns.iter().any(|c| std::mem::discriminant(c) == held) {
                    columns.push(*column);
                }
            }
        }
        Some(columns)
    }
}

/// The viewer, when `user_id` is the viewer's own account.
fn own<'c>(ctx: &'c Context<'_>, user_id: uuid::Uuid) -> Option<&'c crate::identity::AuthUser> {
    ctx.viewer().user().ok().filter(|user| user.id == user_id)
}

#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// Unchanged when omitted.
    pub display_name: Option<String>,
    /// Unchanged when omitted; 3–32 characters of a-z, 0-9 and _.
    pub username: Option<String>,
}
