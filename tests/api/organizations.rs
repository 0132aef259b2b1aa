//! Organizations: creation, members and invitations, the rules on owners, deletion, and the
//! tenant guard on every organization-scoped field.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{GqlResponse, Session, TestApp, mail_token};

pub const CREATE: &str = "mutation($input: CreateOrganizationInput!) { createOrganization(input: $input) { id slug name viewerRole environments } }";
const INVITE: &str = "mutation($o: String!, $e: String!, $r: OrganizationRole!) { inviteMember(organization: $o, email: $e, role: $r) { id email role status expiresAt createdAt } }";
const ACCEPT: &str = "mutation($t: String!) { acceptInvitation(token: $t) { slug viewerRole } }";
const MEMBERS: &str = "query($s: String!) { organization(slug: $s) { members(first: 50) { totalCount nodes { userId email role } } } }";

/// Creates an organization owned by `owner`.
pub async fn create_org(app: &TestApp, owner: &Session, slug: &str) -> Value {
    let response = app
        .gql(
            Some(&owner.access),
            CREATE,
            json!({ "input": { "name": format!("Team {slug}"), "slug": slug } }),
        )
        .await;
    assert!(response.body.get("errors").is_none(), "{}", response.body);
    response.data()["createOrganization"].clone()
}

async fn invite(app: &TestApp, by: &Session, org: &str, email: &str, role: &str) -> GqlResponse {
    app.gql(
        Some(&by.access),
        INVITE,
        json!({ "o": org, "e": email, "r": role }),
    )
    .await
}

/// `email` signs up, is invited to `org` as `role` by `owner`, and accepts.
pub async fn member(app: &TestApp, owner: &Session, org: &str, email: &str, role: &str) -> Session {
    let session = app.signed_up(email).await;
    let invited = invite(app, owner, org, email, role).await;
    assert!(invited.body.get("errors").is_none(), "{}", invited.body);
    let token = mail_token(&app.wait_for_mail(email, "Join Team").await);
    let accepted = app
        .gql(Some(&session.access), ACCEPT, json!({ "t": token }))
        .await;
    assert_eq!(
        accepted.data()["acceptInvitation"]["viewerRole"],
        role,
        "{}",
        accepted.body
    );
    session
}

