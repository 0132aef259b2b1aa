//! Stand-alone migration CLI (`cargo run -p migration -- up`); the app binary offers the same as `multipult migrate`.
use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
