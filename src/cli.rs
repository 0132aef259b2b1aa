//! The command line: `serve` (default), `migrate`, `export-schema`, `check-config`, `healthcheck`.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait as _};

use crate::app::Application;
use crate::config::{Environment, SecretSource, Settings};
use crate::infra::db;

#[derive(Parser)]
#[command(
    name = "multipult",
    version,
    about = "A production-ready GraphQL API backend"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply or inspect database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the GraphQL schema (SDL); schema.graphql holds this output.
    ExportSchema,
    /// Validate the configuration and print the effective settings, secrets masked.
    CheckConfig,
    /// Exit 0 when this host's /health/live answers 200 (for container health checks).
    Healthcheck {
        /// Port to probe; defaults to APP_PORT.
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply pending migrations.
    Up {
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Roll back the latest migration(s).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and re-apply all migrations.
    Fresh {
        /// Required when APP_ENV=production.
        #[arg(long)]
        force: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ExportSchema) => {
            // Needs no configuration: the schema's shape does not depend on it.
            print!("{}", crate::graphql::sdl());
            return ExitCode::SUCCESS;
        }
        Some(Command::Healthcheck { port }) => {
            // A container probe must not depend on the rest of the configuration.
            let port = port
                .or_else(|| std::env::var("APP_PORT").ok()?.parse().ok())
                .unwrap_or(8080);
            return match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(healthcheck(port)),
                Err(_) => ExitCode::FAILURE,
            };
        }
        _ => {}
    }

    let mut settings = match Settings::from_process_env() {
        Ok(settings) => settings,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    let secret_notes = match settings.ensure_secrets() {
        Ok(notes) => notes,
        Err(error) => {
            eprintln!(
                "cannot prepare development secrets under {}: {error}",
                settings.data_dir.display()
            );
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::CheckConfig) {
        crate::telemetry::init(&settings);
        for (name, source) in &secret_notes {
            match source {
                SecretSource::Generated(path) => tracing::warn!(
                    variable = name,
                    file = %path.display(),
                    "secret not set: generated one for development and stored it"
                ),
                SecretSource::Stored(path) => tracing::warn!(
                    variable = name,
                    file = %path.display(),
                    "secret not set: using the development secret stored earlier"
                ),
                SecretSource::Configured | SecretSource::Ephemeral => {}
            }
        }
    }

    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(settings).await,
            Command::Migrate { action } => migrate(settings, action).await,
            Command::CheckConfig => {
                for (name, value) in settings.describe() {
                    println!("{name}={value}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Healthcheck { port } => {
                Ok(healthcheck(port.unwrap_or(settings.http.port)).await)
            }
            Command::ExportSchema => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "fatal");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let environment = settings.environment;
    let app = Application::build(settings).await?;
    tracing::info!(
        address = %app.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        environment = environment.as_str(),
        database = db::backend_name(&app.state().db),
        stores = app.state().stores.backend,
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let connection = db::connect(&settings.database).await?;
    match action {
        MigrateAction::Up { steps } => Migrator::up(&connection, steps).await?,
        MigrateAction::Down { steps } => Migrator::down(&connection, Some(steps)).await?,
        MigrateAction::Status => {
            for migration in Migrator::get_migration_with_status(&connection).await? {
                println!("{:?}\t{}", migration.status(), migration.name());
            }
        }
        MigrateAction::Fresh { force } => {
            if settings.environment == Environment::Production && !force {
                eprintln!("refusing to drop every table in production without --force");
                return Ok(ExitCode::from(2));
            }
            Migrator::fresh(&connection).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A dependency-free HTTP probe of 127.0.0.1:`port`/health/live.
async fn healthcheck(port: u16) -> ExitCode {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