async fn roles(app: &TestApp, session: &Session, org: &str) -> Vec<(String, String)> {
    let response = app
        .gql(Some(&session.access), MEMBERS, json!({ "s": org }))
        .await;
    let mut found: Vec<(String, String)> = response.data()["organization"]["members"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", response.body))
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn an_organization_is_created_with_its_owner_and_every_environment() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    let created = create_org(&app, &owner, "acme").await;
    assert_eq!(created["viewerRole"], "OWNER");
    assert_eq!(
        created["environments"],
        json!(["DEVELOPMENT", "STAGING", "PRODUCTION"])
    );

    let mine = app
        .gql(
            Some(&owner.access),
            "{ myOrganizations { slug viewerRole viewerPermissions } }",
            json!({}),
        )
        .await;
    assert_eq!(mine.data()["myOrganizations"][0]["slug"], "acme");
    let held = mine.data()["myOrganizations"][0]["viewerPermissions"].clone();
    for permission in ["org:own", "members:manage", "apikeys:manage"] {
        assert!(
            held.as_array().unwrap().contains(&json!(permission)),
            "{held}"
        );
    }

    // Slugs: shape, reserved words, uniqueness (case folded).
    for (slug, expected) in [
        ("ab", "BAD_USER_INPUT"),
        ("Has Space", "BAD_USER_INPUT"),
        ("-dash", "BAD_USER_INPUT"),
        ("double--dash", "BAD_USER_INPUT"),
        ("admin", "BAD_USER_INPUT"),
        ("graphql", "BAD_USER_INPUT"),
        ("ACME", "CONFLICT"),
    ] {
        let response = app
            .gql(
                Some(&owner.access),
                CREATE,
                json!({ "input": { "name": "x", "slug": slug } }),
            )
            .await;
        assert_eq!(response.code(), expected, "{slug}: {}", response.body);
    }
    let nameless = app
        .gql(
            Some(&owner.access),
            CREATE,
            json!({ "input": { "name": "  ", "slug": "fine-slug" } }),
        )
        .await;
    assert_eq!(nameless.code(), "BAD_USER_INPUT");
    assert!(
        !nameless.field_error("name").is_empty(),
        "{}",
        nameless.body
    );

    // Anonymous callers are asked to sign in.
    let anonymous = app
        .gql(None, "{ organization(slug: \"acme\") { name } }", json!({}))
        .await;
    assert_eq!(anonymous.code(), "UNAUTHENTICATED");

    let entry = app
        .audit_entries()
        .await
        .into_iter()
        .find(|e| e.action == "organization.create")
        .expect("audited");
    assert_eq!(
        entry.organization_id.map(|id| id.to_string()).as_deref(),
        created["id"].as_str()
    );
}

#[tokio::test]
async fn invitations_work_once_for_the_invited_account_and_say_nothing_about_accounts() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let known = app.signed_up("known@example.com").await;
    let other = app.signed_up("other@example.com").await;

    // A known and an unknown address get the same answer, and both a mail.
    let to_known = invite(&app, &owner, "acme", "Known@Example.com", "MEMBER").await;
    let to_unknown = invite(&app, &owner, "acme", "nobody@example.com", "MEMBER").await;
    let shape = |response: &GqlResponse| {
        let mut invitation = response.data()["inviteMember"].clone();
        for volatile in ["id", "email", "expiresAt", "createdAt"] {
            invitation[volatile] = Value::Null;
        }
        (
            response.status,
            invitation,
            response.body.get("errors").cloned(),
        )
    };
    assert_eq!(shape(&to_known), shape(&to_unknown));
    assert_eq!(
        to_known.data()["inviteMember"]["email"],
        "known@example.com"
    );
    assert_eq!(to_known.data()["inviteMember"]["status"], "PENDING");
    app.wait_for_mail("nobody@example.com", "Join Team acme")
        .await;
    let token = mail_token(
        &app.wait_for_mail("known@example.com", "Join Team acme")
            .await,
    );
    // The invitee with an account hears of it in the app too (without the token).
    let notified = app
        .gql(
            Some(&known.access),
            "{ notifications { nodes { kind title body } } }",
            json!({}),
        )
        .await;
    let nodes = notified.data()["notifications"]["nodes"].clone();
    assert_eq!(nodes[0]["kind"], "ORGANIZATION", "{}", notified.body);
    assert_eq!(nodes[0]["title"], "Invitation to join Team acme");
    assert!(!nodes.to_string().contains(&token));

    // Another account, a tampered token, and garbage are refused alike.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (session, attempt) in [
        (&other, token.as_str()),
        (&known, tampered.as_str()),
        (&known, "not a token!"),
    ] {
        let refused = app
            .gql(Some(&session.access), ACCEPT, json!({ "t": attempt }))
            .await;
        assert_eq!(refused.code(), "BAD_USER_INPUT", "{}", refused.body);
        assert!(!refused.field_error("token").is_empty());
    }

    let accepted = app
        .gql(Some(&known.access), ACCEPT, json!({ "t": token }))
        .await;
    assert_eq!(accepted.data()["acceptInvitation"]["viewerRole"], "MEMBER");
    let replayed = app
        .gql(Some(&known.access), ACCEPT, json!({ "t": token }))
        .await;
    assert_eq!(replayed.code(), "BAD_USER_INPUT");
    assert_eq!(
        roles(&app, &owner, "acme").await,
        vec![
            ("known@example.com".into(), "MEMBER".into()),
            ("owner@example.com".into(), "OWNER".into()),
        ]
    );

    // An expired invitation is refused.
    let late = app.signed_up("late@example.com").await;
    invite(&app, &owner, "acme", "late@example.com", "VIEWER").await;
    let late_token = mail_token(&app.wait_for_mail("late@example.com", "Join Team").await);
    {
        use multipult::features::organizations::entity::invitations;
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
        invitations::Entity::update_many()
            .col_expr(
                invitations::Column::ExpiresAt,
                Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
            )
            .filter(invitations::Column::Email.eq("late@example.com"))
            .exec(&app.state.db)
            .await
            .unwrap();
    }
    let expired = app
        .gql(Some(&late.access), ACCEPT, json!({ "t": late_token }))
        .await;
    assert_eq!(expired.code(), "BAD_USER_INPUT", "{}", expired.body);

    // A revoked one too; and inviting again replaces the pending invitation.
    let revoked_user = app.signed_up("revoked@example.com").await;
    let first = invite(&app, &owner, "acme", "revoked@example.com", "VIEWER").await;
    let first_token = mail_token(&app.wait_for_mail("revoked@example.com", "Join Team").await);
    let revoked = app
        .gql(
            Some(&owner.access),
            "mutation($id: ID!) { revokeInvitation(organization: \"acme\", id: $id) }",
            json!({ "id": first.data()["inviteMember"]["id"] }),
        )
        .await;
    assert_eq!(revoked.data()["revokeInvitation"], true, "{}", revoked.body);
    let refused = app
        .gql(
            Some(&revoked_user.access),
            ACCEPT,
            json!({ "t": first_token }),
        )
        .await;
    assert_eq!(refused.code(), "BAD_USER_INPUT");

    // A member's address is refused as such; an owner cannot be invited.
    let again = invite(&app, &owner, "acme", "known@example.com", "ADMIN").await;
    assert_eq!(again.code(), "CONFLICT");
    let as_owner = invite(&app, &owner, "acme", "new@example.com", "OWNER").await;
    assert_eq!(as_owner.code(), "BAD_USER_INPUT");
    let bad_email = invite(&app, &owner, "acme", "not-an-email", "MEMBER").await;
    assert_eq!(
        bad_email.field_error("email"),
        "is not a valid email address"
    );

    // Pending invitations are listed for managers, without tokens.
    let pending = app
        .gql(
            Some(&owner.access),
            "{ organization(slug: \"acme\") { invitations { email status } } }",
            json!({}),
        )
        .await;
    let text = pending.body.to_string();
    assert!(text.contains("nobody@example.com"), "{text}");
    assert!(!text.contains(&token) && !text.contains("revoked@example.com"));
}

