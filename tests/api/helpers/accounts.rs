//! Signing up, in, and as whom: the interactions most tests start with.

use serde_json::{Value, json};

use super::{HeaderMap, TestApp, read};

/// A password that satisfies the default policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// The tokens of a signed-in test user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Session {
    pub fn from_payload(payload: &Value) -> Self {
        Self {
            access: payload["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            refresh: payload["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_owned(),
            user_id: payload["user"]["id"].as_str().expect("user.id").to_owned(),
        }
    }
}

/// A mutation of `n` registrations, each hashing a password (tens of milliseconds, one after
/// another): an operation slow enough to pass a short deadline.
pub fn registrations(prefix: &str, n: usize) -> String {
    let fields: String = (0..n)
        .map(|i| {
            format!(
                "r{i}: register(input: {{ email: \"{prefix}{i}@example.com\", password: \"long enough passphrase\" }}) {{ message }} "
            )
        })
        .collect();
    format!("mutation {{ {fields} }}")
}

pub const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken accessTokenExpiresAt refreshTokenExpiresAt sessionId user { id email } } }";
pub const REFRESH: &str = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken sessionId user { id } } }";

impl TestApp {
    /// POSTs a GraphQL request with an optional bearer token.
    pub async fn graphql_as(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Value {
        let (_, _, body) = self
            .graphql_as(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { message } }",
                json!({ "input": { "email": email, "password": password } }),
            )
            .await;
        body
    }

    pub async fn login_body(&self, email: &str, password: &str) -> Value {
        let (_, _, body) = self
            .graphql_as(
                None,
                LOGIN,
                json!({ "input": { "email": email, "password": password } }),
            )
            .await;
        body
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let body = self.login_body(email, password).await;
        assert!(body.get("errors").is_none(), "login of {email}: {body}");
        Session::from_payload(&body["data"]["login"])
    }

    /// Registers and signs in a new user with [`PASSWORD`].
    pub async fn signed_up(&self, email: &str) -> Session {
        let registered = self.register(email, PASSWORD).await;
        assert!(registered.get("errors").is_none(), "{registered}");
        self.login(email, PASSWORD).await
    }

    /// Gives a user a role directly through the service (what an admin or the CLI would do).
    pub async fn grant_role(&self, user_id: &str, role: &str) {
        let id = uuid::Uuid::parse_str(user_id).unwrap();
        multipult::identity::accounts::assign_role(&self.state.db, id, role)
            .await
            .unwrap();
        multipult::identity::user_changed(&self.state, id).await;
    }
}

impl TestApp {
    /// A signed-in user with extra roles (created directly, verified).
    pub async fn user_with_roles(&self, email: &str, roles: &[&str]) -> Session {
        let mut all = vec!["user"];
        all.extend_from_slice(roles);
        multipult::identity::accounts::create_account(
            &self.state,
            multipult::identity::accounts::NewAccount {
                email: email.to_owned(),
                password: PASSWORD.to_owned(),
                username: None,
                display_name: None,
            },
            &all,
            true,
        )
        .await
        .expect("create account");
        self.login(email, PASSWORD).await
    }

    pub async fn admin(&self) -> Session {
        self.user_with_roles("root@example.com", &["admin"]).await
    }

    /// Audit entries, newest first, straight from the database.
    pub async fn audit_entries(&self) -> Vec<multipult::entities::audit_log::Model> {
        use sea_orm::{EntityTrait as _, QueryOrder as _};
        multipult::entities::audit_log::Entity::find()
            .order_by_desc(multipult::entities::audit_log::Column::CreatedAt)
            .order_by_desc(multipult::entities::audit_log::Column::Id)
            .all(&self.state.db)
            .await
            .unwrap()
    }
}
