//! The messages identity sends: plain text and HTML, links built from `PUBLIC_URL`.

use url::Url;

use crate::infra::mailer::Email;
use crate::text::escape_html as html_escape;

fn link(base: &Url, path: &str, token: &str) -> String {
    let mut url = base.join(path).unwrap_or_else(|_| base.clone());
    url.query_pairs_mut().append_pair("token", token);
    url.to_string()
}

fn message(
    to: &str,
    subject: &str,
    intro: &str,
    action: &str,
    url: &str,
    token: &str,
    outro: &str,
) -> Email {
    Email {
        to: to.to_owned(),
        subject: subject.to_owned(),
        text: format!(
            "{intro}\n\n{action}:\n{url}\n\nOr enter this code:\ntoken: {token}\n\n{outro}\n"
        ),
        html: format!(
            "<p>{}</p><p><a href=\"{}\">{}</a></p><p>Or enter this code: <code>{}</code></p><p>{}</p>",
            html_escape(intro),
            html_escape(url),
            html_escape(action),
            html_escape(token),
            html_escape(outro),
        ),
        unsubscribe: None,
    }
}

pub fn verify_email(base: &Url, to: &str, token: &str) -> Email {
    message(
        to,
        "Confirm your email address",
        "Welcome! Please confirm that this is your email address.",
        "Confirm your address",
        &link(base, "verify-email", token),
        token,
        "The link works once and expires in 24 hours. If you did not sign up, ignore this message.",
    )
}

pub fn reset_password(base: &Url, to: &str, token: &str) -> Email {
    message(
        to,
        "Reset your password",
        "Someone (hopefully you) asked to reset the password of this account.",
        "Choose a new password",
        &link(base, "reset-password", token),
        token,
        "The link works once and expires in one hour. If you did not ask for it, ignore this message: your password stays as it is.",
    )
}

/// Sent instead of a verification mail when someone registers with an address that has an
/// account, so registration reveals nothing to the person registering.
pub fn already_registered(to: &str) -> Email {
    let text = "Someone tried to create an account with this email address, which already has one. \
                If it was you, sign in or reset your password. Otherwise, ignore this message.";
    Email {
        to: to.to_owned(),
        subject: "You already have an account".to_owned(),
        text: format!("{text}\n"),
        html: format!("<p>{}</p>", html_escape(text)),
        unsubscribe: None,
    }
}
