//! The scenarios, and running one against a target (or against both the server and the bare
//! relay) into a report.

pub mod crash;
pub mod deadlines;
pub mod idle;
pub mod soak;
pub mod startup;
pub mod steady;
pub mod storm;
pub mod uploads;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::{Command, CommonArgs};
use crate::net;
use crate::procstat::{self, Sample, Sampler};
use crate::progress;
use crate::report::{self, Metric, Report};
use crate::spawn::ServerSetup;
use crate::target::{Kind, Target};

/// What a scenario hands back.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Its settings (after capping).
    pub params: serde_json::Value,
    /// Key figures, in display order.
    pub metrics: Vec<Metric>,
    /// Everything else it measured.
    pub details: serde_json::Value,
    /// Caveats.
    pub notes: Vec<String>,
}

/// What a scenario may use while it runs.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The target's WebSocket URL.
    pub url: String,
    /// `server`, `relay` or `external`.
    pub label: &'static str,
    /// The target's process, when this tool started it.
    pub pid: Option<u32>,
    /// The common options.
    pub common: &'a CommonArgs,
    /// This process's open-file limit.
    pub nofile: u64,
    /// Samples the target's process every second.
    pub sampler: Option<&'a Sampler>,
    /// Seconds the target took from its start until it answered, when this tool started it.
    pub ready_secs: Option<f64>,
}

impl Ctx<'_> {
    /// A reading of the target's process now (also recorded as a sample).
    pub fn snapshot(&self) -> Option<procstat::Snapshot> {
        self.sampler?.sample_now()
    }

    /// Seconds on the sampler's clock (0 without a sampler).
    pub fn sampler_secs(&self) -> f64 {
        self.sampler.map_or(0.0, Sampler::elapsed_secs)
    }

    /// Samples of the target taken since `t` on the sampler's clock.
    pub fn samples_since(&self, t: f64) -> Vec<Sample> {
        self.sampler.map(|s| s.samples_since(t)).unwrap_or_default()
    }

    /// Source addresses for `connections` client sockets, not used before by this process and
    /// starting at a place that changes from one invocation to the next (closed sockets hold
    /// their ports in TIME_WAIT for a minute, so reusing the previous run's addresses can run out
    /// of local ports).
    pub fn sources(&self, connections: u64) -> net::SourceIps {
        static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
        let count = match self.common.source_ips {
            0 => net::auto_source_ips(connections),
            n => n,
        };
        let start = (report::unix_now() as usize).wrapping_add(std::process::id() as usize) % 250;
        let _ = NEXT.compare_exchange(usize::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
        let offset = NEXT.fetch_add(count, Ordering::Relaxed);
        net::SourceIps::for_target_from(&self.url, count, connections, offset)
    }

    /// Whether the target is the bare relay.
    pub fn is_relay(&self) -> bool {
        self.label.contains("relay")
    }
}

/// Runs a scenario command: once, or against both targets with `--compare`; prints the table on
/// stdout and writes the JSON report.
pub async fn run(command: &Command) -> anyhow::Result<PathBuf> {
    let common = command.common().context("not a scenario")?.clone();
    let nofile = net::raise_nofile_limit();
    let unix = report::unix_now();
    let path = common
        .report
        .clone()
        .unwrap_or_else(|| report::default_report_path(command.name(), unix));
    let mut stdout = std::io::stdout().lock();
    if common.compare {
        progress::note("run 1 of 2: against the Lianxin server");
        let ours = run_once(command, &common, Kind::Server, nofile).await?;
        progress::note("run 2 of 2: against the bare relay");
        let relay = run_once(command, &common, Kind::Relay, nofile).await?;
        let comparison = report::compare(ours, relay);
        writeln!(stdout, "{}", report::render_comparison(&comparison))?;
        report::write_json(&path, &comparison)?;
    } else {
        let kind = if common.relay {
            Kind::Relay
        } else {
            Kind::Server
        };
        let report = run_once(command, &common, kind, nofile).await?;
        writeln!(stdout, "{}", report::render(&report))?;
        report::write_json(&path, &report)?;
    }
    writeln!(stdout, "report: {}", path.display())?;
    Ok(path)
}

