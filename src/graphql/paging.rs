//! Page arguments as services take them.

use async_graphql::ErrorExtensions as _;

use crate::error::AppError;

/// `limit` and `offset` arguments: `BAD_USER_INPUT` naming the argument for a limit outside
/// 1–`max` or a negative offset (never silently clamped).
///
/// # Errors
/// As above.
pub fn limit_offset(limit: i32, offset: i32, max: u64) -> async_graphql::Result<(u64, u64)> {
    let limit = u64::try_from(limit)
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| AppError::invalid("limit", format!("must be from 1 to {max}")).extend())?;
    let offset = u64::try_from(offset)
        .map_err(|_| AppError::invalid("offset", "must not be negative").extend())?;
    Ok((limit, offset))
}
