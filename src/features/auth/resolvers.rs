use async_graphql::{Context, ID, Object, Result};

use super::types::{
    AuthPayload, LoginInput, RegisterInput, RegisterPayload, Session, TwoFactorConfirmation,
    TwoFactorSetup,
};
use super::{login, password, registration, social, two_factor};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::ContextExt as _;
use crate::identity::accounts::NewAccount;
use crate::identity::sessions;

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The caller's active sessions, newest first.
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let user = ctx.user()?;
        let sessions = sessions::list(ctx.state()?, user).await.gql()?;
        Ok(sessions.into_iter().map(Session::from).collect())
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account. The answer is the same whether or not the email was registered before.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<RegisterPayload> {
        let account = NewAccount {
            email: input.email,
            password: input.password,
            username: input.username,
            display_name: input.display_name,
        };
        registration::register(ctx.state()?, account, ctx.request_id())
            .await
            .gql()?;
        Ok(RegisterPayload {
            message: "If this email can be registered, the account is ready to sign in.".into(),
        })
    }

    /// Signs in. A wrong password and an unknown email give the same error.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<AuthPayload> {
        let tokens = login::login(
            ctx.state()?,
            &input.email,
            &input.password,
            input.two_factor_code.as_deref(),
            &ctx.client(),
            &ctx.actor(),
        )
        .await
        .gql()?;
        Ok(tokens.into())
    }

    /// Signs in with the Telegram Login Widget's payload (passed as it is, `hash` included).
    async fn login_with_telegram(
        &self,
        ctx: &Context<'_>,
        data: async_graphql::Json<std::collections::BTreeMap<String, serde_json::Value>>,
    ) -> Result<AuthPayload> {
        let state = ctx.state()?;
        let identity = social::verify_telegram(state, &data.0).gql()?;
        let tokens = social::sign_in(state, identity, &ctx.client())
            .await
            .gql()?;
        Ok(tokens.into())
    }

    /// Exchanges a refresh token (usable once) for a new pair. Presenting a used one ends the
    /// whole session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> Result<AuthPayload> {
        let tokens = sessions::refresh(ctx.state()?, &refresh_token, &ctx.client())
            .await
            .gql()?;
        Ok(tokens.into())
    }

    /// Ends the caller's current session.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let user = ctx.user()?;
        sessions::end(ctx.state()?, user.id, user.session_id)
            .await
            .gql()?;
        Ok(true)
    }

    /// Ends every session of the caller, on every device.
    async fn logout_all_sessions(&self, ctx: &Context<'_>) -> Result<bool> {
        let user = ctx.user()?;
        login::logout_everywhere(ctx.state()?, user.id, &ctx.actor())
            .await
            .gql()?;
        Ok(true)
    }

    /// Ends one of the caller's sessions (see `sessions`).
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let user = ctx.user()?;
        let id = uuid::Uuid::parse_str(&id)
            .map_err(|_| AppError::invalid("id", "is not a session id"))
            .gql()?;
        sessions::end_own(ctx.state()?, user, id).await.gql()?;
        Ok(true)
    }

    /// Sends the caller a new verification mail (no-op when already verified).
    async fn request_email_verification(&self, ctx: &Context<'_>) -> Result<bool> {
        let user = ctx.user()?;
        registration::request_email_verification(ctx.state()?, user, ctx.request_id())
            .await
            .gql()?;
        Ok(true)
    }

    /// Confirms an email address with the token from the verification mail.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> Result<bool> {
        registration::verify_email(ctx.state()?, &token)
            .await
            .gql()?;
        Ok(true)
    }

    /// Mails a reset link when the address has an account; answers `true` either way.
    async fn request_password_reset(&self, ctx: &Context<'_>, email: String) -> Result<bool> {
        password::request_reset(ctx.state()?, &email, ctx.request_id())
            .await
            .gql()?;
        Ok(true)
    }

    /// Sets a new password with the token from the reset mail; every session ends.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> Result<bool> {
        password::reset(ctx.state()?, &token, &new_password, &ctx.actor())
            .await
            .gql()?;
        Ok(true)
    }

    /// Starts turning on two-factor authentication.
    async fn enable_two_factor(&self, ctx: &Context<'_>) -> Result<TwoFactorSetup> {
        let user = ctx.user()?;
        let setup = two_factor::enable(ctx.state()?, user).await.gql()?;
        Ok(TwoFactorSetup {
            secret: setup.secret,
            otpauth_uri: setup.otpauth_uri,
        })
    }

    /// Turns two-factor on with a first code from the authenticator.
    async fn confirm_two_factor(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> Result<TwoFactorConfirmation> {
        let user = ctx.user()?;
        let backup_codes = two_factor::confirm(ctx.state()?, user, &code, &ctx.actor())
            .await
            .gql()?;
        Ok(TwoFactorConfirmation { backup_codes })
    }

    /// Turns two-factor off (needs the password and a current or backup code).
    async fn disable_two_factor(
        &self,
        ctx: &Context<'_>,
        password: String,
        code: String,
    ) -> Result<bool> {
        let user = ctx.user()?;
        two_factor::disable(ctx.state()?, user, &password, &code, &ctx.actor())
            .await
            .gql()?;
        Ok(true)
    }

    /// Changes the password; every other session ends. Continue with the returned tokens.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<AuthPayload> {
        let user = ctx.user()?;
        let tokens = password::change(
            ctx.state()?,
            user,
            &current_password,
            &new_password,
            &ctx.client(),
            &ctx.actor(),
        )
        .await
        .gql()?;
        Ok(tokens.into())
    }
}
