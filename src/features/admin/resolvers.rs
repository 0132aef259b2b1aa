use async_graphql::{Context, ID, Object, Result};
use chrono::{DateTime, Utc};
use sea_orm::Order;
use uuid::Uuid;

use super::service::{self, OrderField};
use super::types::{
    BulkRoleResult, Job, JobPage, JobState, JobStats, RoleCount, RoleDetails, SortDirection,
    SystemStats, UserFilter, UserOrder, UserOrderField, UserPage, UserStats,
};
use crate::error::{AppError, AppResult, GqlResultExt as _};
use crate::features::users::types::User;
use crate::graphql::{ContextExt as _, RequirePermission};
use crate::identity::permissions::{ADMIN_DELETE, ADMIN_READ, ADMIN_UPDATE, ROLES_MANAGE};

fn parse_id(field: &str, id: &ID) -> AppResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| AppError::invalid(field, "is not a valid id"))
}

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Background jobs in one state (default: the dead letters), newest first (`admin:read`).
    /// Costs `limit` × the selection.
    #[graphql(
        guard = "RequirePermission(ADMIN_READ)",
        complexity = "(limit.max(1) as usize).saturating_mul(child_complexity)"
    )]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "JobState::Dead")] state: JobState,
        #[graphql(default = 20)] limit: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<JobPage> {
        let (limit, offset) = crate::graphql::limit_offset(limit, offset, 100)?;
        let (rows, total) = ctx
            .state()?
            .jobs
            .list(state.as_str(), limit, offset)
            .await
            .map_err(AppError::from)
            .gql()?;
        Ok(JobPage {
            items: rows.into_iter().map(Job::from).collect(),
            total_count: total,
            limit,
            offset,
        })
    }

    /// Users matching a filter, one page at a time (`limit` 1–100). Costs `limit` × the
    /// selection per user.
    #[graphql(
        guard = "RequirePermission(ADMIN_READ)",
        complexity = "(limit.max(1) as usize).saturating_mul(child_complexity)",
        cache_control(max_age = 60, private)
    )]
    async fn all_users(
        &self,
        ctx: &Context<'_>,
        filter: Option<UserFilter>,
        order_by: Option<UserOrder>,
        #[graphql(default = 20)] limit: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<UserPage> {
        let f = filter.unwrap_or_default();
        let filter = service::UserFilter {
            is_active: f.is_active,
            is_verified: f.is_verified,
            is_banned: f.is_banned,
            role_name: f.role_name,
            search: f.search,
            created_after: f.created_after,
            created_before: f.created_before,
        };
        let order = order_by.map_or((OrderField::CreatedAt, Order::Desc), |o| {
            let field = match o.field {
                UserOrderField::CreatedAt => OrderField::CreatedAt,
                UserOrderField::Email => OrderField::Email,
                UserOrderField::LastLoginAt => OrderField::LastLoginAt,
            };
            let direction = match o.direction {
                SortDirection::Asc => Order::Asc,
                SortDirection::Desc => Order::Desc,
            };
            (field, direction)
        });
        // A list of users: stale when any user changes or a new one appears.
        ctx.cache_tag(crate::identity::USER_TAG, None);
        let with_total = ctx.look_ahead().field("totalCount").exists();
        // The columns the items' fields read (every column for a field `columns_for` does not
        // know), not whole rows.
        let mut shown = Vec::new();
        for items in ctx.field().selection_set() {
            if items.name() == "items" {
                shown.extend(items.selection_set().map(|field| field.name()));
            }
        }
        let columns = User::columns_for(shown);
        let (items, total) = service::list_users(
            &ctx.state()?.db,
            &filter,
            order,
            (i64::from(limit), i64::from(offset)),
            with_total,
            columns.as_deref(),
        )
        .await
        .gql()?;
        Ok(UserPage {
            items: items.into_iter().map(User).collect(),
            // Not selected when not counted.
            total_count: total.unwrap_or_default(),
            limit,
            offset,
        })
    }

    /// Counts for a dashboard.
    #[graphql(guard = "RequirePermission(ADMIN_READ)")]
    async fn system_stats(&self, ctx: &Context<'_>) -> Result<SystemStats> {
        let state = ctx.state()?;
        let stats = service::stats(state).await.gql()?;
        Ok(SystemStats {
            users: UserStats {
                total: stats.total,
                active: stats.active,
                verified: stats.verified,
                banned: stats.banned,
                new_last_30_days: stats.new_last_30_days,
            },
            role_distribution: stats
                .roles
                .into_iter()
                .map(|(role, users)| RoleCount { role, users })
                .collect(),
            audit_entries_last_24_hours: stats.audit_last_24h,
            organizations: stats.organizations,
            active_api_keys: stats.active_api_keys,
            jobs: JobStats {
                pending: stats.jobs.pending,
                running: stats.jobs.running,
                dead: stats.jobs.dead,
            },
            database_backend: crate::infra::db::backend_name(&state.db).to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: state.started_at.elapsed().as_secs(),
        })
    }

    /// Every role with its permissions and holders.
    #[graphql(guard = "RequirePermission(ROLES_MANAGE)")]
    async fn roles(&self, ctx: &Context<'_>) -> Result<Vec<RoleDetails>> {
        let roles = service::list_roles(&ctx.state()?.db).await.gql()?;
        Ok(roles.into_iter().map(role_details).collect())
    }
}

