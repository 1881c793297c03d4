//! The demo host: eight sample services (migration, cleanup, health monitor and probes,
//! an entity flow, an outbox, messaging, translation) on an embedded SQLite database,
//! with the HTTP control plane and dashboard.
//!
//! Run with: `cargo run -p koan-demo` (then open http://127.0.0.1:8080)

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use koan::{Host, config::Config};
use koan_http::HttpOptions;

/// Sample koan services doing real work on SQLite, with the HTTP control plane.
#[derive(Debug, Parser)]
#[command(name = "koan-demo", version, about)]
struct Args {
    /// Address of the HTTP control plane and dashboard (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// SQLite database file.
    #[arg(long, value_name = "PATH", default_value = "koan-demo.db")]
    db: PathBuf,
    /// A configuration file (`.toml` or `.json`) laid over the embedded defaults.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Join a cluster over NATS (e.g. `nats://127.0.0.1:4222`): services hosted
    /// elsewhere are reached through it.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Host only these services (comma-separated names); the rest are reached over
    /// NATS.
    #[arg(long, value_name = "NAME[,NAME…]", value_delimiter = ',')]
    services: Option<Vec<String>>,
}

/// Embedded defaults: a lively demo (health checks every 5 s, a sample flow entity
/// every 10 s, of which every fifth is parked).
const DEFAULTS: &str = r#"
[http]
bind = "127.0.0.1:8080"

[background_services.services.SystemHealthMonitor.settings]
check_interval_seconds = 5

[background_services.services.FlowOrchestrator.settings]
sample_every_seconds = 10
"#;

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut b = Config::builder().toml("embedded defaults", DEFAULTS)?;
    match &args.config {
        Some(path) => b = b.file(path)?,
        None => {
            if let Some(path) = std::env::var_os("KOAN_CONFIG") {
                b = b.file(PathBuf::from(path))?;
            } else if std::path::Path::new("koan.toml").exists() {
                b = b.file("koan.toml")?;
            }
            if std::path::Path::new("appsettings.json").exists() {
                b = b.file("appsettings.json")?;
            }
        }
    }
    Ok(b.env().build())
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        // Colours only on a terminal: a log file or pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // KOAN_ENV selects the environment; the demo defaults to development.
    let environment = match std::env::var("KOAN_ENV") {
        Ok(v) => v.parse()?,
        Err(_) => koan::host::Environment::DEVELOPMENT,
    };
    koan_http::install_metrics();
    let config = config(&args)?;
    let mut http = HttpOptions::from_config(&config)?;
    if let Some(addr) = args.http {
        http.bind = addr;
    }
    // The port and the token rule first: a taken port or an open bind must fail
    // before the startup services (the database migration) run.
    let listener = koan_http::bind(http).await?;
    let nats = match &args.nats {
        Some(url) => {
            let mut opts = koan_nats::NatsOptions::from_config(&config)?;
            opts.url = url.clone();
            Some(koan_nats::NatsTransport::connect(opts).await?)
        }
        None => None,
    };
    // Jobs live in the demo's own database file: a 202 is a job on disk.
    let jobs = koan_sqlite::SqliteJobStore::open(&args.db).with_context(|| {
        format!(
            "opening the job store in {} (the `--db` file)",
            args.db.display()
        )
    })?;
    // The probe scheduler's default target is this process's own `/health/live`.
    let mut own = listener.local_addr();
    if own.ip().is_unspecified() {
        own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let only = args.services.clone();
    let mut builder = Host::builder()
        .job_store(std::sync::Arc::new(jobs))
        .environment(environment)
        .config(config)
        .resource(koan_demo::db::Db::new(&args.db))
        .resource(koan_demo::services::probe::SelfUrl(format!("http://{own}")))
        .discover_where(|name| {
            only.as_ref()
                .is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        });
    if let Some(n) = &nats {
        // The transport as a resource too: MessagingLifecycle follows its connection,
        // OutboxProcessor publishes to it.
        builder = builder
            .transport(n.clone().into_transport())
            .resource(n.clone());
    }
    let host = builder.build().context("building the host")?.start();
    let node = match &nats {
        Some(n) => Some(n.attach(&host).await?),
        None => None,
    };
    let server = listener.serve(host.clone());
    // The signals are taken over before the address is printed: one sent as soon as
    // it is read stops the host gracefully.
    let until_signal = host.run_until_signal();
    println!("listening on http://{}", server.local_addr());
    let result = until_signal.await;
    if let Some(node) = node {
        node.detach().await;
    }
    let _ = server.wait().await;
    // Exit 2 for a critical service's failure, 1 for a startup failure (as
    // `HostExit::exit_code` says): `anyhow`'s `main` would exit 1 for both.
    match result {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("Error: the host stopped with a failure: {e}");
            Ok(std::process::ExitCode::from(e.exit_code()))
        }
    }
}
