use async_graphql::{Context, Object, Result, Subscription};
use futures_util::Stream;

use super::service;
use super::types::{ApiInfo, Heartbeat};
use crate::error::GqlResultExt as _;
use crate::graphql::ContextExt as _;

#[derive(Default)]
pub struct MetaQuery;

#[Object]
impl MetaQuery {
    /// Version and environment of the server answering (changes only with a deploy).
    #[graphql(cache_control(max_age = 60))]
    async fn api_info(&self, ctx: &Context<'_>) -> Result<ApiInfo> {
        Ok(service::api_info(ctx.state().gql()?))
    }
}

#[derive(Default)]
pub struct MetaSubscription;

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