async fn set_role(app: &TestApp, by: &Session, user: &Session, role: &str) -> GqlResponse {
    app.gql(
        Some(&by.access),
        "mutation($u: ID!, $r: OrganizationRole!) { updateMemberRole(organization: \"acme\", userId: $u, role: $r) { role } }",
        json!({ "u": user.user_id, "r": role }),
    )
    .await
}

#[tokio::test]
async fn roles_bound_what_members_may_do_and_the_last_owner_stays() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    let admin = member(&app, &owner, "acme", "admin@example.com", "ADMIN").await;
    let admin2 = member(&app, &owner, "acme", "admin2@example.com", "ADMIN").await;
    let plain = member(&app, &owner, "acme", "member@example.com", "MEMBER").await;
    let viewer = member(&app, &owner, "acme", "viewer@example.com", "VIEWER").await;

    // Viewers and members do not manage members; admins do, up to their own role.
    let by_viewer = invite(&app, &viewer, "acme", "x@example.com", "VIEWER").await;
    assert_eq!(by_viewer.code(), "FORBIDDEN");
    let by_member = invite(&app, &plain, "acme", "x@example.com", "VIEWER").await;
    assert_eq!(by_member.code(), "FORBIDDEN");
    let by_admin = invite(&app, &admin, "acme", "x@example.com", "ADMIN").await;
    assert!(by_admin.body.get("errors").is_none(), "{}", by_admin.body);

    const REMOVE: &str = "mutation($u: ID!) { removeMember(organization: \"acme\", userId: $u) }";
    assert_eq!(set_role(&app, &admin, &viewer, "MEMBER").await.code(), "");
    assert_eq!(
        set_role(&app, &admin, &admin2, "MEMBER").await.code(),
        "FORBIDDEN"
    );
    assert_eq!(
        set_role(&app, &admin, &plain, "OWNER").await.code(),
        "FORBIDDEN"
    );
    assert_eq!(
        set_role(&app, &admin, &owner, "ADMIN").await.code(),
        "FORBIDDEN"
    );
    let removed_by_admin = app
        .gql(Some(&admin.access), REMOVE, json!({ "u": admin2.user_id }))
        .await;
    assert_eq!(removed_by_admin.code(), "FORBIDDEN");

    // The last owner can neither be demoted, nor removed, nor leave.
    let demoted = set_role(&app, &owner, &owner, "ADMIN").await;
    assert_eq!(demoted.code(), "FORBIDDEN");
    assert_eq!(
        demoted.extension("reason"),
        "LAST_OWNER",
        "{}",
        demoted.body
    );
    let leave = "mutation { leaveOrganization(organization: \"acme\") }";
    let left = app.gql(Some(&owner.access), leave, json!({})).await;
    assert_eq!(left.extension("reason"), "LAST_OWNER", "{}", left.body);

    // Ownership handed over: the new owner owns, the old one is an admin and may leave.
    let transferred = app
        .gql(
            Some(&owner.access),
            "mutation($u: ID!) { transferOwnership(organization: \"acme\", userId: $u) }",
            json!({ "u": admin.user_id }),
        )
        .await;
    assert_eq!(
        transferred.data()["transferOwnership"],
        true,
        "{}",
        transferred.body
    );
    let now = roles(&app, &admin, "acme").await;
    assert!(
        now.contains(&("admin@example.com".into(), "OWNER".into())),
        "{now:?}"
    );
    assert!(
        now.contains(&("owner@example.com".into(), "ADMIN".into())),
        "{now:?}"
    );
    let old_owner_leaves = app.gql(Some(&owner.access), leave, json!({})).await;
    assert_eq!(old_owner_leaves.data()["leaveOrganization"], true);
    let gone = app
        .gql(
            Some(&owner.access),
            "{ organization(slug: \"acme\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(gone.code(), "NOT_FOUND");

    // The new owner removes a member; a member leaves.
    let removed = app
        .gql(Some(&admin.access), REMOVE, json!({ "u": admin2.user_id }))
        .await;
    assert_eq!(removed.data()["removeMember"], true, "{}", removed.body);
    assert_eq!(
        app.gql(Some(&viewer.access), leave, json!({})).await.data()["leaveOrganization"],
        true
    );
    let left_now = roles(&app, &admin, "acme").await;
    assert_eq!(
        left_now,
        vec![
            ("admin@example.com".into(), "OWNER".into()),
            ("member@example.com".into(), "MEMBER".into()),
        ]
    );

    // Every change is audited with the organization.
    let actions: BTreeSet<String> = app
        .audit_entries()
        .await
        .into_iter()
        .filter(|e| e.organization_id.is_some())
        .map(|e| e.action)
        .collect();
    for action in [
        "organization.create",
        "organization.invite",
        "organization.join",
        "organization.member_role",
        "organization.transfer",
        "organization.leave",
        "organization.member_remove",
    ] {
        assert!(
            actions.contains(action),
            "{action} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn members_page_with_cursors() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    for n in 0..3 {
        member(&app, &owner, "acme", &format!("m{n}@example.com"), "VIEWER").await;
    }
    const PAGE: &str = "query($a: String) { organization(slug: \"acme\") { members(first: 2, after: $a) { totalCount pageInfo { hasNextPage endCursor } nodes { email } } } }";
    let first = app.gql(Some(&owner.access), PAGE, json!({})).await;
    let page = &first.data()["organization"]["members"];
    assert_eq!(page["totalCount"], 4);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    let second = app
        .gql(
            Some(&owner.access),
            PAGE,
            json!({ "a": page["pageInfo"]["endCursor"] }),
        )
        .await;
    let rest = &second.data()["organization"]["members"];
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    assert_eq!(rest["nodes"].as_array().unwrap().len(), 2);
    let bad = app
        .gql(Some(&owner.access), PAGE, json!({ "a": "garbage" }))
        .await;
    assert_eq!(bad.code(), "BAD_USER_INPUT");
}

#[tokio::test]
async fn deleting_an_organization_takes_everything_of_it_but_its_audit_trail() {
    let app = TestApp::spawn().await;
    let owner = app.signed_up("owner@example.com").await;
    let org = create_org(&app, &owner, "acme").await;
    let admin = member(&app, &owner, "acme", "admin@example.com", "ADMIN").await;
    invite(&app, &owner, "acme", "pending@example.com", "MEMBER").await;
    let key = crate::api_keys::create_key(&app, &owner, "acme", &["org:read"]).await;
    assert_eq!(
        crate::api_keys::org_name_with_key(&app, &key).await.code(),
        ""
    );

    const DELETE: &str =
        "mutation($c: String!) { deleteOrganization(organization: \"acme\", confirmSlug: $c) }";
    let by_admin = app
        .gql(Some(&admin.access), DELETE, json!({ "c": "acme" }))
        .await;
    assert_eq!(by_admin.code(), "FORBIDDEN");
    let unconfirmed = app
        .gql(Some(&owner.access), DELETE, json!({ "c": "acm" }))
        .await;
    assert_eq!(
        unconfirmed.field_error("confirmSlug"),
        "must repeat the organization's slug"
    );
    let deleted = app
        .gql(Some(&owner.access), DELETE, json!({ "c": "acme" }))
        .await;
    assert_eq!(
        deleted.data()["deleteOrganization"],
        true,
        "{}",
        deleted.body
    );

    // Nothing of it is left, and its key stops working at once.
    let id = org["id"].as_str().unwrap();
    {
        use multipult::entities::{api_keys, organization_members};
        use multipult::features::organizations::entity::invitations;
        use sea_orm::{EntityTrait as _, PaginatorTrait as _};
        let db = &app.state.db;
        assert_eq!(
            organization_members::Entity::find()
                .count(db)
                .await
                .unwrap(),
            0
        );
        assert_eq!(invitations::Entity::find().count(db).await.unwrap(), 0);
        assert_eq!(api_keys::Entity::find().count(db).await.unwrap(), 0);
    }
    assert_eq!(
        crate::api_keys::org_name_with_key(&app, &key).await.status,
        401
    );
    assert_eq!(
        app.gql(
            Some(&admin.access),
            "{ myOrganizations { slug } }",
            json!({})
        )
        .await
        .data()["myOrganizations"],
        json!([])
    );
    let kept: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .filter(|e| e.organization_id.map(|o| o.to_string()).as_deref() == Some(id))
        .map(|e| e.action)
        .collect();
    assert!(kept.contains(&"organization.delete".to_owned()), "{kept:?}");
    assert!(kept.contains(&"organization.create".to_owned()), "{kept:?}");
    // The slug is free again.
    create_org(&app, &admin, "acme").await;
}

#[tokio::test]
async fn admins_see_every_organization_and_the_counts() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "acme").await;
    create_org(&app, &owner, "globex").await;
    crate::api_keys::create_key(&app, &owner, "acme", &["org:read"]).await;

    let all = app
        .gql(
            Some(&root.access),
            "{ allOrganizations(limit: 10) { totalCount items { slug memberCount } } systemStats { organizations activeApiKeys } }",
            json!({}),
        )
        .await;
    assert_eq!(
        all.data()["allOrganizations"]["totalCount"],
        2,
        "{}",
        all.body
    );
    assert_eq!(all.data()["allOrganizations"]["items"][0]["slug"], "globex");
    assert_eq!(all.data()["allOrganizations"]["items"][0]["memberCount"], 1);
    assert_eq!(all.data()["systemStats"]["organizations"], 2);
    assert_eq!(all.data()["systemStats"]["activeApiKeys"], 1);
    let plain = app
        .gql(
            Some(&owner.access),
            "{ allOrganizations { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(plain.code(), "FORBIDDEN");
    // Global admins have no implicit way into an organization.
    let outsider = app
        .gql(
            Some(&root.access),
            "{ organization(slug: \"acme\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(outsider.code(), "NOT_FOUND");
}

/// The root fields of `schema.graphql` that take an organization: an `organization` argument,
/// or `organization(slug:)` itself.
fn organization_scoped_fields() -> BTreeSet<String> {
    let sdl = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql"),
    )
    .unwrap();
    let mut fields = BTreeSet::new();
    let mut root = false;
    for line in sdl.lines() {
        if line.starts_with("type QueryRoot") || line.starts_with("type MutationRoot") {
            root = true;
            continue;
        }
        if line.starts_with('}') {
            root = false;
            continue;
        }
        let line = line.trim();
        if !root || line.starts_with('"') || line.is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once('(') else {
            continue;
        };
        if rest.contains("organization: ") || name == "organization" {
            fields.insert(name.to_owned());
        }
    }
    fields
}

