//! `storm`: N subscribed connections all drop at once; while they are away the petitions'
//! participants exchange a burst of messages; then all N reconnect at once and resume from their
//! last cursor. Measured: the time until every client has caught up with its feed head, and that
//! each received exactly the cursors from its last one + 1 to the head, once each, in order.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lianxin_client::Client;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Ctx, Outcome};
use crate::accounts::{self, Account};
use crate::cli::StormArgs;
use crate::net;
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};

/// Where the storm stands; connection tasks follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hold,
    Disconnect,
    Reconnect(Instant),
    Finish,
}

/// Checks a feed's cursors: each must be the last one + 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CursorCheck {
    /// The last cursor seen.
    pub last: u64,
    /// Events received in order.
    pub in_order: u64,
    /// Cursors skipped (lost events).
    pub lost: u64,
    /// Events received again (a cursor not after the last).
    pub duplicates: u64,
}

impl CursorCheck {
    /// Starts after cursor `last`.
    pub fn after(last: u64) -> CursorCheck {
        CursorCheck {
            last,
            ..CursorCheck::default()
        }
    }

    /// Takes the next event's cursor.
    pub fn see(&mut self, cursor: u64) {
        if cursor == self.last + 1 {
            self.in_order += 1;
            self.last = cursor;
        } else if cursor <= self.last {
            self.duplicates += 1;
        } else {
            self.lost += cursor - self.last - 1;
            self.in_order += 1;
            self.last = cursor;
        }
    }
}

/// What one connection saw.
#[derive(Debug, Clone, Default)]
struct ConnReport {
    reconnected: bool,
    caught_up: bool,
    reconnect_attempts: u32,
    /// Reconnect + subscribe, from this client's own reconnect start.
    reconnect: Option<Duration>,
    /// Caught up, from this client's own reconnect start.
    caught_up_after: Option<Duration>,
    /// Caught up, from the storm's start.
    caught_up_since_storm: Option<Duration>,
    before: CursorCheck,
    after: CursorCheck,
    head: u64,
    error: Option<String>,
}

struct ConnSetup {
    url: String,
    account: Account,
    local: Option<IpAddr>,
    deadline: Duration,
    /// How long after the storm's start this client reconnects.
    delay: Duration,
}

async fn connect(setup: &ConnSetup, after: u64) -> Result<(Client, u64), String> {
    let options = net::client_options(setup.local, Some(&setup.account.token));
    let client = Client::connect(&setup.url, options)
        .await
        .map_err(|e| e.to_string())?;
    let head = client
        .subscribe(after)
        .await
        .map_err(|e| e.to_string())?
        .head_cursor;
    Ok((client, head))
}

async fn storm_conn(
    setup: ConnSetup,
    mut phase: watch::Receiver<Phase>,
    first: Arc<Semaphore>,
    ready: mpsc::Sender<Result<Duration, String>>,
    disconnected: Arc<AtomicUsize>,
    done: mpsc::Sender<ConnReport>,
) {
    let mut report = ConnReport {
        before: CursorCheck::after(setup.account.head),
        ..ConnReport::default()
    };
    // First connection, a bounded number at a time.
    let permit = first.acquire().await;
    let t = Instant::now();
    let first_result = connect(&setup, setup.account.head).await;
    drop(permit);
    let mut client = match first_result {
        Ok((client, _)) => {
            let _ = ready.send(Ok(t.elapsed())).await;
            client
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return;
        }
    };
    // Hold: read whatever comes until the storm starts.
    loop {
        tokio::select! {
            event = client.next_event() => match event {
                Some(e) => report.before.see(e.cursor),
                None => break,
            },
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Hold {
                    break;
                }
            }
        }
    }
    // Everyone drops at once, without a close handshake, as when a network goes away.
    drop(client);
    disconnected.fetch_add(1, Ordering::AcqRel);
    let t0 = loop {
        if let Phase::Reconnect(t0) = *phase.borrow_and_update() {
            break t0;
        }
        if phase.changed().await.is_err() {
            return;
        }
    };
    let last = report.before.last;
    report.after = CursorCheck::after(last);
    let deadline = t0 + setup.deadline + setup.delay;
    let own_start = t0 + setup.delay;
    tokio::time::sleep_until(own_start.into()).await;
    let (client, head) = loop {
        report.reconnect_attempts += 1;
        match tokio::time::timeout_at(deadline.into(), connect(&setup, last)).await {
            Ok(Ok(ok)) => break ok,
            Ok(Err(e)) if Instant::now() + Duration::from_millis(100) < deadline => {
                report.error = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => {
                report.error = Some(e);
                let _ = done.send(report).await;
                return;
            }
            Err(_) => {
                report.error = Some("reconnect timed out".to_owned());
                let _ = done.send(report).await;
                return;
            }
        }
    };
    let mut client = client;
    report.reconnected = true;
    report.error = None;
    report.reconnect = Some(own_start.elapsed());
    report.head = head;
    while report.after.last < head {
        match tokio::time::timeout_at(deadline.into(), client.next_event()).await {
            Ok(Some(e)) => report.after.see(e.cursor),
            Ok(None) => {
                report.error = Some(format!(
                    "closed during catch-up: {:?}",
                    client.close_reason()
                ));
                break;
            }
            Err(_) => {
                report.error = Some("catch-up timed out".to_owned());
                break;
            }
        }
    }
    if report.after.last >= head && report.error.is_none() {
        report.caught_up = true;
        report.caught_up_after = Some(own_start.elapsed());
        report.caught_up_since_storm = Some(t0.elapsed());
    }
    let _ = done.send(report).await;
    // Stay connected until every client is done, as real clients would.
    while *phase.borrow_and_update() != Phase::Finish {
        if phase.changed().await.is_err() {
            break;
        }
    }
    drop(client);
}

