//! The admin commands of the binary (`multipult admin …`): the same changes as the admin
//! mutations, audited the same way, with the operator at the command line as the actor
//! (`cli (alice@host)`, with the authority of the system).

use std::process::ExitCode;

use serde_json::json;

use crate::error::{AppError, AppResult};
use crate::features::audit;
use crate::identity::accounts::{self, NewAccount};
use crate::identity::permissions::{ADMIN_ROLE, MODERATOR_ROLE, USER_ROLE};
use crate::identity::{Actor, user_changed};
use crate::state::AppState;

/// The operator running this process: `cli (user@host)`.
pub fn operator() -> Actor {
    let user = whoami::username().unwrap_or_else(|_| "unknown".to_owned());
    let host = whoami::hostname().unwrap_or_else(|_| "unknown".to_owned());
    Actor::system(&format!("cli ({user}@{host})"))
}

/// Creates a verified account with the `user` role plus `roles`, audited as `user.create`.
///
/// # Errors
/// `BAD_USER_INPUT`, `CONFLICT`, `NOT_FOUND` for an unknown role; the database fails.
pub async fn create_user(
    state: &AppState,
    actor: &Actor,
    account: NewAccount,
    roles: &[String],
) -> AppResult<crate::entities::users::Model> {
    let mut all_roles: Vec<&str> = vec![USER_ROLE];
    all_roles.extend(roles.iter().map(String::as_str));
    let password_hash = accounts::checked_password_hash(state, &account).await?;
    let txn = crate::infra::db::begin(&state.db).await?;
    let user = accounts::create_account_in(&txn, account, password_hash, &all_roles, true).await?;
    audit::service::record(
        &txn,
        actor,
        "user.create",
        Some(("user", user.id.to_string())),
        json!({ "targetEmail": user.email, "roles": all_roles, "verified": true }),
    )
    .await?;
    txn.commit().await?;
    crate::identity::user_created(state).await;
    Ok(user)
}

/// Gives an existing account a role, audited as `role.assign` (when it changed anything).
/// `Ok(None)` when there is no such account; `Ok(Some(false))` when it had the role already.
///
/// # Errors
/// `NOT_FOUND` for an unknown role; the database fails.
pub async fn assign_role(
    state: &AppState,
    actor: &Actor,
    email: &str,
    role: &str,
) -> AppResult<Option<(crate::entities::users::Model, bool)>> {
    let txn = crate::infra::db::begin(&state.db).await?;
    let Some(user) = accounts::find_by_email(&txn, email).await? else {
        return Ok(None);
    };
    let added = accounts::assign_role(&txn, user.id, role).await?;
    if added {
        audit::service::record(
            &txn,
            actor,
            "role.assign",
            Some(("user", user.id.to_string())),
            json!({ "targetEmail": user.email, "role": role }),
        )
        .await?;
    }
    txn.commit().await?;
    if added {
        user_changed(state, user.id).await;
    }
    Ok(Some((user, added)))
}

/// The password every seeded account gets (development data only).
pub const SEED_PASSWORD: &str = "demo-password-123";

/// Creates the demo accounts (idempotent; refused in production), printing progress, and audits
/// the run as `admin.seed` with what it created.
///
/// # Errors
/// The database fails.
#[allow(clippy::print_stdout, clippy::print_stderr)] // a command's output
pub async fn seed(state: &AppState, actor: &Actor, users: usize) -> anyhow::Result<ExitCode> {
    if state.settings.environment == crate::config::Environment::Production {
        eprintln!("refusing to seed demo accounts in production");
        return Ok(ExitCode::from(2));
    }
    let mut wanted: Vec<(String, String, Vec<String>)> = vec![
        (
            "admin@example.com".into(),
            "Demo Admin".into(),
            vec![ADMIN_ROLE.into()],
        ),
        (
            "moderator@example.com".into(),
            "Demo Moderator".into(),
            vec![MODERATOR_ROLE.into()],
        ),
    ];
    wanted.extend((1..=users).map(|n| {
        (
            format!("user{n:03}@example.com"),
            format!("Demo User {n}"),
            Vec::new(),
        )
    }));
    let total = wanted.len();
    let (mut created, mut existing) = (Vec::new(), 0);
    for (index, (email, name, roles)) in wanted.into_iter().enumerate() {
        let account = NewAccount {
            email: email.clone(),
            password: SEED_PASSWORD.to_owned(),
            username: None,
            display_name: Some(name),
        };
        let mut all_roles: Vec<&str> = vec![USER_ROLE];
        all_roles.extend(roles.iter().map(String::as_str));
        match accounts::create_account(state, account, &all_roles, true).await {
            Ok(user) => created.push(user.email),
            Err(AppError::Conflict(_)) => existing += 1,
            Err(error) => return Err(anyhow::anyhow!("seeding {email}: {error:?}")),
        }
        if (index + 1) % 10 == 0 || index + 1 == total {
            println!("seeded {}/{total} accounts", index + 1);
        }
    }
    if !created.is_empty() {
        audit::service::record(
            &state.db,
            actor,
            "admin.seed",
            None,
            json!({ "created": created.len(), "existing": existing, "emails": created.iter().take(50).collect::<Vec<_>>() }),
        )
        .await?;
    }
    println!(
        "done: {} created, {existing} already there; password for all: {SEED_PASSWORD}",
        created.len()
    );
    Ok(ExitCode::SUCCESS)
}