/// Every organization-scoped root field, called by a member of another organization and by an
/// API key of another organization, answers `NOT_FOUND` and changes nothing. A new field that
/// takes `organization` must be added to the table (the test fails until it is), and so is
/// checked for the guard.
#[tokio::test]
async fn every_organization_scoped_field_answers_not_found_across_tenants() {
    let app = TestApp::spawn().await;
    // The victim's organization, with something of each kind in it.
    let victim = app.signed_up("victim@example.com").await;
    create_org(&app, &victim, "victim-org").await;
    let victim_member = member(&app, &victim, "victim-org", "vm@example.com", "MEMBER").await;
    let invitation = invite(&app, &victim, "victim-org", "pending@example.com", "VIEWER").await;
    let invitation_id = invitation.data()["inviteMember"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim_key = crate::api_keys::create_key(&app, &victim, "victim-org", &["org:read"]).await;
    let victim_key_id = crate::api_keys::key_id(&app, &victim, "victim-org").await;
    crate::langfuse::save(
        &app,
        &victim,
        "victim-org",
        "PRODUCTION",
        "https://cloud.langfuse.com",
    )
    .await;

    // The attacker owns an organization and a key with every scope there.
    let attacker = app.signed_up("attacker@example.com").await;
    create_org(&app, &attacker, "attacker-org").await;
    let every_scope = [
        "org:read",
        "org:manage",
        "org:own",
        "members:read",
        "members:manage",
        "apikeys:read",
        "apikeys:manage",
        "langfuse:read",
        "langfuse:test",
        "langfuse:manage",
    ];
    let attacker_key =
        crate::api_keys::create_key(&app, &attacker, "attacker-org", &every_scope).await;

    let vm = victim_member.user_id.as_str();
    // field → calls: (organization argument, query, variables). Fields that take ids of the
    // organization's things are also called in the attacker's own organization with the
    // victim's ids.
    let calls: Vec<(&str, &str, &str, Value)> = vec![
        (
            "organization",
            "victim-org",
            "query($o: String!) { organization(slug: $o) { id name } }",
            json!({}),
        ),
        (
            "apiKeys",
            "victim-org",
            "query($o: String!) { apiKeys(organization: $o) { id prefix } }",
            json!({}),
        ),
        (
            "updateOrganization",
            "victim-org",
            "mutation($o: String!) { updateOrganization(organization: $o, name: \"pwned\") { name } }",
            json!({}),
        ),
        (
            "inviteMember",
            "victim-org",
            "mutation($o: String!) { inviteMember(organization: $o, email: \"evil@example.com\", role: VIEWER) { id } }",
            json!({}),
        ),
        (
            "revokeInvitation",
            "victim-org",
            "mutation($o: String!, $id: ID!) { revokeInvitation(organization: $o, id: $id) }",
            json!({ "id": invitation_id }),
        ),
        (
            "revokeInvitation",
            "attacker-org",
            "mutation($o: String!, $id: ID!) { revokeInvitation(organization: $o, id: $id) }",
            json!({ "id": invitation_id }),
        ),
        (
            "updateMemberRole",
            "victim-org",
            "mutation($o: String!, $u: ID!) { updateMemberRole(organization: $o, userId: $u, role: VIEWER) { role } }",
            json!({ "u": vm }),
        ),
        (
            "updateMemberRole",
            "attacker-org",
            "mutation($o: String!, $u: ID!) { updateMemberRole(organization: $o, userId: $u, role: VIEWER) { role } }",
            json!({ "u": vm }),
        ),
        (
            "removeMember",
            "victim-org",
            "mutation($o: String!, $u: ID!) { removeMember(organization: $o, userId: $u) }",
            json!({ "u": vm }),
        ),
        (
            "removeMember",
            "attacker-org",
            "mutation($o: String!, $u: ID!) { removeMember(organization: $o, userId: $u) }",
            json!({ "u": vm }),
        ),
        (
            "leaveOrganization",
            "victim-org",
            "mutation($o: String!) { leaveOrganization(organization: $o) }",
            json!({}),
        ),
        (
            "transferOwnership",
            "victim-org",
            "mutation($o: String!, $u: ID!) { transferOwnership(organization: $o, userId: $u) }",
            json!({ "u": vm }),
        ),
        (
            "transferOwnership",
            "attacker-org",
            "mutation($o: String!, $u: ID!) { transferOwnership(organization: $o, userId: $u) }",
            json!({ "u": vm }),
        ),
        (
            "deleteOrganization",
            "victim-org",
            "mutation($o: String!) { deleteOrganization(organization: $o, confirmSlug: \"victim-org\") }",
            json!({}),
        ),
        (
            "createApiKey",
            "victim-org",
            "mutation($o: String!) { createApiKey(organization: $o, input: { name: \"x\", environment: PRODUCTION, scopes: [\"org:read\"] }) { key } }",
            json!({}),
        ),
        (
            "revokeApiKey",
            "victim-org",
            "mutation($o: String!, $id: ID!) { revokeApiKey(organization: $o, id: $id) { id } }",
            json!({ "id": victim_key_id }),
        ),
        (
            "revokeApiKey",
            "attacker-org",
            "mutation($o: String!, $id: ID!) { revokeApiKey(organization: $o, id: $id) { id } }",
            json!({ "id": victim_key_id }),
        ),
        (
            "rotateApiKey",
            "victim-org",
            "mutation($o: String!, $id: ID!) { rotateApiKey(organization: $o, id: $id) { key } }",
            json!({ "id": victim_key_id }),
        ),
        (
            "rotateApiKey",
            "attacker-org",
            "mutation($o: String!, $id: ID!) { rotateApiKey(organization: $o, id: $id) { key } }",
            json!({ "id": victim_key_id }),
        ),
        (
            "langfuseSettings",
            "victim-org",
            "query($o: String!) { langfuseSettings(organization: $o) { id secretKey } }",
            json!({}),
        ),
        (
            "langfuseStatus",
            "victim-org",
            "query($o: String!) { langfuseStatus(organization: $o) { status } }",
            json!({}),
        ),
        (
            "langfuseSdkConfig",
            "victim-org",
            "query($o: String!) { langfuseSdkConfig(organization: $o, environment: PRODUCTION, format: ENV) }",
            json!({}),
        ),
        (
            "upsertLangfuseSettings",
            "victim-org",
            "mutation($o: String!) { upsertLangfuseSettings(organization: $o, input: { environment: PRODUCTION, publicKey: \"pk-lf-attacker-1234\", secretKey: \"sk-lf-attacker-1234\" }) { id } }",
            json!({}),
        ),
        (
            "deleteLangfuseSettings",
            "victim-org",
            "mutation($o: String!) { deleteLangfuseSettings(organization: $o, environment: PRODUCTION) }",
            json!({}),
        ),
        (
            "testLangfuseConnection",
            "victim-org",
            "mutation($o: String!) { testLangfuseConnection(organization: $o, environment: PRODUCTION) { status } }",
            json!({}),
        ),
        (
            "testLangfuseCredentials",
            "victim-org",
            "mutation($o: String!) { testLangfuseCredentials(organization: $o, input: { publicKey: \"pk-lf-attacker-1234\", secretKey: \"sk-lf-attacker-1234\" }) { status } }",
            json!({}),
        ),
    ];
    let covered: BTreeSet<String> = calls.iter().map(|c| c.0.to_owned()).collect();
    assert_eq!(
        covered,
        organization_scoped_fields(),
        "every organization-scoped root field needs a row in this table"
    );

    for (field, org, query, variables) in &calls {
        let mut variables = variables.clone();
        variables["o"] = json!(org);
        for (who, credential) in [("member", &attacker.access), ("API key", &attacker_key)] {
            let response = app.gql(Some(credential), query, variables.clone()).await;
            assert_eq!(
                response.code(),
                "NOT_FOUND",
                "{field} in {org} by the attacker's {who}: {}",
                response.body
            );
            assert_eq!(response.body["data"][field], Value::Null);
            let message = response.body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(!message.contains("victim"), "{message}");
        }
    }
    // An unknown slug answers exactly like a foreign one.
    let unknown = app
        .gql(
            Some(&attacker.access),
            "{ organization(slug: \"no-such-org\") { id } }",
            json!({}),
        )
        .await;
    let foreign = app
        .gql(
            Some(&attacker.access),
            "{ organization(slug: \"victim-org\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        unknown.body["errors"][0]["message"],
        foreign.body["errors"][0]["message"]
    );

    // Nothing of the victim's changed.
    let state = app
        .gql(
            Some(&victim.access),
            "{ organization(slug: \"victim-org\") { name members { totalCount } invitations { email } } apiKeys(organization: \"victim-org\") { status } }",
            json!({}),
        )
        .await;
    assert_eq!(
        state.data()["organization"]["name"],
        "Team victim-org",
        "{}",
        state.body
    );
    assert_eq!(state.data()["organization"]["members"]["totalCount"], 2);
    assert_eq!(
        state.data()["organization"]["invitations"],
        json!([{ "email": "pending@example.com" }])
    );
    assert_eq!(state.data()["apiKeys"], json!([{ "status": "ACTIVE" }]));
    let langfuse = app
        .gql(
            Some(&victim.access),
            "{ langfuseSettings(organization: \"victim-org\") { publicKey } }",
            json!({}),
        )
        .await;
    assert_eq!(
        langfuse.data()["langfuseSettings"],
        json!([{ "publicKey": "pk-lf-1234567890" }])
    );
    let with_key = app
        .gql(
            Some(&victim_key),
            "{ organization(slug: \"victim-org\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(with_key.data()["organization"]["name"], "Team victim-org");
    assert_eq!(roles(&app, &victim, "victim-org").await.len(), 2);
}

#[tokio::test]
async fn deleting_an_account_leaves_no_organization_without_an_owner() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let owner = app.signed_up("owner@example.com").await;
    create_org(&app, &owner, "shared").await;
    let viewer = member(&app, &owner, "shared", "viewer@example.com", "VIEWER").await;
    member(&app, &owner, "shared", "admin@example.com", "ADMIN").await;
    create_org(&app, &owner, "solo").await;
    let solo_key = crate::api_keys::create_key(&app, &owner, "solo", &["org:read"]).await;
    let solo = app
        .gql(
            Some(&solo_key),
            "{ organization(slug: \"solo\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(solo.data()["organization"]["name"], "Team solo");

    let deleted = app
        .gql(
            Some(&root.access),
            "mutation($id: ID!) { deleteUserPermanently(userId: $id, confirmEmail: \"owner@example.com\") }",
            json!({ "id": owner.user_id }),
        )
        .await;
    assert_eq!(
        deleted.data()["deleteUserPermanently"],
        true,
        "{}",
        deleted.body
    );

    // The highest-ranked member inherits the shared organization.
    assert_eq!(
        roles(&app, &viewer, "shared").await,
        vec![
            ("admin@example.com".into(), "OWNER".into()),
            ("viewer@example.com".into(), "VIEWER".into()),
        ]
    );
    // The organization nobody else was in is gone, and its key with it.
    let gone = app
        .gql(
            Some(&solo_key),
            "{ organization(slug: \"solo\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(gone.status, 401, "{}", gone.body);
    let all = app
        .gql(
            Some(&root.access),
            "{ allOrganizations { items { slug } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        all.data()["allOrganizations"]["items"],
        json!([{ "slug": "shared" }])
    );
    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"organization.owner_succession".to_owned()),
        "{actions:?}"
    );
}
