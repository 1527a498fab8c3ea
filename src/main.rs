//! The `sluice` command: parse the CLI, load the configuration, run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret;
use sluice::config::Settings;
use sluice::service::{self, KeyKind};
use sluice::startup::{Application, shutdown_signal};
use sluice::store::Store;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "SSE streaming inference gateway and chat backend"
)]
struct Cli {
    /// TOML configuration file (default: $SLUICE_CONFIG, else ./sluice.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage workspaces.
    Workspaces {
        #[command(subcommand)]
        command: WorkspacesCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// Workspace id or slug.
        #[arg(long, default_value = "default")]
        workspace: String,
        #[arg(long, value_enum, default_value_t = Kind::Secret)]
        kind: Kind,
        #[arg(long)]
        name: Option<String>,
        /// Browser origin allowed to use a publishable key (repeatable).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Requests per rate-limit window for this key, instead of the default of its kind.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
}

#[derive(Subcommand)]
enum WorkspacesCommand {
    /// Create a workspace with this slug.
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Secret,
    Publishable,
}

/// glibc's allocator spent about a fifth of sluice's CPU under load (see BENCHMARKS.md); the
/// library leaves the choice to embedding applications, the binary takes mimalloc. It is built
/// without its transparent-huge-page advice: on kernels that honour `madvise` for huge pages
/// that advice made each touched region of the heap 2 MiB of resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    sluice::telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "sluice: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let settings = Settings::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Many systems start processes with a soft limit of 1,024 open files under a much
            // higher hard one; a server raises it (the connection cap is 80% of it).
            if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
                tracing::warn!(error = %e, "could not raise the open-file limit");
            }
            let app = Application::build(settings)
                .await
                .map_err(|e| e.to_string())?;
            app.run_until(shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
            Store::open(settings.database_url())
                .await
                .map_err(|e| e.to_string())?;
            let _ = writeln!(std::io::stderr(), "sluice: migrations applied");
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    workspace,
                    kind,
                    name,
                    origins,
                    rate_limit,
                },
        } => {
            let store = Store::open(settings.database_url())
                .await
                .map_err(|e| e.to_string())?;
            service::bootstrap(&store, settings.admin_key.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            let ws = store
                .find_workspace(&workspace)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no workspace `{workspace}`"))?;
            let kind = match kind {
                Kind::Secret => KeyKind::Secret,
                Kind::Publishable => KeyKind::Publishable,
            };
            if kind == KeyKind::Secret && !origins.is_empty() {
                return Err("--origin binds publishable keys only".into());
            }
            for origin in &origins {
                sluice::domain::check_origin("--origin", origin).map_err(|e| e.to_string())?;
            }
            let rate_limit = rate_limit
                .map(|n| sluice::domain::key_rate_limit("--rate-limit", n))
                .transpose()
                .map_err(|e| e.to_string())?;
            let created = service::create_key(
                &store,
                ws.id,
                kind,
                name.as_deref(),
                false,
                origins,
                rate_limit,
            )
            .await
            .map_err(|e| e.to_string())?;
            // The key is the command's output (stdout), shown this once.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", created.key.expose_secret()).map_err(|e| e.to_string())
        }
        Command::Workspaces {
            command: WorkspacesCommand::Create { slug, name },
        } => {
            let slug = sluice::domain::Slug::parse("slug", &slug).map_err(|e| e.to_string())?;
            let slug = slug.as_str();
            let store = Store::open(settings.database_url())
                .await
                .map_err(|e| e.to_string())?;
            let ws = store
                .create_workspace(slug, name.as_deref().unwrap_or(slug))
                .await
                .map_err(|e| {
                    if sluice::store::is_unique_violation(&e) {
                        format!("workspace `{slug}` already exists")
                    } else {
                        e.to_string()
                    }
                })?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", ws.id).map_err(|e| e.to_string())
        }
    }
}
