//! Profiles: what a user may change about themselves.

use chrono::Utc;
use sea_orm::{ActiveModelTrait as _, Set};
use uuid::Uuid;

use crate::entities::users;
use crate::error::{AppError, AppResult, FieldErrors, conflict_on_unique};
use crate::identity::accounts::{self, check_display_name, check_username};
use crate::identity::user_changed;
use crate::state::AppState;

/// # Errors
/// `BAD_USER_INPUT` for invalid fields, `CONFLICT` for a taken username.
#[tracing::instrument(name = "users.update_profile", skip_all, fields(user = %user_id))]
pub async fn update_profile(
    state: &AppState,
    user_id: Uuid,
    display_name: Option<String>,
    username: Option<String>,
) -> AppResult<users::Model> {
    let mut errors = FieldErrors::default();
    let display_name = display_name.and_then(|name| check_display_name(&name, &mut errors));
    if let Some(name) = &username {
        check_username(name, &mut errors);
    }
    errors.into_result()?;
    let user = accounts::find_by_id(&state.db, user_id)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let mut active: users::ActiveModel = user.into();
    if let Some(name) = display_name {
        active.display_name = Set(Some(name));
    }
    if let Some(name) = username {
        active.username = Set(Some(name));
    }
    active.updated_at = Set(Utc::now());
    let user = active
        .update(&state.db)
        .await
        .map_err(conflict_on_unique("this username is taken"))?;
    // The profile is cached with the user's state: the next request sees the change.
    user_changed(state, user_id).await;
    Ok(user)
}

/// # Errors
/// The database fails.
pub async fn linked_providers(
    db: &impl sea_orm::ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<String>> {
    use crate::entities::linked_accounts;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    let links = linked_accounts::Entity::find()
        .filter(linked_accounts::Column::UserId.eq(user_id))
        .all(db)
        .await?;
    let mut providers: Vec<String> = links.into_iter().map(|l| l.provider).collect();
    providers.sort();
    providers.dedup();
    Ok(providers)
}
