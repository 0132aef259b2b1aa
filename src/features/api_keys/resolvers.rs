use async_graphql::{Context, ID, Object, Result};
use uuid::Uuid;

use super::service::{self, DEFAULT_GRACE, NewKey};
use super::types::{ApiKey, CreateApiKeyInput, CreatedApiKey};
use super::{APIKEYS_MANAGE, APIKEYS_READ};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, tenant};
use crate::identity::Stage;

fn key_id(id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| AppError::NotFound("no such API key".into()))
        .gql()
}

#[derive(Default)]
pub struct ApiKeysQuery;

#[Object]
impl ApiKeysQuery {
    /// The organization's API keys, newest first (`apikeys:read`), optionally of one
    /// environment. Never the keys themselves.
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        organization: String,
        environment: Option<Stage>,
    ) -> Result<Vec<ApiKey>> {
        let tenant = tenant(ctx, &organization, APIKEYS_READ).await?;
        let rows = service::list(&ctx.state()?.db, &tenant, environment)
            .await
            .gql()?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }
}

#[derive(Default)]
pub struct ApiKeysMutation;

#[Object]
impl ApiKeysMutation {
    /// Creates a key for one environment (`apikeys:manage`, signed-in members only), scoped to
    /// organization permissions the creator holds. The key is in this answer and never again.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        organization: String,
        input: CreateApiKeyInput,
    ) -> Result<CreatedApiKey> {
        let tenant = tenant(ctx, &organization, APIKEYS_MANAGE).await?;
        let minted = service::create(
            ctx.state()?,
            &ctx.actor(),
            &tenant,
            NewKey {
                name: &input.name,
                environment: input.environment,
                scopes: &input.scopes,
                expires_at: input.expires_at,
            },
        )
        .await
        .gql()?;
        Ok(CreatedApiKey {
            key: minted.key,
            api_key: minted.row.into(),
        })
    }

    /// Revokes a key (`apikeys:manage`): refused from the next request on, everywhere.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        organization: String,
        id: ID,
    ) -> Result<ApiKey> {
        let tenant = tenant(ctx, &organization, APIKEYS_MANAGE).await?;
        let row = service::revoke(ctx.state()?, &ctx.actor(), &tenant, key_id(&id)?)
            .await
            .gql()?;
        Ok(row.into())
    }

    /// Gives a key a new secret (`apikeys:manage`, signed-in members only); the old secret
    /// keeps working for `gracePeriodSeconds` (default 86400 = 24 h, at most 7 days, 0 ends it
    /// at once). The new key is in this answer and never again.
    async fn rotate_api_key(
        &self,
        ctx: &Context<'_>,
        organization: String,
        id: ID,
        grace_period_seconds: Option<i32>,
    ) -> Result<CreatedApiKey> {
        let tenant = tenant(ctx, &organization, APIKEYS_MANAGE).await?;
        let grace =
            grace_period_seconds.map_or(DEFAULT_GRACE, |s| chrono::Duration::seconds(i64::from(s)));
        let minted = service::rotate(ctx.state()?, &ctx.actor(), &tenant, key_id(&id)?, grace)
            .await
            .gql()?;
        Ok(CreatedApiKey {
            key: minted.key,
            api_key: minted.row.into(),
        })
    }
}
