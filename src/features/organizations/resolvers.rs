use async_graphql::{Context, ID, Object, Result};
use uuid::Uuid;

use super::types::{
    CreateOrganizationInput, Invitation, Member, Organization, OrganizationPage,
    OrganizationPermission, OrganizationSummary,
};
use super::{MEMBERS_MANAGE, ORG_MANAGE, ORG_OWN, ORG_READ};
use super::{invitations, service};
use crate::error::{AppError, GqlResultExt as _};
use crate::graphql::{ContextExt as _, RequirePermission, tenant};
use crate::identity::permissions::ADMIN_READ;
use crate::identity::tenancy::Access;
use crate::identity::{OrgRole, Tenant};

/// A user id argument; one that is not an id names no member (`NOT_FOUND`).
fn member_id(id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| AppError::NotFound("no such member".into()))
        .gql()
}

#[derive(Default)]
pub struct OrganizationsQuery;

#[Object]
impl OrganizationsQuery {
    /// The organizations the viewer is a member of, by name.
    async fn my_organizations(&self, ctx: &Context<'_>) -> Result<Vec<Organization>> {
        let user = ctx.user()?;
        let found = service::mine(&ctx.state()?.db, user.id).await.gql()?;
        Ok(found
            .into_iter()
            .map(|(organization, role)| {
                Organization(Tenant {
                    organization,
                    access: Access::Member {
                        user_id: user.id,
                        role,
                    },
                })
            })
            .collect())
    }

    /// One organization the viewer belongs to (`org:read`); `NOT_FOUND` for any other slug.
    async fn organization(&self, ctx: &Context<'_>, slug: String) -> Result<Organization> {
        Ok(Organization(tenant(ctx, &slug, ORG_READ).await?))
    }

    /// The organization permissions there are, and which roles hold them: what API key scopes
    /// are chosen from.
    async fn organization_permissions(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<OrganizationPermission>> {
        ctx.user()?;
        Ok(ctx
            .state()?
            .catalogue
            .organization()
            .iter()
            .map(|p| OrganizationPermission {
                name: p.as_str().to_owned(),
                description: p.description().to_owned(),
                roles: p.roles().to_vec(),
            })
            .collect())
    }

    /// Every organization, newest first (`admin:read`). Costs `limit` × the selection.
    #[graphql(
        guard = "RequirePermission(ADMIN_READ)",
        complexity = "(limit.max(1) as usize).saturating_mul(child_complexity)"
    )]
    async fn all_organizations(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<OrganizationPage> {
        let (limit, offset) = crate::graphql::limit_offset(limit, offset, 100)?;
        let (rows, total) = service::all(&ctx.state()?.db, limit, offset).await.gql()?;
        Ok(OrganizationPage {
            items: rows
                .into_iter()
                .map(|(o, members)| OrganizationSummary::new(o, members))
                .collect(),
            total_count: total,
            limit,
            offset,
        })
    }
}

#[derive(Default)]
pub struct OrganizationsMutation;