/// When the `i`-th of `n` clients reconnects, spreading them evenly over `spread_ms`.
pub fn spread_delay(i: usize, n: usize, spread_ms: u64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(spread_ms * 1000 * i as u64 / n as u64)
}

/// Runs `storm`.
pub async fn run(ctx: &Ctx<'_>, args: &StormArgs) -> anyhow::Result<Outcome> {
    let plan = accounts::plan_petitions(args.petitions as usize);
    let logins = accounts::logins_of(&plan);
    // Sender connections (one per resident and worker) need files too.
    let senders_needed = logins.len() as u64;
    let (n, cap_note) =
        net::cap_connections(args.connections, ctx.nofile.saturating_sub(senders_needed));
    if let Some(note) = &cap_note {
        progress::note(note);
    }
    let run_id = accounts::run_id();
    let mut signed = accounts::sign_in_all(&ctx.url, &logins).await?;
    let opened = accounts::submit_all(&ctx.url, &plan, &signed, &run_id).await?;
    accounts::refresh_heads(&ctx.url, &mut signed).await?;
    let participants: Vec<Account> = logins
        .iter()
        .filter_map(|l| signed.get(l).cloned())
        .collect();
    let sources = ctx.sources(2 * n);
    let deadline = Duration::from_secs(args.catchup_timeout_secs);

    // 1. Connect and subscribe everyone.
    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let first = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let (ready_tx, mut ready_rx) = mpsc::channel(1024);
    let (done_tx, mut done_rx) = mpsc::channel(1024);
    let disconnected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let setup = ConnSetup {
            url: ctx.url.clone(),
            account: participants[i % participants.len()].clone(),
            local: sources.pick(i),
            deadline,
            delay: spread_delay(i, n as usize, args.reconnect_spread_ms),
        };
        tasks.push(tokio::spawn(storm_conn(
            setup,
            phase_rx.clone(),
            Arc::clone(&first),
            ready_tx.clone(),
            Arc::clone(&disconnected),
            done_tx.clone(),
        )));
    }
    drop(ready_tx);
    drop(done_tx);
    let bar = progress::counter(n, "connecting and subscribing");
    let mut first_connect = report::latency_histogram();
    let mut first_failures: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..n {
        let Some(r) = ready_rx.recv().await else {
            break;
        };
        match r {
            Ok(took) => report::record(&mut first_connect, took),
            Err(e) => {
                *first_failures
                    .entry(super::idle::failure_kind(&e))
                    .or_default() += 1
            }
        }
        bar.inc(1);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let connected = first_connect.len() as usize;

    // 2. Everyone drops at once.
    progress::note(&format!("{connected} connections drop at once"));
    let _ = phase_tx.send(Phase::Disconnect);
    let wait = Instant::now();
    while disconnected.load(Ordering::Acquire) < connected
        && wait.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. The burst, while they are away.
    let burst = burst(ctx, args, &opened, &signed, &run_id).await?;

    // 4. Everyone reconnects at once and catches up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_before = ctx.snapshot();
    let t_sampler = ctx.sampler_secs();
    let t0 = Instant::now();
    let _ = phase_tx.send(Phase::Reconnect(t0));
    let bar = progress::counter(connected as u64, "reconnecting and catching up");
    let mut reports = Vec::with_capacity(connected);
    let collect_deadline =
        t0 + deadline + Duration::from_millis(args.reconnect_spread_ms) + Duration::from_secs(10);
    while reports.len() < connected {
        match tokio::time::timeout_at(collect_deadline.into(), done_rx.recv()).await {
            Ok(Some(r)) => {
                reports.push(r);
                bar.inc(1);
            }
            _ => break,
        }
    }
    let storm_secs = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let server_after = ctx.snapshot();
    let _ = phase_tx.send(Phase::Finish);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let storm_samples = ctx.samples_since(t_sampler);

    // 5. Figures.
    let mut reconnect = report::latency_histogram();
    let mut caught_up = report::latency_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut replayed, mut lost, mut duplicates, mut before_events, mut attempts) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut all_caught_up = reports.len() == connected && connected > 0;
    let mut max_caught_up = Duration::ZERO;
    let mut no_new_events = 0u64;
    for r in &reports {
        if let Some(d) = r.reconnect {
            report::record(&mut reconnect, d);
        }
        if let Some(d) = r.caught_up_after {
            report::record(&mut caught_up, d);
        }
        if let Some(d) = r.caught_up_since_storm {
            max_caught_up = max_caught_up.max(d);
        }
        all_caught_up &= r.caught_up;
        if let Some(e) = &r.error {
            *errors.entry(super::idle::failure_kind(e)).or_default() += 1;
        }
        replayed += r.after.in_order;
        lost += r.before.lost + r.after.lost;
        duplicates += r.before.duplicates + r.after.duplicates;
        before_events += r.before.in_order;
        attempts += u64::from(r.reconnect_attempts);
        if r.head <= r.before.last {
            no_new_events += 1;
        }
    }
    let missing_reports = connected - reports.len();
    let caught = LatencySummary::of(&caught_up);
    let recon = LatencySummary::of(&reconnect);
    let server_cpu = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let all_secs = max_caught_up.as_secs_f64();
    let mut metrics = vec![
        Metric::new(
            "connections",
            "connections",
            connected as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "burst_messages_acked",
            "burst messages acknowledged",
            burst.acked as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "burst_msgs_per_sec",
            "burst send rate",
            burst.acked as f64 / burst.secs.max(1e-9),
            Unit::PerSec,
            Better::Higher,
        ),
        Metric::new(
            "all_caught_up",
            "every client caught up (1 = yes)",
            if all_caught_up { 1.0 } else { 0.0 },
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "all_caught_up_secs",
            "time until all caught up",
            all_secs,
            Unit::Seconds,
            Better::Lower,
        ),
    ];
    metrics.extend(caught.metrics("caught_up", "caught up after"));
    metrics.extend(recon.metrics("reconnect", "reconnect+subscribe"));
    metrics.extend([
        Metric::new(
            "events_replayed",
            "events replayed",
            replayed as f64,
            Unit::Count,
            Better::Neither,
        ),
        Metric::new(
            "replay_events_per_sec",
            "replay rate",
            replayed as f64 / all_secs.max(1e-9),
            Unit::PerSec,
            Better::Higher,
        ),
        Metric::new(
            "lost_events",
            "events lost",
            lost as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "duplicate_events",
            "events duplicated",
            duplicates as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "not_caught_up",
            "clients not caught up",
            (reports.iter().filter(|r| !r.caught_up).count() + missing_reports) as f64,
            Unit::Count,
            Better::Lower,
        ),
    ]);
    if let Some(cpu) = server_cpu {
        metrics.push(Metric::new(
            "server_cpu_secs",
            "target CPU during the reconnect",
            cpu,
            Unit::Seconds,
            Better::Lower,
        ));
    }
    if let Some(rss) = storm_samples.iter().map(|s| s.snapshot.rss_bytes).max() {
        metrics.push(Metric::new(
            "server_peak_rss_bytes",
            "target peak RSS (reconnect)",
            rss as f64,
            Unit::Bytes,
            Better::Lower,
        ));
    }
    let details = serde_json::json!({
        "requested": args.connections,
        "connections": connected,
        "accounts": participants.len(),
        "petitions": opened.len(),
        "source_ips": sources.len(),
        "first_connect_secs": connect_secs,
        "first_connect_latency": LatencySummary::of(&first_connect),
        "first_connect_failures": first_failures,
        "burst": burst,
        "reconnect_latency": recon,
        "caught_up_latency": caught,
        "all_caught_up": all_caught_up,
        "all_caught_up_secs": all_secs,
        "storm_secs": storm_secs,
        "reports": reports.len(),
        "missing_reports": missing_reports,
        "reconnect_attempts": attempts,
        "errors": errors,
        "events_before_disconnect": before_events,
        "events_replayed": replayed,
        "lost_events": lost,
        "duplicate_events": duplicates,
        "clients_with_nothing_to_replay": no_new_events,
        "server_cpu_secs": server_cpu,
        "server_before": server_before,
        "server_after": server_after,
    });
    let mut notes = Vec::new();
    notes.extend(cap_note);
    notes.push(if args.reconnect_spread_ms == 0 {
        "clients drop without a close handshake; all reconnect in the same instant (Authorization \
         header with their token) and subscribe from their last cursor"
            .to_owned()
    } else {
        format!(
            "clients drop without a close handshake and reconnect spread evenly over {} ms \
             (times are from the first reconnect), subscribing from their last cursor",
            args.reconnect_spread_ms
        )
    });
    let params = serde_json::json!({
        "connections": n,
        "petitions": args.petitions,
        "burst_messages": args.burst_messages,
        "connect_concurrency": args.connect_concurrency,
        "catchup_timeout_secs": args.catchup_timeout_secs,
        "reconnect_spread_ms": args.reconnect_spread_ms,
    });
    Ok(Outcome {
        params,
        metrics,
        details,
        notes,
    })
}

