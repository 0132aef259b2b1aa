//! `calibration PORT_BARE PORT_GRAPHQL`: two reference servers in one process.
//!
//! - `http://127.0.0.1:PORT_BARE/` answers 29 fixed bytes: the ceiling of axum on this machine;
//!   `POST /v1/traces` on the same port swallows OTLP spans (the traces-on lines).
//! - `http://127.0.0.1:PORT_GRAPHQL/graphql` is stock async-graphql-axum, no middleware, with
//!   `{ users(limit: Int) { id name } }` over 1,000 users in memory: the reference multipult's
//!   figures are divided by.

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use async_graphql_axum::GraphQL;
use axum::Router;
use axum::routing::{get, post, post_service};
use tokio::signal::unix::{SignalKind, signal};

#[derive(SimpleObject, Clone)]
struct User {
    id: String,
    name: String,
}

struct Query {
    users: Vec<User>,
}

#[Object]
impl Query {
    async fn users(&self, #[graphql(default = 20)] limit: usize) -> Vec<User> {
        self.users.iter().take(limit.min(100)).cloned().collect()
    }
}

fn port(arg: Option<String>, default: u16) -> u16 {
    arg.and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bare_port = port(args.next(), 18081);
    let graphql_port = port(args.next(), 18082);

    let users = (0..1000)
        .map(|n| User {
            id: format!("{n:08}"),
            name: format!("User {n}"),
        })
        .collect();
    let schema = Schema::build(Query { users }, EmptyMutation, EmptySubscription).finish();

    let bare = Router::new()
        .route("/", get(|| async { "{\"data\":{\"ok\":true}}\n\n\n\n\n\n\n\n" }))
        // An OTLP/HTTP sink for the traces-on lines: takes spans, keeps nothing.
        .route("/v1/traces", post(|| async { "{}" }));
    let graphql = Router::new().route("/graphql", post_service(GraphQL::new(schema)));

    let bare_listener = tokio::net::TcpListener::bind(("127.0.0.1", bare_port)).await?;
    let graphql_listener = tokio::net::TcpListener::bind(("127.0.0.1", graphql_port)).await?;
    println!("calibration ready: bare 127.0.0.1:{bare_port}, graphql 127.0.0.1:{graphql_port}");
    // SIGTERM ends the process through `exit`, which runs the exit handlers: a build
    // instrumented for profile-guided optimisation writes its counters there (bench/pgo.sh).
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        terminate.recv().await;
        std::process::exit(0);
    });
    let bare = tokio::spawn(async move { axum::serve(bare_listener, bare).await });
    axum::serve(graphql_listener, graphql).await?;
    bare.abort();
    Ok(())
}
