use async_graphql::connection::PageInfo;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::entity::invitations;
use super::service::{self, MemberRow};
use super::{MEMBERS_MANAGE, MEMBERS_READ};
use crate::entities::organizations;
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::ContextExt as _;
use crate::identity::{OrgRole, Stage, Tenant};

/// An organization the viewer belongs to (or the API key calling belongs to).
pub struct Organization(pub Tenant);

#[Object]
impl Organization {
    async fn id(&self) -> ID {
        ID(self.0.id().to_string())
    }

    /// Unique and unchanging: what every organization-scoped field takes as `organization`.
    async fn slug(&self) -> &str {
        &self.0.organization.slug
    }

    async fn name(&self) -> &str {
        &self.0.organization.name
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.organization.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.organization.updated_at
    }

    /// The viewer's role here (`null` for an API key).
    async fn viewer_role(&self) -> Option<OrgRole> {
        self.0.role()
    }

    /// The organization permissions the viewer holds here (an API key: its scopes).
    async fn viewer_permissions(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        let state = ctx.state()?;
        Ok(state
            .catalogue
            .organization()
            .iter()
            .filter(|p| self.0.has(**p))
            .map(|p| p.as_str().to_owned())
            .collect())
    }

    /// Every organization has each environment from its creation.
    async fn environments(&self) -> Vec<Stage> {
        Stage::ALL.to_vec()
    }

    /// Members in the order they signed up (`members:read`). Costs `first` × the selection.
    #[graphql(complexity = "(first.max(1) as usize).saturating_mul(child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<MemberConnection> {
        self.0.require(MEMBERS_READ).gql()?;
        let first = u64::try_from(first)
            .map_err(|_| AppError::invalid("first", "must be from 1 to 100"))
            .gql()?;
        let after = after
            .map(|cursor| parse_cursor("after", &cursor))
            .transpose()
            .gql()?;
        // Boxed: an organization's fields share one future type as large as the largest, and a
        // list boxes one per field and organization (as `User`'s, `features/users/types.rs`).
        let (rows, more, total) = service::members(&ctx.state()?.db, self.0.id(), first, after)
            .boxed()
            .await
            .gql()?;
        let nodes: Vec<Member> = rows.into_iter().map(Member).collect();
        let edges: Vec<MemberEdge> = nodes
            .iter()
            .map(|m| MemberEdge {
                cursor: cursor(m.0.user_id),
                node: Member(m.0.clone()),
            })
            .collect();
        Ok(MemberConnection {
            page_info: PageInfo {
                has_previous_page: after.is_some(),
                has_next_page: more,
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
            nodes,
            total_count: total,
        })
    }

    /// Invitations not yet accepted, revoked or expired, newest first (`members:manage`).
    async fn invitations(&self, ctx: &Context<'_>) -> Result<Vec<Invitation>> {
        self.0.require(MEMBERS_MANAGE).gql()?;
        let rows = super::invitations::pending_invitations(&ctx.state()?.db, self.0.id())
            .boxed()
            .await
            .gql()?;
        Ok(rows.into_iter().map(Invitation::from).collect())
    }
}

fn cursor(user_id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("member:{user_id}"))
}

/// # Errors
/// `BAD_USER_INPUT` naming `field` for anything that is not a member cursor of ours.
fn parse_cursor(field: &str, cursor: &str) -> Result<Uuid, AppError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| Uuid::parse_str(text.strip_prefix("member:")?).ok())
        .ok_or_else(|| AppError::invalid(field, "is not a member cursor"))
}

/// A member of an organization.
pub struct Member(pub MemberRow);

#[Object]
impl Member {
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }

    async fn role(&self) -> OrgRole {
        self.0.role
    }

    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }
}

#[derive(SimpleObject)]
pub struct MemberEdge {
    pub cursor: String,
    pub node: Member,
}

/// A page of members (Relay cursor connection).
#[derive(SimpleObject)]
pub struct MemberConnection {
    pub edges: Vec<MemberEdge>,
    pub nodes: Vec<Member>,
    pub page_info: PageInfo,
    pub total_count: u64,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

/// An invitation to join an organization. Its token only ever travels by mail.
#[derive(SimpleObject)]
pub struct Invitation {
    pub id: ID,
    pub email: String,
    pub role: OrgRole,
    pub status: InvitationStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<invitations::Model> for Invitation {
    fn from(m: invitations::Model) -> Self {
        let status = if m.accepted_at.is_some() {
            InvitationStatus::Accepted
        } else if m.revoked_at.is_some() {
            InvitationStatus::Revoked
        } else if m.expires_at <= Utc::now() {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        };
        Self {
            id: ID(m.id.to_string()),
            email: m.email,
            role: OrgRole::parse(&m.role).unwrap_or(OrgRole::Viewer),
            status,
            expires_at: m.expires_at,
            created_at: m.created_at,
        }
    }
}

#[derive(InputObject)]
pub struct CreateOrganizationInput {
    /// 1–100 characters, one line.
    pub name: String,
    /// 3–40 characters of a-z, 0-9 and single inner hyphens; unique; not changeable later.
    pub slug: String,
}

/// An organization permission: what API key scopes are made of.
#[derive(SimpleObject)]
pub struct OrganizationPermission {
    pub name: String,
    pub description: String,
    /// The organization roles that hold it.
    pub roles: Vec<OrgRole>,
}

/// An organization as administrators see it.
#[derive(SimpleObject)]
pub struct OrganizationSummary {
    pub id: ID,
    pub slug: String,
    pub name: String,
    pub member_count: u64,
    pub created_at: DateTime<Utc>,
}

impl OrganizationSummary {
    pub fn new(o: organizations::Model, member_count: u64) -> Self {
        Self {
            id: ID(o.id.to_string()),
            slug: o.slug,
            name: o.name,
            member_count,
            created_at: o.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct OrganizationPage {
    pub items: Vec<OrganizationSummary>,
    pub total_count: u64,
    pub limit: u64,
    pub offset: u64,
}
