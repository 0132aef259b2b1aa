//! The kinds of notification. Stored as text, so a feature adds a kind with a variant here (and
//! its defaults) and no migration.

use async_graphql::Enum;
use serde::{Deserialize, Serialize};

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationKind {
    /// Changes to the account's security: password, second factor, a sign-in from a new
    /// device, a ban, a role change. Always shown in the app.
    Security,
    /// Sent by administrators to everyone, roles or chosen users.
    Announcement,
    Mention,
    Reply,
    /// An integration (Langfuse, …) needs attention.
    IntegrationAlert,
    /// Invitations to organizations and changes in them.
    Organization,
}

/// Whether a kind is shown in the app and sent by email when the user chose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub in_app: bool,
    pub email: bool,
}

impl NotificationKind {
    pub const ALL: [Self; 6] = [
        Self::Security,
        Self::Announcement,
        Self::Mention,
        Self::Reply,
        Self::IntegrationAlert,
        Self::Organization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Security => "SECURITY",
            Self::Announcement => "ANNOUNCEMENT",
            Self::Mention => "MENTION",
            Self::Reply => "REPLY",
            Self::IntegrationAlert => "INTEGRATION_ALERT",
            Self::Organization => "ORGANIZATION",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Every kind starts shown and mailed (each email carries a one-click unsubscribe link for
    /// its kind); give a new kind other defaults here.
    pub fn defaults(self) -> Defaults {
        Defaults {
            in_app: true,
            email: true,
        }
    }

    /// Kinds a user cannot hide in the app (they may still turn their email off).
    pub fn in_app_required(self) -> bool {
        matches!(self, Self::Security)
    }

    /// How an email of this kind is introduced, and what unsubscribing stops.
    pub fn label(self) -> &'static str {
        match self {
            Self::Security => "security notices",
            Self::Announcement => "announcements",
            Self::Mention => "mentions",
            Self::Reply => "replies",
            Self::IntegrationAlert => "integration alerts",
            Self::Organization => "organization notices",
        }
    }
}