/// What the burst did.
#[derive(Debug, Clone, Default, Serialize)]
struct Burst {
    sent: u64,
    acked: u64,
    errors: BTreeMap<String, u64>,
    secs: f64,
    ack_latency: LatencySummary,
}

async fn burst(
    ctx: &Ctx<'_>,
    args: &StormArgs,
    opened: &[accounts::OpenPetition],
    signed: &HashMap<String, Account>,
    run_id: &str,
) -> anyhow::Result<Burst> {
    let by_id: HashMap<u64, &Account> = signed.values().map(|a| (a.id, a)).collect();
    let mut senders: HashMap<u64, Client> = HashMap::new();
    for p in opened {
        for id in [p.resident_id, p.worker_id] {
            if senders.contains_key(&id) {
                continue;
            }
            let account = by_id
                .get(&id)
                .ok_or_else(|| anyhow::anyhow!("account {id} is not signed in"))?;
            let client =
                Client::connect(&ctx.url, net::client_options(None, Some(&account.token))).await?;
            senders.insert(id, client);
        }
    }
    let text = super::steady::message_text(60);
    let bar = progress::counter(args.burst_messages, "burst while everyone is away");
    let started = Instant::now();
    let results: Vec<(Result<(), String>, Duration)> =
        futures_util::stream::iter(0..args.burst_messages)
            .map(|i| {
                let p = &opened[i as usize % opened.len()];
                let round = i as usize / opened.len();
                let sender = if round.is_multiple_of(2) {
                    p.resident_id
                } else {
                    p.worker_id
                };
                let client = senders.get(&sender);
                let text = text.clone();
                let bar = bar.clone();
                let client_msg_id = format!("{run_id}-s{i}");
                async move {
                    let t = Instant::now();
                    let r = match client {
                        Some(c) => c
                            .send_message(p.id, text, client_msg_id)
                            .await
                            .map(|_| ())
                            .map_err(|e| {
                                e.code()
                                    .map_or_else(|| e.to_string(), |c| c.as_str_name().to_owned())
                            }),
                        None => Err("no sender".to_owned()),
                    };
                    bar.inc(1);
                    (r, t.elapsed())
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    bar.finish_and_clear();
    let mut out = Burst {
        sent: args.burst_messages,
        secs: started.elapsed().as_secs_f64(),
        ..Burst::default()
    };
    let mut hist = report::latency_histogram();
    for (r, took) in results {
        match r {
            Ok(()) => {
                out.acked += 1;
                report::record(&mut hist, took);
            }
            Err(e) => *out.errors.entry(e).or_default() += 1,
        }
    }
    out.ack_latency = LatencySummary::of(&hist);
    drop(senders);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_checks_count_losses_and_duplicates() {
        let mut c = CursorCheck::after(10);
        for cursor in [11, 12, 12, 15, 16, 3] {
            c.see(cursor);
        }
        assert_eq!(c.last, 16);
        assert_eq!(c.in_order, 4);
        assert_eq!(c.lost, 2);
        assert_eq!(c.duplicates, 2);
        assert_eq!(spread_delay(0, 10, 1000), Duration::ZERO);
        assert_eq!(spread_delay(5, 10, 1000), Duration::from_millis(500));
        assert_eq!(spread_delay(9, 10, 0), Duration::ZERO);
        let mut clean = CursorCheck::after(0);
        (1..=100).for_each(|x| clean.see(x));
        assert_eq!((clean.in_order, clean.lost, clean.duplicates), (100, 0, 0));
    }
}