fn role_details(r: service::RoleDetails) -> RoleDetails {
    RoleDetails {
        id: ID(r.role.id.to_string()),
        name: r.role.name,
        description: r.role.description,
        is_system: r.role.is_system,
        permissions: r.permissions,
        user_count: r.users,
    }
}

async fn details_of(state: &crate::state::AppState, role_id: Uuid) -> Result<RoleDetails> {
    let details = service::list_roles(&state.db).await.gql()?;
    details
        .into_iter()
        .find(|r| r.role.id == role_id)
        .map(role_details)
        .ok_or_else(|| AppError::NotFound("role".into()))
        .gql()
}

fn bulk(result: service::BulkResult) -> BulkRoleResult {
    BulkRoleResult {
        updated: i32::try_from(result.updated.len()).unwrap_or(i32::MAX),
        unchanged: i32::try_from(result.unchanged.len()).unwrap_or(i32::MAX),
        not_found: result
            .not_found
            .into_iter()
            .map(|id| ID(id.to_string()))
            .collect(),
    }
}

fn parse_ids(ids: &[ID]) -> AppResult<Vec<Uuid>> {
    ids.iter().map(|id| parse_id("userIds", id)).collect()
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Puts a dead job back in the queue with fresh attempts (`admin:update`), audited.
    #[graphql(guard = "RequirePermission(ADMIN_UPDATE)")]
    async fn retry_job(&self, ctx: &Context<'_>, id: ID) -> Result<Job> {
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::NotFound("no dead job with this id".into()))
            .gql()?;
        let job = service::retry_job(ctx.state()?, &ctx.actor(), id)
            .await
            .gql()?;
        Ok(job.into())
    }

    /// Bans a user now; every session ends at once. With `until`, the ban ends by itself.
    #[graphql(guard = "RequirePermission(ADMIN_UPDATE)")]
    async fn ban_user(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        reason: String,
        until: Option<DateTime<Utc>>,
    ) -> Result<User> {
        let id = parse_id("userId", &user_id).gql()?;
        let user = service::ban(ctx.state()?, &ctx.actor(), id, &reason, until)
            .await
            .gql()?;
        Ok(User(user))
    }

    #[graphql(guard = "RequirePermission(ADMIN_UPDATE)")]
    async fn unban_user(&self, ctx: &Context<'_>, user_id: ID) -> Result<User> {
        let id = parse_id("userId", &user_id).gql()?;
        let user = service::unban(ctx.state()?, &ctx.actor(), id).await.gql()?;
        Ok(User(user))
    }

    /// Deletes a user and everything they own, irreversibly. `confirmEmail` must be their email.
    #[graphql(guard = "RequirePermission(ADMIN_DELETE)")]
    async fn delete_user_permanently(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        confirm_email: String,
    ) -> Result<bool> {
        let id = parse_id("userId", &user_id).gql()?;
        service::delete_permanently(ctx.state()?, &ctx.actor(), id, &confirm_email)
            .await
            .gql()?;
        Ok(true)
    }

    /// Gives a role to up to 500 users at once, all or nothing.
    #[graphql(guard = "RequirePermission(ADMIN_UPDATE)")]
    async fn bulk_assign_role(
        &self,
        ctx: &Context<'_>,
        user_ids: Vec<ID>,
        role: String,
    ) -> Result<BulkRoleResult> {
        let ids = parse_ids(&user_ids).gql()?;
        let result = service::bulk_assign_role(ctx.state()?, &ctx.actor(), &ids, &role)
            .await
            .gql()?;
        Ok(bulk(result))
    }

    /// Takes a role from up to 500 users at once, all or nothing.
    #[graphql(guard = "RequirePermission(ADMIN_UPDATE)")]
    async fn bulk_remove_role(
        &self,
        ctx: &Context<'_>,
        user_ids: Vec<ID>,
        role: String,
    ) -> Result<BulkRoleResult> {
        let ids = parse_ids(&user_ids).gql()?;
        let result = service::bulk_remove_role(ctx.state()?, &ctx.actor(), &ids, &role)
            .await
            .gql()?;
        Ok(bulk(result))
    }

    #[graphql(guard = "RequirePermission(ROLES_MANAGE)")]
    async fn create_role(
        &self,
        ctx: &Context<'_>,
        name: String,
        description: Option<String>,
        permissions: Vec<String>,
    ) -> Result<RoleDetails> {
        let state = ctx.state()?;
        let role = service::create_role(state, &ctx.actor(), &name, description, &permissions)
            .await
            .gql()?;
        details_of(state, role.id).await
    }

    /// Replaces a role's permissions.
    #[graphql(guard = "RequirePermission(ROLES_MANAGE)")]
    async fn update_role_permissions(
        &self,
        ctx: &Context<'_>,
        name: String,
        permissions: Vec<String>,
    ) -> Result<RoleDetails> {
        let state = ctx.state()?;
        let role = service::update_role_permissions(state, &ctx.actor(), &name, &permissions)
            .await
            .gql()?;
        details_of(state, role.id).await
    }

    /// Deletes a role (built-in roles cannot be deleted); its holders lose it.
    #[graphql(guard = "RequirePermission(ROLES_MANAGE)")]
    async fn delete_role(&self, ctx: &Context<'_>, name: String) -> Result<bool> {
        service::delete_role(ctx.state()?, &ctx.actor(), &name)
            .await
            .gql()?;
        Ok(true)
    }
}
