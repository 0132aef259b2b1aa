//! Stand-alone migration CLI (`cargo run -p migration -- status`); the app binary offers the
//! same as `multipult migrate`. It reads the database like the app does: `DATABASE_URL` from the
//! environment or `.env`, else the development default (the SQLite file under `DATA_DIR`), and
//! changes the schema on one connection.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectOptions, Database};

#[tokio::main]
async fn main() {
    dotenvy::dotenv().ok();
    cli::run_cli_with_custom_connection(migration::Migrator, async || {
        let url = match std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            Some(url) => url,
            None => {
                let dir = std::env::var("DATA_DIR")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| "data".to_owned());
                std::fs::create_dir_all(&dir).map_err(|e| {
                    DbErr::Custom(format!("cannot create the database folder {dir}: {e}"))
                })?;
                format!("sqlite://{dir}/multipult.db?mode=rwc")
            }
        };
        let mut options = ConnectOptions::new(url);
        options.max_connections(1).sqlx_logging(false);
        Database::connect(options).await
    })
    .await;
}