/// Runs a scenario once against one target and assembles its report.
pub async fn run_once(
    command: &Command,
    common: &CommonArgs,
    kind: Kind,
    nofile: u64,
) -> anyhow::Result<Report> {
    if let Command::Crash(a) = command {
        return crash::run(common, a).await;
    }
    let wall = Instant::now();
    let started_at_unix = report::unix_now();
    let machine_before = procstat::read_machine();
    let setup = match command {
        Command::Deadlines(a) => deadlines::server_setup(a),
        Command::Startup(a) => startup::server_setup(a),
        _ => ServerSetup::default(),
    };
    let mut target = Target::start(common, kind, &setup).await?;
    let sampler = target
        .pid
        .map(|pid| Sampler::start(Some(pid), Duration::from_secs(1)));
    let me = Sampler::start(None, Duration::from_secs(1));
    let ctx = Ctx {
        url: target.url.clone(),
        label: target.label,
        pid: target.pid,
        common,
        nofile,
        sampler: sampler.as_ref(),
        ready_secs: target.ready_secs,
    };
    let result = match command {
        Command::Idle(a) => idle::run(&ctx, a).await,
        Command::Steady(a) => steady::run(&ctx, &a.shape()).await,
        Command::Storm(a) => storm::run(&ctx, a).await,
        Command::Soak(a) => soak::run(&ctx, &a.shape()).await,
        Command::Deadlines(a) => deadlines::run(&ctx, a).await,
        Command::Startup(a) => startup::run(&ctx, a).await,
        Command::Uploads(a) => uploads::run(&ctx, a).await,
        Command::Crash(_) => Err(anyhow::anyhow!("the crash loop runs on its own")),
        Command::Relay(_) => Err(anyhow::anyhow!("the relay is not a scenario")),
    };
    let alive = target.check_alive();
    let server_samples = match sampler {
        Some(s) => s.stop().await,
        None => Vec::new(),
    };
    let my_samples = me.stop().await;
    let machine_after = procstat::read_machine();
    let info = target.info();
    target.stop().await;
    let outcome = result?;
    alive?;
    let mut details = outcome.details;
    if let Some(map) = details.as_object_mut() {
        map.insert(
            "server_samples".to_owned(),
            serde_json::to_value(&server_samples)?,
        );
    }
    let server_process = procstat::summarize(info.pid, &server_samples);
    let load_generator = procstat::summarize(Some(std::process::id()), &my_samples);
    let machine = match (machine_before, machine_after) {
        (Some(b), Some(a)) => {
            let ours = server_process.as_ref().map_or(0.0, |s| s.cpu_secs)
                + load_generator.as_ref().map_or(0.0, |s| s.cpu_secs);
            Some(procstat::machine_summary(
                b,
                a,
                wall.elapsed().as_secs_f64(),
                ours,
            ))
        }
        _ => None,
    };
    let mut notes = outcome.notes;
    if let Some(m) = &machine {
        if m.other_cores > 0.25 {
            notes.push(format!(
                "{:.2} cores of CPU time went to neither the target nor this process (other \
                 processes, or kernel work such as loopback softirqs and socket teardown)",
                m.other_cores
            ));
        }
        if m.listen_drops > 0 || m.listen_overflows > 0 {
            notes.push(format!(
                "the kernel dropped {} connection attempts at a full listen queue \
                 (ListenOverflows {}); those clients resent their SYN after 1 s",
                m.listen_drops, m.listen_overflows
            ));
        }
        if m.dirty_at_start_bytes > 256 * 1024 * 1024 {
            notes.push(format!(
                "{} of dirty page cache when the run started: writeback may slow the target's fsyncs",
                report::format_bytes(m.dirty_at_start_bytes as f64)
            ));
        }
    }
    let mut report = Report {
        scenario: command.name().to_owned(),
        server_process,
        target: info,
        started_at_unix,
        wall_secs: wall.elapsed().as_secs_f64(),
        params: outcome.params,
        metrics: outcome.metrics,
        figures: Default::default(),
        details,
        load_generator,
        load_generator_threads: crate::runtime_threads(),
        machine,
        notes,
    };
    report.notes.push(format!(
        "the load generator ({} runtime threads) shares the machine's cores with the target; \
             its own CPU use is in load_generator",
        report.load_generator_threads
    ));
    report.index_figures();
    Ok(report)
}
