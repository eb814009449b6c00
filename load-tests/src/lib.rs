//! Load generator for the Lianxin server, and the bare relay it compares with.
//!
//! Every scenario speaks the real protocol over real WebSockets (through `lianxin-client`, and a
//! raw tokio-tungstenite connection for the open-loop senders), measures with HDR histograms in
//! microseconds, reads the target's CPU and memory from `/proc`, prints a table on stdout and
//! writes a JSON report. See `load-tests/README.md` for the scenarios and how to read the figures.
//!
//! - [`cli`]: the command line.
//! - [`spawn`] and [`target`]: starting the server or the relay, and stopping it.
//! - [`procstat`]: `/proc` readings and the per-second sampler.
//! - [`report`]: percentiles, figures, the table, the JSON report and the comparison.
//! - [`relay`]: the bare relay.
//! - [`scenarios`]: idle, steady, storm, soak, deadlines, crash.

pub mod accounts;
pub mod cli;
pub mod net;
pub mod procstat;
pub mod progress;
pub mod relay;
pub mod report;
pub mod scenarios;
pub mod schedule;
pub mod spawn;
pub mod target;

/// The worker threads of the runtime this is called on (1 outside a multi-threaded runtime).
pub fn runtime_threads() -> usize {
    tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers())
}

/// Builds this process's runtime: `threads` workers, or one per core with 0.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match &cli.command {
        cli::Command::Relay(args) => {
            net::raise_nofile_limit();
            relay::run(args.listen, !args.no_nodelay).await
        }
        command => scenarios::run(command).await.map(|_| ()),
    }
}