#[Object]
impl OrganizationsMutation {
    /// Creates an organization with the viewer as its owner.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        input: CreateOrganizationInput,
    ) -> Result<Organization> {
        let user = ctx.user()?;
        let organization = service::create(
            ctx.state()?,
            &ctx.actor(),
            user.id,
            &input.name,
            &input.slug,
        )
        .await
        .gql()?;
        Ok(Organization(Tenant {
            organization,
            access: Access::Member {
                user_id: user.id,
                role: OrgRole::Owner,
            },
        }))
    }

    /// Renames the organization (`org:manage`); the slug never changes.
    async fn update_organization(
        &self,
        ctx: &Context<'_>,
        organization: String,
        name: String,
    ) -> Result<Organization> {
        let mut tenant = tenant(ctx, &organization, ORG_MANAGE).await?;
        tenant.organization = service::rename(ctx.state()?, &ctx.actor(), &tenant, &name)
            .await
            .gql()?;
        Ok(Organization(tenant))
    }

    /// Invites an address (`members:manage`) as a role up to the inviter's own (never
    /// `OWNER`). The answer is the same whether or not the address has an account; the link
    /// is mailed, valid for 7 days, once.
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        organization: String,
        email: String,
        role: OrgRole,
    ) -> Result<Invitation> {
        let tenant = tenant(ctx, &organization, MEMBERS_MANAGE).await?;
        let invitation = invitations::invite(
            ctx.state()?,
            &ctx.actor(),
            &tenant,
            &email,
            role,
            ctx.request_id(),
        )
        .await
        .gql()?;
        Ok(invitation.into())
    }

    /// Withdraws a pending invitation (`members:manage`); its link stops working.
    async fn revoke_invitation(
        &self,
        ctx: &Context<'_>,
        organization: String,
        id: ID,
    ) -> Result<bool> {
        let tenant = tenant(ctx, &organization, MEMBERS_MANAGE).await?;
        let id = Uuid::parse_str(&id)
            .map_err(|_| AppError::NotFound("no such pending invitation".into()))
            .gql()?;
        invitations::revoke_invitation(ctx.state()?, &ctx.actor(), &tenant, id)
            .await
            .gql()?;
        Ok(true)
    }

    /// Joins the organization an invitation is for, with the token from its mail. Only the
    /// account with the invited address can; the token works once.
    async fn accept_invitation(&self, ctx: &Context<'_>, token: String) -> Result<Organization> {
        let user = ctx.user()?;
        let (organization, role) = invitations::accept(
            ctx.state()?,
            &ctx.actor(),
            user.id,
            &user.email,
            token.trim(),
        )
        .await
        .gql()?;
        Ok(Organization(Tenant {
            organization,
            access: Access::Member {
                user_id: user.id,
                role,
            },
        }))
    }

    /// Changes a member's role (`members:manage`): up to one's own role, for members below
    /// one; only owners make or change owners; the last owner cannot be demoted.
    async fn update_member_role(
        &self,
        ctx: &Context<'_>,
        organization: String,
        user_id: ID,
        role: OrgRole,
    ) -> Result<Member> {
        let tenant = tenant(ctx, &organization, MEMBERS_MANAGE).await?;
        let row = service::change_role(
            ctx.state()?,
            &ctx.actor(),
            &tenant,
            member_id(&user_id)?,
            role,
        )
        .await
        .gql()?;
        Ok(Member(row))
    }

    /// Removes a member below one's own role (`members:manage`; owners may remove anyone but
    /// the last owner).
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        organization: String,
        user_id: ID,
    ) -> Result<bool> {
        let tenant = tenant(ctx, &organization, MEMBERS_MANAGE).await?;
        service::remove(ctx.state()?, &ctx.actor(), &tenant, member_id(&user_id)?)
            .await
            .gql()?;
        Ok(true)
    }

    /// Leaves the organization. The last owner cannot: transfer ownership or delete it.
    async fn leave_organization(&self, ctx: &Context<'_>, organization: String) -> Result<bool> {
        let tenant = tenant(ctx, &organization, ORG_READ).await?;
        let (me, _) = tenant.member().gql()?;
        service::remove(ctx.state()?, &ctx.actor(), &tenant, me)
            .await
            .gql()?;
        Ok(true)
    }

    /// Hands the organization over (`org:own`): the member becomes an owner, the viewer an
    /// admin.
    async fn transfer_ownership(
        &self,
        ctx: &Context<'_>,
        organization: String,
        user_id: ID,
    ) -> Result<bool> {
        let tenant = tenant(ctx, &organization, ORG_OWN).await?;
        service::transfer(ctx.state()?, &ctx.actor(), &tenant, member_id(&user_id)?)
            .await
            .gql()?;
        Ok(true)
    }

    /// Deletes the organization and everything of it (`org:own`); `confirmSlug` must repeat
    /// its slug. Its API keys stop working at once; the audit log keeps its entries.
    async fn delete_organization(
        &self,
        ctx: &Context<'_>,
        organization: String,
        confirm_slug: String,
    ) -> Result<bool> {
        let tenant = tenant(ctx, &organization, ORG_OWN).await?;
        service::delete(ctx.state()?, &ctx.actor(), &tenant, &confirm_slug)
            .await
            .gql()?;
        Ok(true)
    }
}
