//! The `lianxin` binary: `serve` runs the server, `admin` manages the directory and accounts on a
//! data folder, `client` talks to a running server from scripts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;
use lianxin_actors::clock::{Clock, SystemClock};
use lianxin_protocol::v1::Role;
use lianxin_server::admin::{self, NewAccount};
use lianxin_server::config::Config;
use lianxin_server::server::Server;
use lianxin_storage::{Store, StoreConfig};
use tracing_subscriber::EnvFilter;

/// Lianxin (连心): petitions between residents and their grid workers, live.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, data in ./data, demo county seeded when empty).
    Serve(ServeArgs),
    /// Manage communities, grids, accounts and addresses (run while the server is stopped).
    Admin(AdminArgs),
    /// Print a month's appraisal report from a running server (a supervisor signs in), as CSV
    /// (UTF-8 with BOM) or JSON: `lianxin report --period 2026-11 --community 3 --login sup-01 …`.
    Report {
        #[command(flatten)]
        args: lianxin_client::cli::ClientArgs,
        #[command(flatten)]
        report: lianxin_client::cli::ReportArgs,
    },
    /// Fill a stopped server's database with a large history through the real actors, for
    /// start-up and memory benchmarks (see docs/performance.md); prints a JSON summary.
    Populate(PopulateArgs),
    /// Take a consistent backup of a running server (database and media files) into an empty
    /// folder, as an administrator: `lianxin backup --to DIR --login admin --password …`.
    Backup {
        #[command(flatten)]
        args: lianxin_client::cli::ClientArgs,
        /// The folder to write the backup into (absent or empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into an empty data folder (run while no server uses that folder);
    /// `--check` only verifies the backup against its manifest.
    Restore {
        /// The backup folder (with its manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// The data folder to restore into (absent or empty).
        #[arg(long, required_unless_present = "check")]
        data_dir: Option<PathBuf>,
        /// Only verify the backup's files against its manifest.
        #[arg(long)]
        check: bool,
    },
    /// Talk to a running server.
    Client {
        #[command(flatten)]
        args: lianxin_client::cli::ClientArgs,
        #[command(subcommand)]
        command: lianxin_client::cli::ClientCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); default: ./lianxin.toml when present.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<String>,
    /// Folder holding the database.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not seed the demo county into an empty database.
    #[arg(long)]
    no_demo: bool,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[derive(Debug, clap::Args)]
struct PopulateArgs {
    /// Folder holding the database (the demo county is seeded into an empty one).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Petitions to raise.
    #[arg(long, default_value_t = 1_000_000)]
    petitions: u64,
    /// Messages per petition, its first message included.
    #[arg(long, default_value_t = 10)]
    messages_per_petition: u32,
    /// Residents raising them (logins pop-resident-N, the demo password).
    #[arg(long, default_value_t = 20_000)]
    residents: u32,
    /// Per mille of petitions left open; the rest are resolved and rated (closed).
    #[arg(long, default_value_t = 10)]
    open_per_mille: u32,
    /// Petitions in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 200)]
    message_bytes: usize,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Folder holding the database.
    #[arg(long, default_value = "data", env = "LIANXIN_DATA_DIR")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a community; prints it as JSON.
    CreateCommunity {
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Create a grid of a community; prints it as JSON.
    CreateGrid {
        /// The community's id.
        #[arg(long)]
        community: u64,
        /// The grid's name.
        #[arg(long)]
        name: String,
        /// A street, block or building range it covers (repeat for several).
        #[arg(long)]
        jurisdiction: Vec<String>,
    },
    /// Create an account; the password comes from LIANXIN_NEW_PASSWORD or standard input.
    CreateAccount {
        /// resident, worker, grid-head, community-supervisor, township-supervisor or admin.
        #[arg(long)]
        role: String,
        /// Sign-in name.
        #[arg(long)]
        login: String,
        /// Name shown to others.
        #[arg(long)]
        name: String,
        /// Grid id (residents, workers, grid heads).
        #[arg(long, default_value_t = 0)]
        grid: u64,
        /// Community id (community supervisors).
        #[arg(long, default_value_t = 0)]
        community: u64,
        /// Address (residents).
        #[arg(long, default_value = "")]
        address: String,
    },
    /// What the data weighs: keys and bytes per tree and keyspace prefix, and the size on disk.
    Space,
    /// Import addresses from a CSV file with header `address,grid_id`.
    ImportAddresses {
        /// The CSV file.
        file: PathBuf,
    },
    /// Print the communities and grids with their staff as JSON.
    List,
}

fn parse_role(s: &str) -> anyhow::Result<Role> {
    Ok(match s {
        "resident" => Role::Resident,
        "worker" => Role::Worker,
        "grid-head" => Role::GridHead,
        "community-supervisor" => Role::CommunitySupervisor,
        "township-supervisor" => Role::TownshipSupervisor,
        "admin" => Role::Admin,
        other => anyhow::bail!("unknown role {other:?}"),
    })
}

fn init_logs(filter: &str, json: bool) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // The WebSocket library's trace lines print whole frames, passwords and tokens included:
    // never below debug for it, whatever RUST_LOG asks (docs/security.md).
    for directive in ["tungstenite=debug", "tokio_tungstenite=debug"] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut flags = Figment::new();
    if let Some(listen) = &args.listen {
        flags = flags.merge(Serialized::default("listen", listen));
    }
    if let Some(dir) = &args.data_dir {
        flags = flags.merge(Serialized::default("data_dir", dir));
    }
    if args.no_demo {
        flags = flags.merge(Serialized::default("seed_demo", false));
    }
    if args.json_logs {
        flags = flags.merge(Serialized::default("log.format", "json"));
    }
    let config = Config::load(args.config.as_deref(), flags)?;
    init_logs(&config.log.filter, config.log.format == "json");
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listen = config.listen;
    let backlog = config.listen_backlog;
    let data_dir = config.data_dir.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = Server::start(config, clock, Some(metrics))
        .await
        .with_context(|| format!("starting on data folder {}", data_dir.display()))?;
    // A deep accept queue: a reconnect storm of thousands of clients must not overflow it (the
    // kernel caps it at net.core.somaxconn).
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("creating the listening socket")?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(listen)
        .with_context(|| format!("binding {listen}"))?;
    let listener = socket
        .listen(backlog)
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("ws://{local}/ws"), data = %data_dir.display(), "lianxin is ready");
    if let Some(demo) = server.seeded() {
        tracing::info!(
            communities = demo.communities,
            grids = demo.grids,
            accounts = demo.accounts,
            password = lianxin_server::seed::DEMO_PASSWORD,
            "seeded the demo county; every demo account has this password"
        );
        for l in &demo.sample_logins {
            tracing::info!(login = %l.login, role = %l.role, name = %l.display_name, "demo sign-in");
        }
    }
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn populate(args: PopulateArgs) -> anyhow::Result<()> {
    use lianxin_server::populate::{PopulateOptions, populate};
    // Progress only: the actors' per-petition lines would drown it.
    init_logs("warn,lianxin=info", false);
    let mut config = Config {
        data_dir: args.data_dir.clone(),
        // Idle petition actors stop soon; no reminders fire while populating.
        petition_idle_secs: 5,
        ..Config::default()
    };
    // A history has residents with many petitions: the per-day limit is for live clients.
    config.limits.max_petitions_per_day = 0;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = Server::start(config, clock, None)
        .await
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let opts = PopulateOptions {
        petitions: args.petitions,
        messages_per_petition: args.messages_per_petition,
        residents: args.residents,
        open_per_mille: args.open_per_mille,
        concurrency: args.concurrency,
        message_bytes: args.message_bytes,
    };
    let step = (args.petitions / 100).max(1);
    let started = std::time::Instant::now();
    let report = populate(server.county(), &opts, |done| {
        if done % step == 0 {
            tracing::info!(
                done,
                of = args.petitions,
                per_sec = done as f64 / started.elapsed().as_secs_f64().max(0.001),
                "populating"
            );
        }
    })
    .await?;
    let bytes_on_disk = server.county().store().size_on_disk()?;
    server.county().shutdown().await?;
    let mut summary = serde_json::to_value(&report)?;
    summary["bytes_on_disk"] = serde_json::json!(bytes_on_disk);
    // The summary is the command's result, for scripts.
    #[allow(clippy::print_stdout)]
    {
        println!("{summary}");
    }
    Ok(())
}

fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let store = Store::open(&StoreConfig::new(&args.data_dir))?;
    let now = SystemClock.now_ms();
    let out = match args.command {
        AdminCommand::CreateCommunity { name } => serde_json::to_value(
            lianxin_protocol::codec::encode_json(&admin::create_community(&store, &name)?),
        )?,
        AdminCommand::CreateGrid {
            community,
            name,
            jurisdiction,
        } => serde_json::to_value(lianxin_protocol::codec::encode_json(&admin::create_grid(
            &store,
            community,
            &name,
            jurisdiction,
        )?))?,
        AdminCommand::CreateAccount {
            role,
            login,
            name,
            grid,
            community,
            address,
        } => {
            let password = match std::env::var("LIANXIN_NEW_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let account = admin::create_account(
                &store,
                NewAccount {
                    role: parse_role(&role)?,
                    login,
                    display_name: name,
                    grid_id: grid,
                    community_id: community,
                    address,
                },
                &password,
                now,
            )?;
            serde_json::to_value(lianxin_protocol::codec::encode_json(&account.public()))?
        }
        AdminCommand::ImportAddresses { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let n = admin::import_addresses(&store, f)?;
            serde_json::json!({ "imported": n })
        }
        AdminCommand::Space => {
            let trees: Vec<_> = store
                .space()?
                .into_iter()
                .filter(|u| u.keys > 0)
                .map(|u| serde_json::json!({"name": u.name, "keys": u.keys, "bytes": u.bytes}))
                .collect();
            let logical: u64 = trees.iter().filter_map(|t| t["bytes"].as_u64()).sum();
            serde_json::json!({
                "trees": trees,
                "logical_bytes": logical,
                "size_on_disk_bytes": store.size_on_disk()?,
            })
        }
        AdminCommand::List => {
            let mut communities = Vec::new();
            for c in store.communities()? {
                let mut grids = Vec::new();
                for g in store
                    .grids()?
                    .into_iter()
                    .filter(|g| g.community_id == c.id)
                {
                    let staff: Vec<_> = store
                        .grid_staff(g.id)?
                        .iter()
                        .map(|a| serde_json::json!({"id": a.id, "login": a.login, "name": a.display_name, "role": a.role().as_str_name()}))
                        .collect();
                    grids.push(serde_json::json!({"id": g.id, "name": g.name, "jurisdiction": g.jurisdiction, "head_id": g.head_id, "staff": staff}));
                }
                communities.push(serde_json::json!({"id": c.id, "name": c.name, "grids": grids}));
            }
            serde_json::json!({ "communities": communities })
        }
    };
    store.flush_blocking()?;
    // Output of an admin command is its result, for scripts.
    #[allow(clippy::print_stdout)]
    {
        match out {
            serde_json::Value::String(s) => println!("{s}"),
            other => println!("{other}"),
        }
    }
    Ok(())
}

