use async_graphql::{Context, Object, Result, Subscription};
use futures_util::{Stream, StreamExt as _};
use secrecy::SecretString;

use super::monitor::{self, StatusChange};
use super::service::{self, Credentials, Input, SdkFormat};
use super::types::{
    ConnectionStatus, LangfuseCheckResult, LangfuseCredentialsInput, LangfuseEnvironmentStatus,
    LangfuseSettings, LangfuseSettingsInput, LangfuseStatusChange,
};
use super::{LANGFUSE_MANAGE, LANGFUSE_READ, LANGFUSE_TEST};
use crate::error::GqlResultExt as _;
use crate::graphql::{ContextExt as _, SocketSession, tenant};
use crate::identity::Stage;

#[derive(Default)]
pub struct LangfuseQuery;

#[Object]
impl LangfuseQuery {
    /// The organization's Langfuse settings, one per configured environment (`langfuse:read`).
    /// Secret keys are masked.
    async fn langfuse_settings(
        &self,
        ctx: &Context<'_>,
        organization: String,
    ) -> Result<Vec<LangfuseSettings>> {
        let tenant = tenant(ctx, &organization, LANGFUSE_READ).await?;
        let rows = service::list(&ctx.state()?.db, &tenant).await.gql()?;
        Ok(rows.into_iter().map(LangfuseSettings::from).collect())
    }

    /// Each configured environment's connection status with its latest checks (at most
    /// `history`, up to 100), newest first (`langfuse:read`).
    async fn langfuse_status(
        &self,
        ctx: &Context<'_>,
        organization: String,
        #[graphql(default = 20)] history: u32,
    ) -> Result<Vec<LangfuseEnvironmentStatus>> {
        let tenant = tenant(ctx, &organization, LANGFUSE_READ).await?;
        let state = ctx.state()?;
        let rows = service::list(&state.db, &tenant).await.gql()?;
        let mut histories = monitor::histories(state, &rows, u64::from(history))
            .await
            .gql()?;
        Ok(rows
            .into_iter()
            .map(|row| LangfuseEnvironmentStatus {
                environment: Stage::parse(&row.environment).unwrap_or(Stage::Development),
                enabled: row.enabled,
                status: ConnectionStatus::parse(&row.status),
                consecutive_failures: row.consecutive_failures,
                last_checked_at: row.last_checked_at,
                status_changed_at: row.status_changed_at,
                history: histories
                    .remove(&row.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            })
            .collect())
    }

    /// A ready-to-paste SDK configuration for one environment (`langfuse:read`): host, public
    /// key, sample rate, release — and a placeholder where the secret key goes.
    async fn langfuse_sdk_config(
        &self,
        ctx: &Context<'_>,
        organization: String,
        environment: Stage,
        format: SdkFormat,
    ) -> Result<String> {
        let tenant = tenant(ctx, &organization, LANGFUSE_READ).await?;
        let row = service::find(&ctx.state()?.db, &tenant, environment)
            .await
            .gql()?;
        Ok(service::sdk_config(&row, format))
    }
}

#[derive(Default)]
pub struct LangfuseMutation;

#[Object]
impl LangfuseMutation {
    /// Creates or replaces one environment's settings (`langfuse:manage`). The secret key is
    /// sealed at rest and never returned; omit it to keep the stored one.
    async fn upsert_langfuse_settings(
        &self,
        ctx: &Context<'_>,
        organization: String,
        input: LangfuseSettingsInput,
    ) -> Result<LangfuseSettings> {
        let tenant = tenant(ctx, &organization, LANGFUSE_MANAGE).await?;
        let row = service::upsert(
            ctx.state()?,
            &ctx.actor(),
            &tenant,
            Input {
                environment: input.environment,
                host: input.host,
                public_key: input.public_key,
                secret_key: input.secret_key.map(SecretString::from),
                enabled: input.enabled,
                sample_rate: input.sample_rate,
                release: input.release,
                tags: input.tags,
            },
        )
        .await
        .gql()?;
        Ok(row.into())
    }

    /// Deletes one environment's settings and their history (`langfuse:manage`).
    async fn delete_langfuse_settings(
        &self,
        ctx: &Context<'_>,
        organization: String,
        environment: Stage,
    ) -> Result<bool> {
        let tenant = tenant(ctx, &organization, LANGFUSE_MANAGE).await?;
        service::delete(ctx.state()?, &ctx.actor(), &tenant, environment)
            .await
            .gql()?;
        Ok(true)
    }

    /// Checks saved settings now (`langfuse:test`): health, then the project with the keys.
    /// Recorded in the history; rate limited per organization (`LANGFUSE_TEST_LIMIT`).
    async fn test_langfuse_connection(
        &self,
        ctx: &Context<'_>,
        organization: String,
        environment: Stage,
    ) -> Result<LangfuseCheckResult> {
        let tenant = tenant(ctx, &organization, LANGFUSE_TEST).await?;
        let checked = service::test_saved(ctx.state()?, &tenant, environment)
            .await
            .gql()?;
        Ok(checked.into())
    }

    /// Checks credentials before saving them (`langfuse:manage`); nothing is stored.
    async fn test_langfuse_credentials(
        &self,
        ctx: &Context<'_>,
        organization: String,
        input: LangfuseCredentialsInput,
    ) -> Result<LangfuseCheckResult> {
        let tenant = tenant(ctx, &organization, LANGFUSE_MANAGE).await?;
        let checked = service::test_unsaved(
            ctx.state()?,
            &tenant,
            Credentials {
                host: input.host,
                public_key: input.public_key,
                secret_key: SecretString::from(input.secret_key),
            },
        )
        .await
        .gql()?;
        Ok(checked.into())
    }
}

#[derive(Default)]
pub struct LangfuseSubscription;

#[Subscription]
impl LangfuseSubscription {
    /// Each time one of the organization's settings turns `DOWN` or back `UP`, on any instance
    /// (`langfuse:read`).
    async fn langfuse_status_changed(
        &self,
        ctx: &Context<'_>,
        organization: String,
    ) -> Result<impl Stream<Item = LangfuseStatusChange> + use<>> {
        let tenant = tenant(ctx, &organization, LANGFUSE_READ).await?;
        let session = SocketSession::of(ctx)?;
        let state = ctx.state()?;
        let events = state
            .stores
            .pubsub
            .subscribe(&monitor::channel(tenant.id()))
            .await
            .map_err(crate::error::AppError::from)
            .gql()?;
        Ok(events
            .filter_map(|payload| async move {
                let change: StatusChange = serde_json::from_slice(&payload).ok()?;
                Some(LangfuseStatusChange {
                    environment: Stage::parse(&change.environment)?,
                    status: ConnectionStatus::parse(&change.status),
                    previous_status: ConnectionStatus::parse(&change.previous_status),
                    message: change.message,
                    changed_at: change.changed_at,
                })
            })
            .take_while(move |_| {
                let session = session.clone();
                async move { session.deliverable().await }
            }))
    }
}
