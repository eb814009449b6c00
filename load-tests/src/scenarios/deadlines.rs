//! `deadlines`: many open petitions whose response deadlines all fall due within one window.
//!
//! The server this tool starts gets a short `response_within` (the window plus a lead) and no
//! warning step, so the reminders are the only supervision steps of the run. The petitions are
//! created evenly over the window through the real protocol (residents of the demo county, each
//! petition addressed to a worker of the resident's grid), so their deadlines are spread over the
//! window too; the workers stay subscribed to their feeds throughout.
//!
//! Measured: for every reminder, how late it fired (the timeline entry's time minus the deadline,
//! on the server's clock) and how late it arrived (receipt minus the deadline, on this machine's
//! clock, which is the server's); that every petition got exactly one; and the server's memory
//! before the petitions exist, with all their deadlines tracked, and after the reminders fired.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use lianxin_client::Client;
use lianxin_protocol::v1::{Event, StepKind, entry, event};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{Ctx, Outcome};
use crate::accounts::{self, Account, PlannedPetition};
use crate::cli::DeadlinesArgs;
use crate::net;
use crate::procstat::{self, Sample};
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};
use crate::spawn::{self, ServerSetup};

/// The largest lateness a histogram holds, in microseconds (one hour); larger values are clamped.
const MAX_LATENESS_US: u64 = 3_600_000_000;

/// The goal for the 99th percentile of reminder lateness.
const GOAL_P99_US: u64 = 1_000_000;

/// The goal for the server's memory per tracked deadline, in bytes.
const GOAL_BYTES_PER_DEADLINE: f64 = 300.0;

/// glibc's mmap threshold for the started server (see `--malloc-defaults`).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=1048576";

/// The configuration file of the server this scenario starts: deadlines `window + lead` after
/// submission, no warning step (only reminders fall due in the run), the given tick.
pub fn server_config(args: &DeadlinesArgs) -> String {
    let mut text = format!("supervision_tick_ms = {}\n", args.tick_ms);
    if let Some(idle) = args.petition_idle_secs {
        text.push_str(&format!("petition_idle_secs = {idle}\n"));
    }
    if let Some(mb) = args.cache_capacity_mb {
        text.push_str(&format!("cache_capacity_mb = {mb}\n"));
    }
    text.push_str(&format!(
        "\n[supervision.default]\nresponse_within = \"{}s\"\n\
         \n[supervision.default.response_ladder]\nwarning_before = \"off\"\n",
        args.window_secs + args.lead_secs
    ));
    text
}

/// The configuration file and environment of the server this scenario starts.
pub fn server_setup(args: &DeadlinesArgs) -> ServerSetup {
    let mut env = Vec::new();
    if !args.malloc_defaults {
        env.push(("GLIBC_TUNABLES".to_owned(), MALLOC_TUNABLES.to_owned()));
    }
    ServerSetup {
        config: Some(server_config(args)),
        env,
        data_dir: None,
    }
}

/// Microseconds since the Unix epoch on this machine's clock.
fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A lateness histogram in microseconds, from 1 µs to one hour.
fn lateness_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENESS_US, 3).context("creating a lateness histogram")
}

/// Records a lateness in microseconds (clamped to 1 µs .. one hour).
fn record_lateness(hist: &mut Histogram<u64>, us: i64) {
    let us = u64::try_from(us).unwrap_or(0).clamp(1, MAX_LATENESS_US);
    hist.saturating_record(us);
}

/// When the `i`-th of `n` petitions is submitted, `window` after the first spread evenly.
pub fn submit_offset(i: usize, n: usize, window: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = window.as_nanos() * i as u128 / n as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A supervision step seen in a worker's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The petition.
    pub petition_id: u64,
    /// The step (`StepKind` as a number).
    pub step: i32,
    /// The step entry's time, on the server's clock (ms since the epoch).
    pub at_ms: i64,
    /// The deadline the step is about (ms since the epoch).
    pub due_at_ms: i64,
    /// When this tool read it (µs since the epoch).
    pub received_us: i64,
}

/// The supervision step an event carries, if it carries one.
pub fn supervision_of(e: &Event, received_us: i64) -> Option<Seen> {
    let Some(event::Kind::EntryAdded(added)) = &e.kind else {
        return None;
    };
    let entry = added.entry.as_ref()?;
    let Some(entry::Body::Supervision(notice)) = &entry.body else {
        return None;
    };
    Some(Seen {
        petition_id: entry.petition_id,
        step: notice.step,
        at_ms: entry.at_ms,
        due_at_ms: notice.due_at_ms,
        received_us,
    })
}