/// Prints a command's result line, for scripts.
#[allow(clippy::print_stdout)]
fn print_line(line: &str) {
    println!("{line}");
}

/// `lianxin backup`: signs in (or uses the token) and fetches the backup.
async fn backup(args: lianxin_client::cli::ClientArgs, to: PathBuf) -> anyhow::Result<()> {
    let token = match (&args.token, &args.login, &args.password) {
        (Some(token), _, _) => token.clone(),
        (None, Some(login), Some(password)) => {
            let client = lianxin_client::Client::connect(
                &args.url,
                lianxin_client::ConnectOptions::default(),
            )
            .await?;
            let signed_in = client.sign_in(login, password).await?;
            client.close().await;
            signed_in.token
        }
        _ => anyhow::bail!("give --token, or --login with --password (an administrator's)"),
    };
    let base = lianxin_server::backup::http_base(&args.url);
    let started = std::time::Instant::now();
    let manifest = lianxin_server::backup::fetch(&base, &token, &to)
        .await
        .with_context(|| format!("backing up {base} into {}", to.display()))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    print_line(
        &serde_json::json!({
            "to": to,
            "schema_version": manifest.schema_version,
            "entries": manifest.trees.iter().map(|t| t.entries).sum::<u64>(),
            "media_files": manifest.media_files(),
            "media_missing": manifest.media_missing.len(),
            "bytes": bytes,
            "secs": started.elapsed().as_secs_f64(),
        })
        .to_string(),
    );
    Ok(())
}

/// The allocator: mimalloc, whose per-thread free lists serve the many small allocations of the
/// message path (storage nodes, frames, actor messages) in a fraction of glibc malloc's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Admin(args) => admin(args),
        Command::Populate(args) => populate(args).await,
        Command::Report { args, report } => {
            lianxin_client::cli::run(args, lianxin_client::cli::ClientCommand::Report(report))
                .await?;
            Ok(())
        }
        Command::Backup { args, to } => backup(args, to).await,
        Command::Restore {
            from,
            data_dir,
            check,
        } => {
            let out = match data_dir {
                Some(dir) if !check => {
                    serde_json::to_value(lianxin_server::backup::restore(&from, &dir)?)?
                }
                _ => {
                    let m = lianxin_server::backup::verify(&from)?;
                    serde_json::json!({
                        "verified": true,
                        "files": m.files.len(),
                        "media_files": m.media_files(),
                        "schema_version": m.schema_version,
                    })
                }
            };
            print_line(&out.to_string());
            Ok(())
        }
        Command::Client { args, command } => {
            lianxin_client::cli::run(args, command).await?;
            Ok(())
        }
    }
}
