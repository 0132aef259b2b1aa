use std::time::Duration;

use chrono::Utc;
use futures_util::Stream;
use futures_util::StreamExt as _;

use super::types::{ApiInfo, Heartbeat};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub const MIN_INTERVAL_MS: i32 = 100;
pub const MAX_INTERVAL_MS: i32 = 60_000;

pub fn api_info(state: &AppState) -> ApiInfo {
    ApiInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        environment: state.settings.environment.into(),
    }
}

/// Beats every `interval_ms`, the first one at once; ends after `count` beats when given.
///
/// # Errors
/// `BAD_USER_INPUT` when the interval or count is out of range.
pub fn heartbeat(
    interval_ms: i32,
    count: Option<i32>,
) -> AppResult<impl Stream<Item = Heartbeat> + use<>> {
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
        return Err(AppError::invalid(
            "intervalMs",
            format!("must be from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"),
        ));
    }
    let count = match count {
        Some(n) if n < 1 => return Err(AppError::invalid("count", "must be at least 1")),
        Some(n) => Some(n),
        None => None,
    };
    let period = Duration::from_millis(u64::from(interval_ms.unsigned_abs()));
    let beats = futures_util::stream::unfold(
        (tokio::time::interval(period), 0i32),
        |(mut interval, sequence)| async move {
            interval.tick().await;
            let sequence = sequence.saturating_add(1);
            Some((
                Heartbeat {
                    sequence,
                    at: Utc::now(),
                },
                (interval, sequence),
            ))
        },
    );
    Ok(beats.take(count.map_or(usize::MAX, |n| n.unsigned_abs() as usize)))
}
