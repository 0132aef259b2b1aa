//! A mock social sign-in provider (token and user-info endpoints) and an app configured with it
//! as the `generic` provider.

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::TestApp;

/// Where the provider's sign-ins hand their tokens (the only allowed `redirect_uri`).
pub const OAUTH_FRONTEND: &str = "http://frontend.test/auth/done";

/// A provider that issues `provider-access-token` for any code and answers `userinfo` to it.
pub async fn oauth_provider(userinfo: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "provider-access-token", "token_type": "Bearer", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/userinfo"))
        .and(header("authorization", "Bearer provider-access-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(userinfo))
        .mount(&server)
        .await;
    server
}

/// An app with `server` as its `generic` provider, redirecting to [`OAUTH_FRONTEND`].
pub async fn app_with_oauth(server: &MockServer) -> TestApp {
    let base = server.uri();
    TestApp::spawn_with(|s| {
        let mut social = multipult::features::auth::settings::SocialSettings::default();
        social.oauth.insert(
            "generic".into(),
            multipult::features::auth::settings::OAuthProvider {
                client_id: "client-123".into(),
                client_secret: "client-secret".to_owned().into(),
                auth_url: format!("{base}/authorize").parse().unwrap(),
                token_url: format!("{base}/token").parse().unwrap(),
                userinfo_url: format!("{base}/userinfo").parse().unwrap(),
                scopes: vec!["openid".into(), "email".into()],
            },
        );
        social.redirect_allowlist = vec![OAUTH_FRONTEND.parse().unwrap()];
        s.set_section(social);
    })
    .await
}
