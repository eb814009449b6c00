//! The command line: one subcommand per scenario, plus `relay` (the bare relay).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generator for the Lianxin server: speaks the real protocol over real WebSockets, measures
/// throughput, latency percentiles and the server's CPU and memory, and compares with a bare relay.
///
/// Without `--target`, each scenario starts the `lianxin` binary itself on a fresh data folder
/// (the demo county is seeded on first start) and stops it at the end. One process holds at most
/// about 19,000 connections here (20,000 open files per process); more need several processes.
#[derive(Debug, Parser)]
#[command(name = "lianxin-load", version, about, long_about)]
pub struct Cli {
    /// Worker threads of this process (0: one per core). One thread interferes less with a
    /// target on the same small machine, but caps the generator at one core: see
    /// load-tests/README.md.
    #[arg(long, global = true, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub threads: u16,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios and the relay.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Open many signed-in, subscribed connections, hold them, measure memory per connection.
    Idle(IdleArgs),
    /// Residents and workers exchange messages at a fixed open-loop rate; measure latencies.
    Steady(SteadyArgs),
    /// Disconnect every connection at once, generate events, reconnect all, check the catch-up.
    Storm(StormArgs),
    /// Steady load for a long (bounded) time, watching the server's memory.
    Soak(SoakArgs),
    /// Open many petitions whose response deadlines fall due within a window; measure how late
    /// each reminder fires and the server's memory per tracked deadline.
    Deadlines(DeadlinesArgs),
    /// Start the server on an existing, large database (see `lianxin populate`); measure the time
    /// until it is ready, its memory at rest, and that the history is served.
    Startup(StartupArgs),
    /// Kill the server with SIGKILL at random moments under steady load, restart it on the same
    /// data folder, and check after each cycle that every acknowledged message and petition is
    /// there exactly once and every feed resumes without gaps.
    Crash(CrashArgs),
    /// Upload photos of about 1 MiB over HTTP, many at once; measure throughput and the server's
    /// memory while they run.
    Uploads(UploadsArgs),
    /// Run the bare relay: plain tokio-tungstenite speaking the scenarios' subset of the protocol.
    Relay(RelayArgs),
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Use a running server (ws://HOST:PORT/ws) instead of starting one; no process figures then.
    #[arg(long)]
    pub target: Option<String>,
    /// The `lianxin` binary to start (default: `lianxin` next to this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Run against the bare relay instead of the Lianxin server.
    #[arg(long, conflicts_with = "compare")]
    pub relay: bool,
    /// Run against the server, then against the bare relay, and report both with ratios.
    #[arg(long)]
    pub compare: bool,
    /// Run the relay inside this process instead of spawning `lianxin-load relay` (no process
    /// figures for the relay then).
    #[arg(long)]
    pub relay_in_process: bool,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... to spread client sockets over (0: one per
    /// 20,000 connections). Only used against a loopback IPv4 target.
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Where to write the JSON report (default: target/load-reports/<scenario>-<unix time>.json).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The log filter of the started server (`RUST_LOG`).
    #[arg(long, default_value = "warn")]
    pub server_log: String,
}

/// `uploads`: photos over HTTP.
#[derive(Debug, Clone, Args)]
pub struct UploadsArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Photos to upload (each different).
    #[arg(long, default_value_t = 100)]
    pub uploads: u32,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Size of each photo, in KiB (a JPEG of noise, sized to about this).
    #[arg(long, default_value_t = 1024)]
    pub size_kib: u32,
}

/// `startup`: a large database's start.
#[derive(Debug, Clone, Args)]
pub struct StartupArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The data folder to start on (made by `lianxin populate`; it is kept).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Seconds to let the server rest after it is ready before reading its memory.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// Residents (`pop-resident-N`) who sign in and read their petitions and histories.
    #[arg(long, default_value_t = 50)]
    pub readers: u32,
}

/// `idle`: many quiet connections.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open (capped at what one process can hold).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Seconds to hold them open.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub hold_secs: u64,
    /// Demo accounts to sign in (each once, with its password); connections reuse their tokens.
    #[arg(long, default_value_t = 288, value_parser = clap::value_parser!(u64).range(1..=288))]
    pub accounts: u64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub connect_concurrency: u64,
}

/// The load shape shared by `steady` and `soak`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadShape {
    /// Messages per second offered, in total.
    pub rate: f64,
    /// Seconds of sending.
    pub duration_secs: u64,
    /// Petitions opened before sending starts.
    pub petitions: u64,
    /// New petitions per second during the run (0: none).
    pub petition_rate: f64,
    /// Requests awaiting a reply per connection before further sends are dropped.
    pub max_inflight: u64,
    /// Seconds to wait for outstanding acknowledgements and deliveries after sending stops.
    pub drain_secs: u64,
    /// Bytes of text per message.
    pub text_bytes: u64,
    /// Percent of messages that also carry a photo (uploaded once per sender before the run).
    pub photo_percent: u8,
}

