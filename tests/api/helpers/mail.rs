//! The outbox the embedded mailer writes, read back.

use std::time::Duration;

use super::TestApp;

impl TestApp {
    /// Every message in the outbox, oldest first.
    pub fn outbox(&self) -> Vec<String> {
        let dir = self.state.settings.data_dir.join("outbox");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (up to 10 s) for a message to `to` whose subject contains `subject`.
    pub async fn wait_for_mail(&self, to: &str, subject: &str) -> String {
        for _ in 0..200 {
            if let Some(mail) = self
                .outbox()
                .into_iter()
                .find(|m| m.contains(&format!("To: {to}")) && m.contains(subject))
            {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail to {to} about {subject:?}; outbox: {:?}",
            self.outbox()
        );
    }
}

/// The `token: …` code of a mail.
pub fn mail_token(mail: &str) -> String {
    let start = mail.find("token: ").expect("a token in the mail") + "token: ".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