/// Tallies the reminders of the petitions a run created.
#[derive(Debug)]
pub struct Tally {
    /// Deadline of every created petition, by id.
    expected: HashMap<u64, i64>,
    /// Reminders received per petition.
    reminders: HashMap<u64, u32>,
    /// Firing lateness (entry time − deadline), first reminder of each petition, µs.
    fired: Histogram<u64>,
    /// Arrival lateness (receipt − deadline), first reminder of each petition, µs.
    arrived: Histogram<u64>,
    /// Reminders of petitions this run did not create.
    unexpected: u64,
    /// Reminders whose deadline differs from the petition's.
    due_mismatch: u64,
    /// Reminders stamped before their deadline.
    early: u64,
    /// Other supervision steps seen, by step name.
    other_steps: BTreeMap<String, u64>,
    /// When the first and the last reminder arrived (µs since the epoch).
    first_last_us: Option<(i64, i64)>,
}

impl Tally {
    /// A tally expecting one reminder for each of `expected` (petition id → deadline).
    pub fn new(expected: HashMap<u64, i64>) -> anyhow::Result<Tally> {
        Ok(Tally {
            expected,
            reminders: HashMap::new(),
            fired: lateness_histogram()?,
            arrived: lateness_histogram()?,
            unexpected: 0,
            due_mismatch: 0,
            early: 0,
            other_steps: BTreeMap::new(),
            first_last_us: None,
        })
    }

    /// Takes one supervision step seen in a feed.
    pub fn see(&mut self, s: &Seen) {
        if s.step != StepKind::Reminder as i32 {
            let name = StepKind::try_from(s.step).map_or_else(
                |_| format!("step {}", s.step),
                |k| k.as_str_name().to_owned(),
            );
            *self.other_steps.entry(name).or_default() += 1;
            return;
        }
        let Some(&due) = self.expected.get(&s.petition_id) else {
            self.unexpected += 1;
            return;
        };
        let count = self.reminders.entry(s.petition_id).or_default();
        *count += 1;
        if *count > 1 {
            return;
        }
        if s.due_at_ms != due {
            self.due_mismatch += 1;
        }
        if s.at_ms < s.due_at_ms {
            self.early += 1;
        }
        record_lateness(
            &mut self.fired,
            (s.at_ms - s.due_at_ms).saturating_mul(1000),
        );
        record_lateness(
            &mut self.arrived,
            s.received_us - s.due_at_ms.saturating_mul(1000),
        );
        self.first_last_us = Some(match self.first_last_us {
            None => (s.received_us, s.received_us),
            Some((a, b)) => (a.min(s.received_us), b.max(s.received_us)),
        });
    }

    /// Petitions reminded at least once.
    pub fn reminded(&self) -> usize {
        self.reminders.len()
    }

    /// Created petitions that got no reminder.
    pub fn missing(&self) -> usize {
        self.expected.len() - self.reminders.len()
    }

    /// Petitions reminded more than once.
    pub fn doubled(&self) -> usize {
        self.reminders.values().filter(|c| **c > 1).count()
    }

    /// Whether every created petition got exactly one reminder and nothing else was seen.
    pub fn clean(&self) -> bool {
        self.missing() == 0
            && self.doubled() == 0
            && self.unexpected == 0
            && self.due_mismatch == 0
            && self.early == 0
            && self.other_steps.is_empty()
    }
}

/// The server's state at one moment of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Reading {
    /// Seconds since the run started.
    pub at_secs: f64,
    /// Resident memory of the server process.
    pub rss_bytes: Option<u64>,
    /// CPU seconds the server process has used.
    pub cpu_secs: Option<f64>,
    /// Running petition actors (`lianxin_petition_actors`).
    pub petition_actors: Option<f64>,
    /// Petitions with a pending supervision step (`lianxin_pending_steps`).
    pub pending_steps: Option<f64>,
}

fn metrics_addr(url: &str) -> Option<SocketAddr> {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|a| a.parse().ok())
}