/// `steady`: messages at a fixed rate.
#[derive(Debug, Clone, Args)]
pub struct SteadyArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages per second offered, in total (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,
    /// Petitions opened at the start (3 participants each: resident, worker, grid head).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub petitions: u64,
    /// New petitions per second during the run.
    #[arg(long, default_value_t = 0.0)]
    pub petition_rate: f64,
    /// Requests awaiting a reply per connection; sends beyond it are dropped and counted.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_inflight: u64,
    /// Seconds to wait for outstanding replies and deliveries after sending stops.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_secs: u64,
    /// Bytes of text per message (the goals' shape: 200).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=4000))]
    pub text_bytes: u64,
    /// Percent of messages that also carry a photo, uploaded once per sender before the run.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub photo_percent: u8,
}

impl SteadyArgs {
    /// The load shape.
    pub fn shape(&self) -> LoadShape {
        LoadShape {
            rate: self.rate,
            duration_secs: self.duration_secs,
            petitions: self.petitions,
            petition_rate: self.petition_rate,
            max_inflight: self.max_inflight,
            drain_secs: self.drain_secs,
            text_bytes: self.text_bytes,
            photo_percent: self.photo_percent,
        }
    }
}

/// `soak`: steady load for a long time.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages per second offered, in total.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,
    /// Petitions opened at the start.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub petitions: u64,
    /// New petitions per second during the run.
    #[arg(long, default_value_t = 0.0)]
    pub petition_rate: f64,
    /// Requests awaiting a reply per connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_inflight: u64,
    /// Seconds to wait for outstanding replies after sending stops.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_secs: u64,
    /// Bytes of text per message (the goals' shape: 200).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=4000))]
    pub text_bytes: u64,
    /// Percent of messages that also carry a photo, uploaded once per sender before the run.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub photo_percent: u8,
}

impl SoakArgs {
    /// The load shape.
    pub fn shape(&self) -> LoadShape {
        LoadShape {
            rate: self.rate,
            duration_secs: self.duration_secs,
            petitions: self.petitions,
            petition_rate: self.petition_rate,
            max_inflight: self.max_inflight,
            drain_secs: self.drain_secs,
            text_bytes: self.text_bytes,
            photo_percent: self.photo_percent,
        }
    }
}

/// `storm`: everyone reconnects at once.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Subscribed connections (capped at what one process can hold).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub connections: u64,
    /// Petitions whose participants the connections sign in as.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub petitions: u64,
    /// Messages sent while everyone is disconnected.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub burst_messages: u64,
    /// Connection attempts in flight at once for the first connect (the reconnect is all at once).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub connect_concurrency: u64,
    /// Spread the reconnects evenly over this many milliseconds (0: all in the same instant), as
    /// clients with a jittered back-off would.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub reconnect_spread_ms: u64,
    /// Seconds every client gets to reconnect and catch up.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub catchup_timeout_secs: u64,
}

/// `deadlines`: reminders of many petitions falling due within a window.
#[derive(Debug, Clone, Args)]
pub struct DeadlinesArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Open petitions to create (each by a resident of the demo county, addressed to a worker).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub petitions: u64,
    /// Seconds over which the petitions are created, evenly, and so over which their response
    /// deadlines fall due.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub window_secs: u64,
    /// Seconds between the end of the creation window and the first deadline (the started
    /// server's `response_within` is `window_secs + lead_secs`).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lead_secs: u64,
    /// The started server's `supervision_tick_ms`.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub tick_ms: u64,
    /// Connections each resident submits over (requests on one connection are answered in turn).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub connections_per_resident: u64,
    /// Seconds to wait for missing reminders after the last deadline.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drain_secs: u64,
    /// Seconds to wait after the last reminder before the last memory reading (longer than the
    /// server's `petition_idle_secs` shows the memory once idle petition actors have stopped).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub settle_secs: u64,
    /// The started server's `petition_idle_secs` (default: the server's own default).
    #[arg(long)]
    pub petition_idle_secs: Option<u64>,
    /// The started server's `cache_capacity_mb` (default: the server's own default).
    #[arg(long)]
    pub cache_capacity_mb: Option<u64>,
    /// Start the server with glibc's default malloc settings. Without this flag it runs with a
    /// fixed mmap threshold (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576`), so that the
    /// 19 MiB argon2 buffers of the sign-ins go back to the system instead of staying in the
    /// "before" reading and being reused by what the petitions allocate.
    #[arg(long)]
    pub malloc_defaults: bool,
}

