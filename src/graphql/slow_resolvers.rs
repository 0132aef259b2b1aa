//! With traces on: a `graphql.resolve` span for each field whose resolver took longer than
//! `TRACE_SLOW_RESOLVER` (default 100 ms), with its path, so a slow trace shows where the time
//! went. Installed only when traces are on (`crate::schema::build_schema`): no cost otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{ServerResult, Value};
use opentelemetry::KeyValue;

pub struct SlowResolvers(pub Duration);

impl ExtensionFactory for SlowResolvers {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SlowResolversExtension(self.0))
    }
}

struct SlowResolversExtension(Duration);

#[async_trait::async_trait]
impl Extension for SlowResolversExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Borrowed, and made into strings only for a slow field: this runs for every field of
        // every operation while traces are on, and nearly all of them are fast.
        let (path, parent, field) = (info.path_node, info.parent_type, info.name);
        let started = Instant::now();
        let result = next.run(ctx, info).await;
        let elapsed = started.elapsed();
        if elapsed >= self.0 {
            crate::telemetry::otel::record_finished(
                "graphql.resolve",
                elapsed,
                vec![
                    KeyValue::new("graphql.field.path", path.to_string()),
                    KeyValue::new("graphql.field.parent_type", parent.to_owned()),
                    KeyValue::new("graphql.field.name", field.to_owned()),
                ],
                result.is_err(),
            );
        }
        result
    }
}