async fn read(ctx: &Ctx<'_>, started: Instant) -> Reading {
    let snapshot = ctx.snapshot();
    let mut reading = Reading {
        at_secs: started.elapsed().as_secs_f64(),
        rss_bytes: snapshot.map(|s| s.rss_bytes),
        cpu_secs: snapshot.map(|s| s.cpu_secs),
        ..Reading::default()
    };
    if let Some(addr) = metrics_addr(&ctx.url)
        && let Ok((200, body)) = spawn::http_get(addr, "/metrics").await
    {
        // A gauge shows only once it has been set: absent means none yet.
        reading.petition_actors =
            Some(spawn::plain_metric(&body, "lianxin_petition_actors").unwrap_or(0.0));
        reading.pending_steps = spawn::plain_metric(&body, "lianxin_pending_steps");
    }
    reading
}

/// How a worker's feed connection ended.
#[derive(Debug, Default)]
struct ListenerEnd {
    events: u64,
    error: Option<String>,
}

/// Holds one worker's feed open, passing on every supervision step it carries.
async fn listen(
    url: String,
    account: Account,
    ready: mpsc::Sender<Result<(), String>>,
    seen: mpsc::UnboundedSender<Seen>,
    mut stop: watch::Receiver<bool>,
) -> ListenerEnd {
    let mut end = ListenerEnd::default();
    let connected = async {
        let client = Client::connect(&url, net::client_options(None, Some(&account.token)))
            .await
            .map_err(|e| format!("{}: {e}", account.login))?;
        client
            .subscribe(account.head)
            .await
            .map_err(|e| format!("{}: {e}", account.login))?;
        Ok::<_, String>(client)
    }
    .await;
    let mut client = match connected {
        Ok(client) => {
            let _ = ready.send(Ok(())).await;
            client
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone())).await;
            end.error = Some(e);
            return end;
        }
    };
    drop(ready);
    loop {
        tokio::select! {
            event = client.next_event() => match event {
                Some(e) => {
                    end.events += 1;
                    if let Some(s) = supervision_of(&e, unix_micros()) {
                        let _ = seen.send(s);
                    }
                }
                None => {
                    end.error = Some(format!("{}: feed closed: {:?}", account.login, client.close_reason()));
                    break;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    end
}

/// A petition created by the run.
#[derive(Debug, Clone, Copy)]
struct Created {
    id: u64,
    due_ms: i64,
}

/// What one submitting connection did.
#[derive(Debug)]
struct Submitted {
    created: Vec<Created>,
    latency: Histogram<u64>,
    /// How far behind its schedule each submission started.
    lag: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One submitting connection's share: its resident's token and its petitions (index, plan).
struct Share {
    token: String,
    petitions: Vec<(usize, PlannedPetition)>,
}

/// The submission schedule shared by every connection.
#[derive(Clone)]
struct Schedule {
    url: String,
    run_id: String,
    accounts: Arc<HashMap<String, Account>>,
    t0: Instant,
    n: usize,
    window: Duration,
    bar: ProgressBar,
}

async fn submit_share(schedule: Schedule, share: Share) -> Submitted {
    let mut out = Submitted {
        created: Vec::with_capacity(share.petitions.len()),
        latency: report::latency_histogram(),
        lag: report::latency_histogram(),
        errors: 0,
        first_error: None,
    };
    let client =
        match Client::connect(&schedule.url, net::client_options(None, Some(&share.token))).await {
            Ok(c) => c,
            Err(e) => {
                out.errors = share.petitions.len() as u64;
                out.first_error = Some(format!("connecting: {e}"));
                schedule.bar.inc(share.petitions.len() as u64);
                return out;
            }
        };
    for (i, plan) in share.petitions {
        let at = schedule.t0 + submit_offset(i, schedule.n, schedule.window);
        tokio::time::sleep_until(at.into()).await;
        let start = Instant::now();
        report::record(&mut out.lag, start.saturating_duration_since(at));
        let result = match accounts::submit_request(
            &plan,
            &schedule.accounts,
            format!("{}-d{i}", schedule.run_id),
        ) {
            Ok(request) => client
                .submit_petition(request)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(petition) => {
                report::record(&mut out.latency, start.elapsed());
                out.created.push(Created {
                    id: petition.id,
                    due_ms: petition.response_due_at_ms,
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
        schedule.bar.inc(1);
    }
    out
}

/// Splits the plan into per-connection shares: each resident's petitions, in order, dealt out
/// over `per_resident` connections.
fn shares(
    plan: &[PlannedPetition],
    accounts: &HashMap<String, Account>,
    per_resident: usize,
) -> anyhow::Result<Vec<Share>> {
    let mut by_resident: BTreeMap<&str, Vec<(usize, PlannedPetition)>> = BTreeMap::new();
    for (i, p) in plan.iter().enumerate() {
        by_resident
            .entry(p.resident.as_str())
            .or_default()
            .push((i, p.clone()));
    }
    let mut out = Vec::new();
    for (resident, petitions) in by_resident {
        let token = accounts
            .get(resident)
            .with_context(|| format!("{resident} is not signed in"))?
            .token
            .clone();
        let k = per_resident.clamp(1, petitions.len().max(1));
        let mut split: Vec<Vec<(usize, PlannedPetition)>> = vec![Vec::new(); k];
        for (j, p) in petitions.into_iter().enumerate() {
            split[j % k].push(p);
        }
        out.extend(split.into_iter().map(|petitions| Share {
            token: token.clone(),
            petitions,
        }));
    }
    Ok(out)
}

/// The server's memory per additional petition while the second half of the petitions were
/// created: the least-squares slope of RSS over the petitions created by then (following the
/// schedule), in bytes. Unlike the average, it leaves out what fills once and then stays (sled's
/// page cache up to its bound, runtime and allocator start-up).
pub fn marginal_bytes_per_petition(
    samples: &[Sample],
    start_secs: f64,
    window_secs: f64,
    n: usize,
) -> Option<f64> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| {
            s.t_secs >= start_secs + window_secs / 2.0 && s.t_secs <= start_secs + window_secs
        })
        .map(|s| {
            let done = ((s.t_secs - start_secs) / window_secs).clamp(0.0, 1.0);
            (done * n as f64, s.snapshot.rss_bytes as f64)
        })
        .collect();
    if points.len() < 5 {
        return None;
    }
    procstat::linear_slope(&points)
}

fn per_deadline(after: Option<u64>, before: Option<u64>, n: usize) -> Option<f64> {
    let (a, b) = (after?, before?);
    (n > 0).then(|| (a as f64 - b as f64) / n as f64)
}

/// Runs `deadlines`.
pub async fn run(ctx: &Ctx<'_>, args: &DeadlinesArgs) -> anyhow::Result<Outcome> {
    if ctx.is_relay() {
        bail!("the bare relay has no deadlines: run `deadlines` against the server only");
    }
    let started = Instant::now();
    let n = usize::try_from(args.petitions).context("too many petitions")?;
    let window = Duration::from_secs(args.window_secs);
    let plan = accounts::plan_petitions(n);
    let logins: Vec<String> = plan
        .iter()
        .flat_map(|p| [p.resident.clone(), p.worker.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let workers: BTreeSet<&str> = plan.iter().map(|p| p.worker.as_str()).collect();
    progress::note(&format!(
        "{n} petitions created over {} s, due {} s after creation; {} accounts sign in",
        args.window_secs,
        args.window_secs + args.lead_secs,
        logins.len()
    ));
    let run_id = accounts::run_id();
    let signed = accounts::sign_in_all(&ctx.url, &logins).await?;

    // 1. Every worker subscribes to their feed.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::channel(workers.len().max(1));
    let mut listeners = Vec::with_capacity(workers.len());
    for w in &workers {
        let account = signed
            .get(*w)
            .with_context(|| format!("{w} is not signed in"))?
            .clone();
        listeners.push(tokio::spawn(listen(
            ctx.url.clone(),
            account,
            ready_tx.clone(),
            seen_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);
    drop(seen_tx);
    let mut listen_failures = Vec::new();
    for _ in 0..workers.len() {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => listen_failures.push(e),
            None => break,
        }
    }
    if !listen_failures.is_empty() {
        bail!(
            "{} of {} worker feeds could not be opened; first: {}",
            listen_failures.len(),
            workers.len(),
            listen_failures[0]
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = read(ctx, started).await;

    // 2. The petitions, evenly over the window.
    let shares = shares(&plan, &signed, args.connections_per_resident as usize)?;
    let connections = shares.len();
    let bar = progress::counter(n as u64, "creating petitions");
    let schedule = Schedule {
        url: ctx.url.clone(),
        run_id,
        accounts: Arc::new(signed),
        t0: Instant::now() + Duration::from_millis(200),
        n,
        window,
        bar: bar.clone(),
    };
    let creation_start_ms = unix_micros() / 1000;
    let creation_sampler_secs = ctx.sampler_secs() + 0.2;
    let t_create = Instant::now();
    let results = join_all(
        shares
            .into_iter()
            .map(|share| tokio::spawn(submit_share(schedule.clone(), share))),
    )
    .await;
    let creation_secs = t_create.elapsed().as_secs_f64();
    let creation_end_ms = unix_micros() / 1000;
    bar.finish_and_clear();
    let mut created = Vec::with_capacity(n);
    let mut submit_latency = report::latency_histogram();
    let mut submit_lag = report::latency_histogram();
    let mut submit_errors = 0u64;
    let mut first_submit_error = None;
    for r in results {
        let r = r.context("a submitting task failed")?;
        created.extend(r.created);
        submit_latency
            .add(&r.latency)
            .context("merging histograms")?;
        submit_lag.add(&r.lag).context("merging histograms")?;
        submit_errors += r.errors;
        if first_submit_error.is_none() {
            first_submit_error = r.first_error;
        }
    }
    let expected: HashMap<u64, i64> = created.iter().map(|c| (c.id, c.due_ms)).collect();
    let first_due = created.iter().map(|c| c.due_ms).min().unwrap_or(0);
    let last_due = created.iter().map(|c| c.due_ms).max().unwrap_or(0);
    progress::note(&format!(
        "{} petitions created in {creation_secs:.1} s ({submit_errors} errors); deadlines span {:.1} s",
        created.len(),
        (last_due - first_due) as f64 / 1000.0
    ));

    // 3. Every deadline tracked, none due yet (when creation kept to its schedule).
    let until_first_due_ms = first_due - unix_micros() / 1000;
    if until_first_due_ms > 1500 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let tracked = read(ctx, started).await;
    let marginal = marginal_bytes_per_petition(
        &ctx.samples_since(creation_sampler_secs),
        creation_sampler_secs,
        window.as_secs_f64(),
        n,
    );
    let tracked_before_first_due = unix_micros() / 1000 < first_due;

    // 4. The reminders.
    let mut tally = Tally::new(expected)?;
    let wait_ms = u64::try_from(last_due - unix_micros() / 1000).unwrap_or(0);
    let wait_until =
        Instant::now() + Duration::from_millis(wait_ms) + Duration::from_secs(args.drain_secs);
    let bar = progress::counter(created.len() as u64, "waiting for reminders");
    while tally.reminded() < created.len() {
        match tokio::time::timeout_at(wait_until.into(), seen_rx.recv()).await {
            Ok(Some(s)) => {
                let had = tally.reminded();
                tally.see(&s);
                if tally.reminded() > had {
                    bar.inc(1);
                }
            }
            _ => break,
        }
    }
    bar.finish_and_clear();
    // A little longer, so that a reminder fired twice shows.
    let grace_until = Instant::now() + Duration::from_millis(2 * args.tick_ms + 1000);
    while let Ok(Some(s)) = tokio::time::timeout_at(grace_until.into(), seen_rx.recv()).await {
        tally.see(&s);
    }
    let fired = read(ctx, started).await;
    let settled = if args.settle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        Some(read(ctx, started).await)
    } else {
        None
    };
    let _ = stop_tx.send(true);
    let mut listener_events = 0u64;
    let mut listener_errors = Vec::new();
    for l in join_all(listeners).await {
        match l {
            Ok(end) => {
                listener_events += end.events;
                listener_errors.extend(end.error);
            }
            Err(e) => listener_errors.push(e.to_string()),
        }
    }

    // 5. Figures.
    let count = created.len();
    let fired_lateness = LatencySummary::of(&tally.fired);
    let arrived_lateness = LatencySummary::of(&tally.arrived);
    let per_tracked = per_deadline(tracked.rss_bytes, before.rss_bytes, count);
    let per_fired = per_deadline(fired.rss_bytes, before.rss_bytes, count);
    let per_settled = settled.and_then(|s| per_deadline(s.rss_bytes, before.rss_bytes, count));
    let firing_secs = tally
        .first_last_us
        .map_or(0.0, |(a, b)| (b - a) as f64 / 1e6);
    let firing_cores = match (fired.cpu_secs, tracked.cpu_secs) {
        (Some(a), Some(b)) if fired.at_secs > tracked.at_secs => {
            Some((a - b) / (fired.at_secs - tracked.at_secs))
        }
        _ => None,
    };
    let mut metrics = vec![
        Metric::new(
            "petitions",
            "petitions created",
            count as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "submit_errors",
            "submissions refused or failed",
            submit_errors as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "due_spread_secs",
            "deadlines span",
            (last_due - first_due) as f64 / 1000.0,
            Unit::Seconds,
            Better::Neither,
        ),
        Metric::new(
            "reminded",
            "petitions reminded",
            tally.reminded() as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "missing_reminders",
            "petitions without a reminder",
            tally.missing() as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "doubled_reminders",
            "petitions reminded more than once",
            tally.doubled() as f64,
            Unit::Count,
            Better::Lower,
        ),
    ];
    metrics.extend(fired_lateness.metrics("lateness", "reminder fired late by"));
    metrics.extend(arrived_lateness.metrics("arrival", "reminder arrived late by"));
    metrics.push(Metric::new(
        "reminders_per_sec",
        "reminders delivered per second",
        if firing_secs > 0.0 {
            tally.reminded() as f64 / firing_secs
        } else {
            0.0
        },
        Unit::PerSec,
        Better::Higher,
    ));
    let mut push_bytes = |name: &str, label: &str, v: Option<f64>| {
        if let Some(v) = v {
            metrics.push(Metric::new(name, label, v, Unit::Bytes, Better::Lower));
        }
    };
    push_bytes(
        "rss_before_bytes",
        "server RSS before the petitions",
        before.rss_bytes.map(|b| b as f64),
    );
    push_bytes(
        "rss_tracked_bytes",
        "server RSS, every deadline tracked",
        tracked.rss_bytes.map(|b| b as f64),
    );
    push_bytes(
        "rss_per_deadline_bytes",
        "server RSS per tracked deadline",
        per_tracked,
    );
    push_bytes(
        "rss_marginal_per_deadline_bytes",
        "server RSS per additional tracked deadline",
        marginal,
    );
    push_bytes(
        "rss_fired_bytes",
        "server RSS after the reminders",
        fired.rss_bytes.map(|b| b as f64),
    );
    push_bytes(
        "rss_per_petition_fired_bytes",
        "server RSS per petition after the reminders",
        per_fired,
    );
    push_bytes(
        "rss_per_petition_settled_bytes",
        "server RSS per petition after settling",
        per_settled,
    );
    let mut push_count = |name: &str, label: &str, v: Option<f64>| {
        if let Some(v) = v {
            metrics.push(Metric::new(name, label, v, Unit::Count, Better::Neither));
        }
    };
    push_count(
        "pending_steps_tracked",
        "pending supervision steps (tracked)",
        tracked.pending_steps,
    );
    push_count(
        "petition_actors_tracked",
        "petition actors (tracked)",
        tracked.petition_actors,
    );
    push_count(
        "petition_actors_fired",
        "petition actors after the reminders",
        fired.petition_actors,
    );
    push_count(
        "petition_actors_settled",
        "petition actors after settling",
        settled.and_then(|s| s.petition_actors),
    );
    if let Some(c) = firing_cores {
        metrics.push(Metric::new(
            "firing_cpu_cores",
            "server CPU while reminders fired",
            c,
            Unit::Cores,
            Better::Lower,
        ));
    }

    let mut notes = Vec::new();
    if !tally.clean() {
        notes.push(format!(
            "NOT every petition got exactly one reminder: {} missing, {} doubled, {} unexpected, \
             {} with another deadline, {} stamped early, other steps {:?}",
            tally.missing(),
            tally.doubled(),
            tally.unexpected,
            tally.due_mismatch,
            tally.early,
            tally.other_steps
        ));
    }
    if submit_errors > 0 {
        notes.push(format!(
            "{submit_errors} submissions failed; first: {}",
            first_submit_error.unwrap_or_default()
        ));
    }
    if !listener_errors.is_empty() {
        notes.push(format!(
            "{} worker feeds ended early; first: {}",
            listener_errors.len(),
            listener_errors[0]
        ));
    }
    if creation_end_ms >= first_due {
        notes.push(format!(
            "creation ran {:.1} s past the first deadline: the first reminders fired while \
             petitions were still being created (raise --lead-secs or lower --petitions)",
            (creation_end_ms - first_due) as f64 / 1000.0
        ));
    }
    if !tracked_before_first_due {
        notes.push(
            "the 'tracked' memory reading was taken after the first deadline (see above)"
                .to_owned(),
        );
    }
    if (last_due - first_due) as f64 > window.as_secs_f64() * 1000.0 * 1.1 {
        notes.push(format!(
            "the deadlines span {:.1} s, more than the {} s window: submissions fell behind \
             their schedule (max lag {})",
            (last_due - first_due) as f64 / 1000.0,
            args.window_secs,
            report::format_us(submit_lag.max() as f64)
        ));
    }
    if count > 0 {
        let p99_ok = fired_lateness.p99_us < GOAL_P99_US;
        notes.push(format!(
            "goal p99 lateness < 1 s: {} (p99 {})",
            if p99_ok { "met" } else { "MISSED" },
            report::format_us(fired_lateness.p99_us as f64)
        ));
        let verdict = |b: f64| {
            if b < GOAL_BYTES_PER_DEADLINE {
                "met"
            } else {
                "MISSED"
            }
        };
        if let Some(b) = per_tracked {
            notes.push(format!(
                "goal < {GOAL_BYTES_PER_DEADLINE:.0} B of server memory per tracked deadline, \
                 whole process on average: {} ({b:.0} B)",
                verdict(b)
            ));
        }
        if let Some(b) = marginal {
            notes.push(format!(
                "goal < {GOAL_BYTES_PER_DEADLINE:.0} B of server memory per tracked deadline, \
                 whole process per additional deadline (slope over the second half of the \
                 creation): {} ({b:.0} B)",
                verdict(b)
            ));
        }
    }
    notes.push(
        "RSS per tracked deadline = (RSS with every deadline tracked − RSS before the \
         petitions) / petitions: it holds everything the petitions cost the process, not the \
         supervisor alone (the supervisor keeps deadlines in the storage index and holds none in \
         memory): sled's page cache and bookkeeping for the petitions, timelines, feeds and \
         indexes (which grow to a plateau set by cache_capacity_mb, then stay), the allocator's \
         retained pages, and the petition actors running then (petition_actors_tracked). The \
         per-additional-deadline figure is the RSS slope over the second half of the creation, \
         past most of that one-off fill. After the reminders the petition actors they started \
         are in it too while they run (petition_actors_fired), and freed memory the allocator \
         keeps afterwards."
            .to_owned(),
    );
    if !args.malloc_defaults && ctx.pid.is_some() {
        notes.push(format!(
            "the server ran with GLIBC_TUNABLES={MALLOC_TUNABLES} (--malloc-defaults turns it \
             off): with glibc's adaptive threshold the sign-ins' argon2 buffers (19 MiB each) stay \
             in the process, inflating the 'before' reading by hundreds of MiB"
        ));
    }
    notes.push(
        "lateness = the reminder entry's time − its deadline, both on the server's clock; it \
         includes up to one supervision tick of waiting. arrival = when this tool read the \
         event − the deadline (same machine, same clock)"
            .to_owned(),
    );

    let params = json!({
        "petitions": args.petitions,
        "window_secs": args.window_secs,
        "lead_secs": args.lead_secs,
        "response_within_secs": args.window_secs + args.lead_secs,
        "tick_ms": args.tick_ms,
        "connections_per_resident": args.connections_per_resident,
        "submit_connections": connections,
        "worker_feeds": workers.len(),
        "drain_secs": args.drain_secs,
        "settle_secs": args.settle_secs,
        "server_config": server_config(args),
        "server_env": server_setup(args).env,
    });
    let details = json!({
        "readings": { "before": before, "tracked": tracked, "fired": fired, "settled": settled },
        "creation": {
            "secs": creation_secs,
            "started_unix_ms": creation_start_ms,
            "ended_unix_ms": creation_end_ms,
            "submit_latency": LatencySummary::of(&submit_latency),
            "schedule_lag": LatencySummary::of(&submit_lag),
            "errors": submit_errors,
        },
        "deadlines": { "first_unix_ms": first_due, "last_unix_ms": last_due },
        "reminders": {
            "fired_lateness": fired_lateness,
            "arrival_lateness": arrived_lateness,
            "reminded": tally.reminded(),
            "missing": tally.missing(),
            "doubled": tally.doubled(),
            "unexpected": tally.unexpected,
            "due_mismatch": tally.due_mismatch,
            "early": tally.early,
            "other_steps": tally.other_steps,
            "delivery_secs": firing_secs,
            "clean": tally.clean(),
        },
        "worker_feed_events": listener_events,
        "worker_feed_errors": listener_errors,
    });
    Ok(Outcome {
        params,
        metrics,
        details,
        notes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{Entry, EntryAdded, SupervisionNotice};

    fn seen(petition_id: u64, step: StepKind, at_ms: i64, due_at_ms: i64) -> Seen {
        Seen {
            petition_id,
            step: step as i32,
            at_ms,
            due_at_ms,
            received_us: (at_ms + 5) * 1000,
        }
    }

    fn sample(t_secs: f64, rss_bytes: u64) -> Sample {
        Sample {
            t_secs,
            snapshot: procstat::Snapshot {
                cpu_secs: 0.0,
                rss_bytes,
                hwm_bytes: rss_bytes,
                disk_write_bytes: None,
            },
        }
    }

    #[test]
    fn the_marginal_cost_leaves_out_what_fills_once() {
        // 1000 petitions over 10 s from t = 2: memory jumps by 50 MB early, then grows by
        // 100 B per petition.
        let samples: Vec<Sample> = (0..=14)
            .map(|t| {
                let done = ((f64::from(t) - 2.0) / 10.0).clamp(0.0, 1.0) * 1000.0;
                let fill = if t >= 3 { 50_000_000 } else { 0 };
                sample(f64::from(t), 10_000_000 + fill + (done as u64) * 100)
            })
            .collect();
        let b = marginal_bytes_per_petition(&samples, 2.0, 10.0, 1000).unwrap();
        assert!((b - 100.0).abs() < 1.0, "{b}");
        assert!(marginal_bytes_per_petition(&samples[..3], 2.0, 10.0, 1000).is_none());
    }

    #[test]
    fn submissions_spread_evenly_over_the_window() {
        let w = Duration::from_secs(60);
        assert_eq!(submit_offset(0, 100_000, w), Duration::ZERO);
        assert_eq!(submit_offset(50_000, 100_000, w), Duration::from_secs(30));
        assert!(submit_offset(99_999, 100_000, w) < w);
        assert_eq!(submit_offset(3, 0, w), Duration::ZERO);
    }

    #[test]
    fn the_tally_counts_each_petition_once_and_flags_the_rest() {
        let expected = HashMap::from([(1, 1000), (2, 2000), (3, 3000)]);
        let mut t = Tally::new(expected).unwrap();
        t.see(&seen(1, StepKind::Reminder, 1100, 1000));
        t.see(&seen(2, StepKind::Reminder, 2300, 2000));
        assert_eq!((t.reminded(), t.missing(), t.doubled()), (2, 1, 0));
        assert!(!t.clean());
        t.see(&seen(3, StepKind::Reminder, 3000, 3000));
        assert!(t.clean());
        assert!(
            (299_000..=301_000).contains(&t.fired.max()),
            "{}",
            t.fired.max()
        );
        assert_eq!(t.fired.len(), 3);
        // Lateness 0 is recorded as 1 µs.
        assert_eq!(t.fired.min(), 1);
        t.see(&seen(2, StepKind::Reminder, 2600, 2000));
        assert_eq!(t.doubled(), 1);
        assert_eq!(t.fired.len(), 3, "only the first reminder is timed");
        t.see(&seen(9, StepKind::Reminder, 10, 10));
        t.see(&seen(1, StepKind::Warning, 900, 1000));
        assert_eq!(t.unexpected, 1);
        assert_eq!(t.other_steps.get("STEP_KIND_WARNING"), Some(&1));
        assert!(!t.clean());
    }

    #[test]
    fn only_supervision_entries_count() {
        let notice = SupervisionNotice {
            step: StepKind::Reminder as i32,
            due_at_ms: 500,
            ..Default::default()
        };
        let e = Event {
            cursor: 7,
            at_ms: 600,
            kind: Some(event::Kind::EntryAdded(EntryAdded {
                entry: Some(Entry {
                    petition_id: 42,
                    at_ms: 550,
                    body: Some(entry::Body::Supervision(notice)),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let s = supervision_of(&e, 777).unwrap();
        assert_eq!(
            (s.petition_id, s.at_ms, s.due_at_ms, s.received_us),
            (42, 550, 500, 777)
        );
        let plain = Event {
            cursor: 8,
            at_ms: 600,
            kind: None,
        };
        assert!(supervision_of(&plain, 1).is_none());
    }

    #[test]
    fn the_server_gets_short_deadlines_and_no_warning() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["lianxin-load", "deadlines"]);
        let Ok(crate::cli::Cli {
            command: crate::cli::Command::Deadlines(args),
            ..
        }) = cli
        else {
            panic!("deadlines parses");
        };
        let text = server_config(&args);
        assert!(text.contains("response_within = \"80s\""), "{text}");
        assert!(text.contains("warning_before = \"off\""), "{text}");
        assert!(text.contains("supervision_tick_ms = 250"), "{text}");
    }
}
