use async_graphql::{Context, Object, Result, Subscription};
use futures_util::Stream;

use super::service;

use super::types::{ApiInfo, Heartbeat, RateLimitStatus};
use crate::error::GqlResultExt as _;
use crate::graphql::ContextExt as _;
use crate::graphql::OperationData;

#[derive(Default)]
pub struct MetaQuery;

#[Object]
impl MetaQuery {
    /// Version and environment of the server answering (changes only with a deploy).
    #[graphql(cache_control(max_age = 60))]
    async fn api_info(&self, ctx: &Context<'_>) -> Result<ApiInfo> {
        Ok(service::api_info(ctx.state()?))
    }

    /// The caller's cost budget after this operation; null when budgets are off for the caller.
    async fn rate_limit(&self, ctx: &Context<'_>) -> Option<RateLimitStatus> {
        rate_limit_status(ctx)
    }
}

#[derive(Default)]
pub struct MetaSubscription;

fn rate_limit_status(ctx: &Context<'_>) -> Option<RateLimitStatus> {
    let cost = ctx.data_opt::<OperationData>()?.phase.cost()?;
    let budget = cost.budget?;
    Some(RateLimitStatus {
        limit: budget.limit,
        cost: u64::try_from(cost.requested).unwrap_or(u64::MAX),
        remaining: budget.remaining,
        reset_at: budget.reset_at,
    })
}

#[Subscription]
impl MetaSubscription {
    /// A beat every `intervalMs` milliseconds (100–60000), the first at once; `count` ends the
    /// stream after that many beats.
    async fn heartbeat(
        &self,
        #[graphql(default = 1000)] interval_ms: i32,
        count: Option<i32>,
    ) -> Result<impl Stream<Item = Heartbeat> + use<>> {
        service::heartbeat(interval_ms, count).gql()
    }
}