/// `crash`: the crash loop.
#[derive(Debug, Clone, Args)]
pub struct CrashArgs {
    /// Common options (`--target`, `--relay` and `--compare` do not apply: the loop must kill and
    /// restart the server itself).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub cycles: u64,
    /// Stop after the cycle running when this many seconds have passed.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_secs: u64,
    /// Residents sending, each to a petition of its own (one per community).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=12))]
    pub senders: u64,
    /// Requests per second offered in total (0: each sender as fast as its replies come).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Every n-th request of a sender raises a new petition instead of sending a message (0:
    /// none).
    #[arg(long, default_value_t = 40)]
    pub petition_every: u64,
    /// Shortest time the server runs under load before it is killed, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub min_up_ms: u64,
    /// Longest time the server runs under load before it is killed, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub max_up_ms: u64,
    /// Seed of the random kill times (default: from the clock; the report gives it).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `relay`: the bare relay.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Leave Nagle's algorithm on (no TCP_NODELAY on accepted sockets), to measure what it costs.
    #[arg(long)]
    pub no_nodelay: bool,
}

impl Command {
    /// The scenario's name (`relay` for the relay).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Idle(_) => "idle",
            Command::Steady(_) => "steady",
            Command::Storm(_) => "storm",
            Command::Soak(_) => "soak",
            Command::Deadlines(_) => "deadlines",
            Command::Startup(_) => "startup",
            Command::Uploads(_) => "uploads",
            Command::Crash(_) => "crash",
            Command::Relay(_) => "relay",
        }
    }

    /// The common options of a scenario (`None` for the relay).
    pub fn common(&self) -> Option<&CommonArgs> {
        match self {
            Command::Idle(a) => Some(&a.common),
            Command::Steady(a) => Some(&a.common),
            Command::Storm(a) => Some(&a.common),
            Command::Soak(a) => Some(&a.common),
            Command::Deadlines(a) => Some(&a.common),
            Command::Startup(a) => Some(&a.common),
            Command::Uploads(a) => Some(&a.common),
            Command::Crash(a) => Some(&a.common),
            Command::Relay(_) => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_scenarios_with_defaults() {
        let cli = Cli::try_parse_from(["lianxin-load", "steady", "--rate", "2000"]).unwrap();
        let Command::Steady(a) = cli.command else {
            panic!("not steady")
        };
        assert_eq!(a.rate, 2000.0);
        assert_eq!(a.duration_secs, 20);
        assert_eq!(a.petitions, 300);
        assert_eq!(a.max_inflight, 64);
        assert!(!a.common.compare);
        let cli = Cli::try_parse_from([
            "lianxin-load",
            "idle",
            "--connections",
            "20",
            "--hold-secs",
            "1",
            "--compare",
            "--report",
            "/tmp/x.json",
        ])
        .unwrap();
        assert_eq!(cli.command.name(), "idle");
        let common = cli.command.common().unwrap();
        assert!(common.compare);
        assert_eq!(common.report, Some(PathBuf::from("/tmp/x.json")));
        assert!(
            Cli::try_parse_from(["lianxin-load", "idle", "--relay", "--compare"]).is_err(),
            "--relay and --compare exclude each other"
        );
        assert!(Cli::try_parse_from(["lianxin-load", "soak", "--duration-secs", "0"]).is_err());
        let cli =
            Cli::try_parse_from(["lianxin-load", "relay", "--listen", "127.0.0.1:1"]).unwrap();
        assert!(cli.command.common().is_none());
        let cli = Cli::try_parse_from([
            "lianxin-load",
            "deadlines",
            "--petitions",
            "100000",
            "--window-secs",
            "30",
        ])
        .unwrap();
        let Command::Deadlines(a) = cli.command else {
            panic!("not deadlines")
        };
        assert_eq!(a.petitions, 100_000);
        assert_eq!(a.window_secs, 30);
        assert_eq!(a.lead_secs, 20);
        assert_eq!(a.tick_ms, 250);
    }

    #[test]
    fn threads_go_before_or_after_the_scenario() {
        let cli = Cli::try_parse_from(["lianxin-load", "steady"]).unwrap();
        assert_eq!(cli.threads, 0, "one per core unless given");
        let cli = Cli::try_parse_from(["lianxin-load", "steady", "--threads", "1"]).unwrap();
        assert_eq!(cli.threads, 1);
        let cli = Cli::try_parse_from(["lianxin-load", "--threads", "3", "idle"]).unwrap();
        assert_eq!(cli.threads, 3);
        assert!(Cli::try_parse_from(["lianxin-load", "steady", "--threads", "257"]).is_err());
        let runtime = crate::runtime(1).unwrap();
        assert_eq!(runtime.block_on(async { crate::runtime_threads() }), 1);
    }
}
