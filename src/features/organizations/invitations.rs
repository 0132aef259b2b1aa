//! Invitations: made by a manager, mailed by a job (which issues the token), accepted once by
//! the invited account, revoked, replaced when the address is invited again.

use chrono::{Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::entity::invitations;
use super::mail::{INVITATION_MAIL, InvitationMail};
use super::service::{acting, membership};
use crate::entities::{organization_members, organizations};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::features::audit;
use crate::identity::{Actor, OrgRole, Tenant, accounts, tokens};
use crate::state::AppState;

/// How long an invitation can be accepted.
pub const INVITATION_TTL: Duration = Duration::days(7);
/// At most this many pending invitations per organization.
pub const MAX_PENDING_INVITATIONS: u64 = 100;

/// Pending invitations, newest first.
///
/// # Errors
/// The database fails.
pub async fn pending_invitations(
    db: &impl ConnectionTrait,
    organization: Uuid,
) -> AppResult<Vec<invitations::Model>> {
    Ok(pending(organization)
        .order_by_desc(invitations::Column::Id)
        .limit(MAX_PENDING_INVITATIONS)
        .all(db)
        .await?)
}

fn pending(organization: Uuid) -> sea_orm::Select<invitations::Entity> {
    invitations::Entity::find()
        .filter(invitations::Column::OrganizationId.eq(organization))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .filter(invitations::Column::ExpiresAt.gt(Utc::now()))
}

/// Invites `email` as `role`. The same answer whether or not the address has an account; an
/// earlier pending invitation of the address is replaced.
///
/// # Errors
/// `BAD_USER_INPUT` (`email`, `role`), `FORBIDDEN` for a role above the inviter's or for API
/// keys, `CONFLICT` for a member's address or too many pending invitations; the database fails.
pub async fn invite(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    email: &str,
    role: OrgRole,
    request_id: Option<&str>,
) -> AppResult<invitations::Model> {
    let (_, own) = acting(tenant)?;
    let email = accounts::normalize_email(email);
    let mut errors = FieldErrors::default();
    accounts::check_email(&email, &mut errors);
    if role == OrgRole::Owner {
        errors.add(
            "role",
            "nobody is invited as owner; make a member owner instead",
        );
    }
    errors.into_result()?;
    if role.rank() > own.rank() {
        return Err(AppError::Forbidden(format!(
            "you cannot invite as {role}: it is above your own role"
        )));
    }
    let txn = crate::infra::db::begin(&state.db).await?;
    // A member's address: the inviter sees the member list anyway, so this tells them nothing.
    // The same two statements run for every address (no timing difference for accounts).
    let account = accounts::find_by_email(&txn, &email).await?;
    let user_id = account.map_or(Uuid::nil(), |user| user.id);
    if membership(&txn, tenant.id(), user_id).await?.is_some() {
        return Err(AppError::Conflict(
            "this address is a member already".into(),
        ));
    }
    let now = Utc::now();
    invitations::Entity::update_many()
        .col_expr(invitations::Column::RevokedAt, Expr::value(now))
        .filter(invitations::Column::OrganizationId.eq(tenant.id()))
        .filter(invitations::Column::Email.eq(&email))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if pending(tenant.id()).count(&txn).await? >= MAX_PENDING_INVITATIONS {
        return Err(AppError::Conflict(format!(
            "at most {MAX_PENDING_INVITATIONS} invitations may be pending; revoke some first"
        )));
    }
    let invitation = invitations::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(tenant.id()),
        email: Set(email.clone()),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(None),
        invited_by: Set(actor.id),
        expires_at: Set(now + INVITATION_TTL),
        accepted_at: Set(None),
        revoked_at: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    state
        .jobs
        .enqueue(
            &txn,
            INVITATION_MAIL,
            &InvitationMail {
                invitation: invitation.id,
            },
            request_id,
        )
        .await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "organization.invite",
        Some(("invitation", invitation.id.to_string())),
        json!({ "email": email, "role": role.as_str() }),
    )
    .await?;
    txn.commit().await?;
    Ok(invitation)
}

/// # Errors
/// `NOT_FOUND` unless a pending invitation of this organization; `FORBIDDEN` for API keys or an
/// invitation to a role above the caller's; the database fails.
pub async fn revoke_invitation(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    id: Uuid,
) -> AppResult<()> {
    let txn = crate::infra::db::begin(&state.db).await?;
    // What is not this organization's is not found, whoever asks.
    let invitation = pending(tenant.id())
        .filter(invitations::Column::Id.eq(id))
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::NotFound("no such pending invitation".into()))?;
    let (_, own) = acting(tenant)?;
    if OrgRole::parse(&invitation.role).is_some_and(|role| role.rank() > own.rank()) {
        return Err(AppError::Forbidden(
            "the invitation is for a role above your own".into(),
        ));
    }
    invitations::Entity::update_many()
        .col_expr(invitations::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(invitations::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    audit::service::record(
        &txn,
        &actor.within(tenant.id()),
        "organization.invitation_revoke",
        Some(("invitation", id.to_string())),
        json!({ "email": invitation.email, "role": invitation.role }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Accepts an invitation for the signed-in user: once, before it expires, and only for the
/// account whose address it was sent to. Every refusal reads the same, so the token tells a
/// wrong account nothing.
///
/// # Errors
/// `BAD_USER_INPUT` (`token`) for an unknown, used, revoked, expired or someone else's
/// invitation; the database fails.
pub async fn accept(
    state: &AppState,
    actor: &Actor,
    user_id: Uuid,
    email: &str,
    token: &str,
) -> AppResult<(organizations::Model, OrgRole)> {
    let invalid = || AppError::invalid("token", "is invalid, used, expired or not for you");
    if !tokens::is_token_shaped(token) {
        return Err(invalid());
    }
    let now = Utc::now();
    let txn = crate::infra::db::begin(&state.db).await?;
    let invitation = invitations::Entity::find()
        .filter(invitations::Column::TokenHash.eq(tokens::hash_refresh_token(token)))
        .one(&txn)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
        .filter(|i| i.email == accounts::normalize_email(email))
        .ok_or_else(invalid)?;
    let role = OrgRole::parse(&invitation.role).ok_or_else(invalid)?;
    let spent = invitations::Entity::update_many()
        .col_expr(invitations::Column::AcceptedAt, Expr::value(now))
        .filter(invitations::Column::Id.eq(invitation.id))
        .filter(invitations::Column::AcceptedAt.is_null())
        .filter(invitations::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if spent.rows_affected != 1 {
        return Err(invalid());
    }
    let organization = organizations::Entity::find_by_id(invitation.organization_id)
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    let role = match membership(&txn, organization.id, user_id).await? {
        // Already a member (joined another way): the invitation is spent, the role kept.
        Some((_, current)) => current,
        None => {
            organization_members::ActiveModel {
                organization_id: Set(organization.id),
                user_id: Set(user_id),
                role: Set(role.as_str().to_owned()),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
            role
        }
    };
    audit::service::record(
        &txn,
        &actor.within(organization.id),
        "organization.join",
        Some(("invitation", invitation.id.to_string())),
        json!({ "role": role.as_str() }),
    )
    .await?;
    txn.commit().await?;
    Ok((organization, role))
}
