//! Admin API benchmark: seeds 100 000 users, then reports p50/p99 of `allUsers` pages with and
//! without filters and the time of `bulkAssignRole` on 500 users, through the real schema.
//!
//! SQLite (a temporary file): `cargo bench --bench admin`
//! PostgreSQL: `BENCH_DATABASE_URL=postgres://… cargo bench --bench admin` (the database is
//! emptied first). `BENCH_USERS` changes the number of users.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::Request;
use chrono::Utc;
use migration::{Migrator, MigratorTrait as _};
use multipult::config::Settings;
use multipult::entities::{roles, user_roles, users};
use multipult::graphql::document;
use multipult::identity::{AuthUser, Viewer};
use multipult::infra::{SharedStores, db};
use multipult::state::AppState;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use serde_json::json;
use uuid::Uuid;

const SAMPLES: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let vars = std::collections::BTreeMap::from(
        [("APP_ENV", "test"), ("APP_PORT", "0")].map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut settings =
        Settings::from_vars(vars, &multipult::schema::sections()).expect("valid settings");
    settings.ensure_secrets().expect("ephemeral secrets");
    let dir = std::env::temp_dir().join(format!("multipult-bench-{}", Uuid::new_v4().simple()));
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db?mode=rwc", dir.display()));
    settings.database.url = url.clone().into();
    settings.database.max_connections = 8;
    let connection = db::connect(&settings.database).await.expect("connect");
    Migrator::fresh(&connection).await.expect("fresh schema");
    let state = multipult::app::prepare_state(settings, connection, SharedStores::in_process())
        .await
        .expect("state");
    let backend = db::backend_name(&state.db);

    println!("multipult admin benchmark: {backend}, {total} users");
    let seeded = Instant::now();
    let ids = seed(&state, total).await;
    println!("seeded in {:.1} s", seeded.elapsed().as_secs_f64());

    let schema = multipult::schema::build_schema(&state);
    let admin = Viewer::User(Arc::new(AuthUser {
        id: ids[0],
        email: "bench-admin@example.com".into(),
        session_id: Uuid::nil(),
        roles: ["admin".to_owned()].into(),
        permissions: state
            .catalogue
            .all()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        profile: multipult::identity::Profile {
            username: None,
            display_name: Some("Bench Admin".into()),
            is_verified: true,
            banned_at: None,
            ban_reason: None,
            banned_until: None,
            session_epoch: 0,
            last_login_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            roles: vec![multipult::identity::RoleSummary {
                name: "admin".into(),
                description: None,
            }],
        },
    }));
    // What the transports do before executing: measure the document, attach the loaders.
    let prepare = |request: Request| {
        let vetted = document::vet(&request, &state.settings.graphql, &state.local())
            .expect("within limits");
        let phase = vetted.phase.clone();
        multipult::schema::attach_loaders(&state, vetted.into_request(request).data(phase))
    };

    let cases = [
        ("page 1, no filter", json!({ "l": 20, "off": 0 })),
        (
            "page 1, 100 items with roles",
            json!({ "l": 100, "off": 0 }),
        ),
        (
            "filter isActive + isVerified",
            json!({ "l": 20, "off": 0, "f": { "isActive": true, "isVerified": false } }),
        ),
        (
            "filter roleName = moderator",
            json!({ "l": 20, "off": 0, "f": { "roleName": "moderator" } }),
        ),
        (
            "search \"user0123\"",
            json!({ "l": 20, "off": 0, "f": { "search": "user0123" } }),
        ),
        (
            "order EMAIL asc, offset 50 000",
            json!({ "l": 20, "off": 50_000.min(total.saturating_sub(20)), "o": { "field": "EMAIL", "direction": "ASC" } }),
        ),
    ];
    let query = "query($f: UserFilter, $o: UserOrder, $l: Int!, $off: Int!) { allUsers(filter: $f, orderBy: $o, limit: $l, offset: $off) { totalCount items { id email roles { name } } } }";
    println!();
    println!("| allUsers query | p50 | p99 |");
    println!("|---|---|---|");
    for (name, vars) in cases {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let request = prepare(
                Request::new(query)
                    .variables(async_graphql::Variables::from_json(vars.clone()))
                    .data(admin.clone()),
            );
            let started = Instant::now();
            let response = schema.execute(request).await;
            samples.push(started.elapsed());
            assert!(response.errors.is_empty(), "{name}: {:?}", response.errors);
        }
        samples.sort();
        println!(
            "| {name} | {} | {} |",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99))
        );
    }

    let bulk: Vec<String> = ids[1..=500.min(ids.len() - 1)]
        .iter()
        .map(Uuid::to_string)
        .collect();
    let mutation = "mutation($ids: [ID!]!) { bulkAssignRole(userIds: $ids, role: \"moderator\") { updated unchanged } }";
    let request = prepare(
        Request::new(mutation)
            .variables(async_graphql::Variables::from_json(json!({ "ids": bulk })))
            .data(admin.clone()),
    );
    let started = Instant::now();
    let response = schema.execute(request).await;
    let elapsed = started.elapsed();
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    println!();
    println!(
        "bulkAssignRole on 500 users (one transaction, audited): {}",
        ms(elapsed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inserts users in batches (a fixed password hash: hashing is not what is measured). Every
/// user has `user`; every 10th also `moderator`; every 7th is inactive; every 3rd verified.
async fn seed(state: &AppState, total: usize) -> Vec<Uuid> {
    let role = |name: &'static str| async move {
        roles::Entity::find()
            .filter(roles::Column::Name.eq(name))
            .one(&state.db)
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let (user_role, moderator_role) = (role("user").await, role("moderator").await);
    let now = Utc::now();
    let mut ids = Vec::with_capacity(total);
    for chunk_start in (0..total).step_by(1000) {
        let chunk: Vec<usize> = (chunk_start..(chunk_start + 1000).min(total)).collect();
        let rows: Vec<users::ActiveModel> = chunk
            .iter()
            .map(|i| {
                let id = Uuid::now_v7();
                ids.push(id);
                users::ActiveModel {
                    id: Set(id),
                    email: Set(format!("user{i:06}@example.com")),
                    username: Set(Some(format!("user_{i}"))),
                    display_name: Set(Some(format!("Bench User {i}"))),
                    password_hash: Set(Some("$argon2id$v=19$m=19456,t=2,p=1$bench$bench".into())),
                    is_active: Set(i % 7 != 0),
                    is_verified: Set(i % 3 == 0),
                    banned_at: Set(None),
                    ban_reason: Set(None),
                    banned_until: Set(None),
                    session_epoch: Set(0),
                    last_login_at: Set(Some(now - chrono::Duration::minutes(*i as i64))),
                    created_at: Set(now - chrono::Duration::seconds(*i as i64)),
                    updated_at: Set(now),
                }
            })
            .collect();
        let first = ids.len() - rows.len();
        users::Entity::insert_many(rows)
            .exec(&state.db)
            .await
            .unwrap();
        let links: Vec<user_roles::ActiveModel> = chunk
            .iter()
            .zip(&ids[first..])
            .flat_map(|(i, id)| {
                let mut links = vec![user_roles::ActiveModel {
                    user_id: Set(*id),
                    role_id: Set(user_role),
                    created_at: Set(now),
                }];
                if i % 10 == 0 {
                    links.push(user_roles::ActiveModel {
                        user_id: Set(*id),
                        role_id: Set(moderator_role),
                        created_at: Set(now),
                    });
                }
                links
            })
            .collect();
        user_roles::Entity::insert_many(links)
            .exec(&state.db)
            .await
            .unwrap();
    }
    ids
}
