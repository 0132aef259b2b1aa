//! What the integration tests share, by concern. Every test drives the server through its public
//! interface; these helpers only start it and speak its protocols.

mod accounts;
mod app;
mod backends;
mod graphql;
mod logs;
mod mail;
mod oauth;

pub use accounts::*;
pub use app::*;
pub use backends::*;
pub use graphql::*;
pub use logs::*;
pub use mail::*;
pub use oauth::*;
pub use reqwest::header::HeaderMap;

/// The first error's `extensions.code` (empty when there is none).
pub fn code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

/// Sends SIGTERM to a started binary (a graceful stop).
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("the process is running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}
