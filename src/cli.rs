//! The command line: `serve` (default), `migrate`, `export-schema`, `check-config`, `admin`,
//! `secrets rotate`, `healthcheck`.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait as _};

use crate::app::Application;
use crate::config::{Environment, SecretSource, Settings};
use crate::infra::db;
use crate::telemetry::LogStream;

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
    /// Manage accounts and roles.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Manage the keys that seal secrets at rest.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Exit 0 when this host's /health/live answers 200 (for container health checks).
    Healthcheck {
        /// Port to probe; defaults to APP_PORT.
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create a verified account. The password is read from standard input when it is piped;
    /// otherwise one is generated and printed once.
    CreateUser {
        #[arg(long)]
        email: String,
        /// Roles to give (repeatable); `user` is always given.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Create demo accounts for development (refused in production). Idempotent: existing
    /// accounts are left alone.
    Seed {
        /// Plain demo users besides the admin and the moderator.
        #[arg(long, default_value_t = 20)]
        users: usize,
    },
    /// Give an existing account a role.
    AssignRole {
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Re-seal every stored secret with the current SECRETS_KEY. Set the new key as
    /// SECRETS_KEY and the old one in SECRETS_KEY_PREVIOUS first; afterwards the old key can go.
    Rotate,
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
            print!("{}", crate::schema::sdl());
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

    let mut settings = match Settings::from_process_env(&crate::schema::sections()) {
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
        let stream = if matches!(command, Command::Serve) {
            LogStream::Stdout
        } else {
            LogStream::Stderr
        };
        crate::telemetry::init(&settings, stream);
        for (name, source) in &secret_notes {
            match source {
                // Once, when created; later starts reuse the file quietly.
                SecretSource::Generated(path) => tracing::warn!(
                    variable = name,
                    file = %path.display(),
                    "secret not set: generated one for development and stored it"
                ),
                SecretSource::Stored(path) => tracing::debug!(
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
            Command::Admin { action } => admin(settings, action).await,
            Command::Secrets {
                action: SecretsAction::Rotate,
            } => rotate_secrets(settings).await,
            Command::CheckConfig => {
                for read in settings.describe() {
                    println!("{}={}", read.name, read.value);
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
    let graphiql = settings.graphql.graphiql;
    let readable = settings.log_format == crate::config::LogFormat::Pretty;
    let app = Application::build(settings).await?;
    let address = app.local_addr();
    let base = address.map(local_base_url).unwrap_or_default();
    tracing::info!(
        address = %address.map(|a| a.to_string()).unwrap_or_default(),
        url = %format!("{base}/graphql"),
        environment = environment.as_str(),
        database = db::backend_name(&app.state().db),
        stores = app.state().stores.backend,
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    if readable {
        // The first screen of a developer: where to go, not only a log line.
        let ws = base.replacen("http", "ws", 1);
        let mut screen = format!(
            "\n  multipult {} ({}) is ready\n",
            env!("CARGO_PKG_VERSION"),
            environment.as_str()
        );
        if graphiql {
            screen.push_str(&format!("  GraphiQL   {base}/graphql\n"));
        }
        screen.push_str(&format!(
            "  GraphQL    {base}/graphql (HTTP), {ws}/graphql/ws (WebSocket)\n  \
             Health     {base}/health/live, {base}/health/ready\n  \
             Metrics    {base}/metrics\n"
        ));
        println!("{screen}");
    }
    app.run_until_stopped().await?;
    // The last spans, before the process ends.
    crate::telemetry::otel::shutdown();
    Ok(ExitCode::SUCCESS)
}

/// `http://host:port` to reach a server bound to `address` from this machine: an unspecified
/// address (`0.0.0.0`, `::`) is reached on loopback.
fn local_base_url(address: std::net::SocketAddr) -> String {
    let ip = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, address.port()))
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let connection = db::connect_for_schema_changes(&settings.database).await?;
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

/// `secrets rotate`: every feature's sealed secrets, re-sealed with the current key.
async fn rotate_secrets(settings: Settings) -> anyhow::Result<ExitCode> {
    let (db, stores) = crate::app::connect(&settings).await?;
    let state = crate::app::prepare_state(settings, db, stores).await?;
    let mut failed = false;
    for (feature, reseal) in crate::schema::resealers() {
        match reseal(state.clone()).await {
            Ok((resealed, total)) => {
                println!("{feature}: re-sealed {resealed} of {total} stored secrets");
            }
            Err(error) => {
                failed = true;
                eprintln!("{feature}: cannot re-seal: {}", describe(&error));
            }
        }
    }
    println!("sealing key id: {}", state.secret_box.key_id());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn admin(settings: Settings, action: AdminAction) -> anyhow::Result<ExitCode> {
    use crate::features::admin::commands;
    use crate::identity::accounts::NewAccount;

    let (db, stores) = crate::app::connect(&settings).await?;
    let state = crate::app::prepare_state(settings, db, stores).await?;
    let operator = commands::operator();
    match action {
        AdminAction::CreateUser {
            email,
            roles,
            display_name,
        } => {
            let (password, generated) = read_or_generate_password()?;
            let account = NewAccount {
                email,
                password: password.clone(),
                username: None,
                display_name,
            };
            match commands::create_user(&state, &operator, account, &roles).await {
                Ok(user) => {
                    println!("created {} ({})", user.email, user.id);
                    if generated {
                        println!("password: {password}");
                        println!("(shown once; store it now)");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("cannot create the user: {}", describe(&error));
                    Ok(ExitCode::from(2))
                }
            }
        }
        AdminAction::Seed { users } => commands::seed(&state, &operator, users).await,
        AdminAction::AssignRole { email, role } => {
            match commands::assign_role(&state, &operator, &email, &role).await {
                Ok(Some((user, added))) => {
                    println!(
                        "{} {} the {role} role",
                        user.email,
                        if added { "now has" } else { "already had" }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(None) => {
                    eprintln!("no user with email {email}");
                    Ok(ExitCode::from(2))
                }
                Err(error) => {
                    eprintln!("cannot assign the role: {}", describe(&error));
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

/// The error as an operator should read it, with each invalid field.
fn describe(error: &crate::error::AppError) -> String {
    match error {
        crate::error::AppError::BadUserInput { fields, .. } => fields
            .iter()
            .map(|(field, problem)| format!("{field} {problem}"))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// The first line of piped standard input, or a generated password.
fn read_or_generate_password() -> anyhow::Result<(String, bool)> {
    use std::io::{BufRead as _, IsTerminal as _};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if !line.is_empty() {
            return Ok((line, false));
        }
    }
    let mut bytes = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    Ok((
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes),
        true,
    ))
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
