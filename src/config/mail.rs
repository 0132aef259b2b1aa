//! Outgoing mail (`SMTP_URL`, `MAIL_FROM`, `SMTP_TIMEOUT`).

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://host:port` (STARTTLS when offered), `smtps://…` (TLS); unset writes `.eml` files to
    /// `DATA_DIR/outbox` instead.
    pub smtp_url: Option<SecretString>,
    pub from: String,
    pub smtp_timeout: Duration,
}

impl MailSettings {
    pub fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let smtp_url = r.url("SMTP_URL");
        match &smtp_url {
            None if production => r.fail(
                "SMTP_URL",
                "is required in production (without it mail would only be written to disk)",
            ),
            None => r.record("SMTP_URL", "(unset: mail goes to DATA_DIR/outbox)", false),
            Some(url)
                if !Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "smtp" | "smtps") && u.has_host()) =>
            {
                r.fail(
                    "SMTP_URL",
                    "must be an smtp:// or smtps:// URL such as smtp://127.0.0.1:1025",
                );
            }
            Some(_) => {}
        }
        let from = r.string("MAIL_FROM", "multipult <no-reply@localhost>");
        if from.parse::<lettre::message::Mailbox>().is_err() {
            r.fail(
                "MAIL_FROM",
                "must be an address such as \"App <no-reply@example.com>\" (quote it in a .env file)",
            );
        }
        Self {
            smtp_url: smtp_url.map(SecretString::from),
            from,
            smtp_timeout: r.duration("SMTP_TIMEOUT", Duration::from_secs(10)),
        }
    }
}
