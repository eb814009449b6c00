//! `crash`: the crash loop. Residents send messages (and now and then raise petitions) with
//! client-chosen ids (`clientMsgId`) at a steady rate; the server is killed with SIGKILL at a
//! random moment and started again on the same data folder. After each restart every sender
//! resends the request whose reply the kill took (same `clientMsgId`: the server answers the
//! original acknowledgement if it had stored it), then checks its petition's timeline: sequence
//! numbers without holes, every acknowledged message exactly once under its acknowledged sequence
//! number, no `clientMsgId` twice, and every acknowledged petition present. Followers of the
//! participants' feeds reconnect after every kill, subscribe from the last cursor they saw and
//! check that the events continue without gap or repeat. At the end every timeline is checked
//! again from the start, every sender's petition list is compared with its acknowledgements (an
//! extra petition is a duplicate), and every follower must reach its feed's head.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lianxin_client::{Client, ClientError, ConnectOptions};
use lianxin_protocol::v1::{Category, ErrorCode, ListPetitions, SubmitPetition};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::accounts::DEMO_PASSWORD;
use crate::cli::{CommonArgs, CrashArgs};
use crate::procstat::{self, Sampler};
use crate::progress;
use crate::report::{self, Better, Metric, Report, TargetInfo, Unit};
use crate::spawn::{self, Spawned};

/// How long a request waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Entries per history page.
const PAGE: u32 = 500;

fn options(token: &str) -> ConnectOptions {
    ConnectOptions {
        bearer_token: Some(token.to_owned()),
        request_timeout: REQUEST_TIMEOUT,
        ..ConnectOptions::default()
    }
}

/// A request whose reply a kill may have taken.
#[derive(Debug, Clone)]
enum Pending {
    /// A message to the sender's petition.
    Message { cmid: String, text: String },
    /// A new petition.
    Petition { cmid: String, text: String },
}

/// What the checks found, summed over senders and cycles.
#[derive(Debug, Default, Clone, Copy)]
struct Findings {
    /// Acknowledged messages missing, or stored under another sequence number.
    lost_messages: u64,
    /// `clientMsgId`s stored more than once.
    duplicate_messages: u64,
    /// Holes in a timeline's sequence numbers.
    timeline_gaps: u64,
    /// Acknowledged petitions missing.
    lost_petitions: u64,
    /// Petitions stored that no acknowledgement names (stored twice).
    duplicate_petitions: u64,
}

impl Findings {
    fn add(&mut self, o: Findings) {
        self.lost_messages += o.lost_messages;
        self.duplicate_messages += o.duplicate_messages;
        self.timeline_gaps += o.timeline_gaps;
        self.lost_petitions += o.lost_petitions;
        self.duplicate_petitions += o.duplicate_petitions;
    }

    fn total(&self) -> u64 {
        self.lost_messages
            + self.duplicate_messages
            + self.timeline_gaps
            + self.lost_petitions
            + self.duplicate_petitions
    }
}

/// One resident sending to its own petition.
struct Sender {
    /// Its number (for client message ids).
    n: usize,
    /// Its session token.
    token: String,
    /// The connection of this cycle.
    client: Option<Client>,
    /// Its petition, which its messages go to.
    petition: u64,
    /// Requests made (numbers the client message ids).
    made: u64,
    /// The request in flight when the server was killed.
    pending: Option<Pending>,
    /// Acknowledged messages: client message id → sequence number.
    acked: HashMap<String, u64>,
    /// Acknowledged petitions: client message id → petition id.
    petitions: HashMap<String, u64>,
    /// Petitions acknowledged since the last check.
    unchecked_petitions: Vec<u64>,
    /// The timeline is checked up to this sequence number.
    checked_upto: u64,
    /// Client message ids seen in the checked part of the timeline.
    seen: HashSet<String>,
    /// Requests resent after a restart.
    resent: u64,
    /// Of those, answered as duplicates (the kill came after the store, before the reply).
    resent_found_stored: u64,
}

impl Sender {
    fn next_request(&mut self, petition_every: u64) -> Pending {
        self.made += 1;
        let i = self.made;
        if petition_every > 0 && i.is_multiple_of(petition_every) {
            Pending::Petition {
                cmid: format!("crash-{}-p{i}", self.n),
                text: format!("第{i}件事：楼道灯坏了"),
            }
        } else {
            Pending::Message {
                cmid: format!("crash-{}-m{i}", self.n),
                text: format!("消息{i}"),
            }
        }
    }

    /// Sends one request; `Ok(duplicate)` once acknowledged.
    async fn send(&mut self, request: &Pending) -> Result<bool, ClientError> {
        let client = self.client.as_ref().ok_or_else(|| ClientError::Closed {
            code: None,
            reason: "not connected".into(),
        })?;
        match request {
            Pending::Message { cmid, text } => {
                let ack = client
                    .send_message(self.petition, text.clone(), cmid.clone())
                    .await?;
                self.acked.insert(cmid.clone(), ack.seq);
                Ok(ack.duplicate)
            }
            Pending::Petition { cmid, text } => {
                let p = client.submit_petition(submit(text, cmid)).await?;
                // A resend answers the stored petition (same id) instead of raising another.
                self.petitions.insert(cmid.clone(), p.id);
                self.unchecked_petitions.push(p.id);
                Ok(false)
            }
        }
    }

    /// Sends until a request fails (the server was killed): the failed one stays pending.
    async fn run(&mut self, interval: Option<Duration>, petition_every: u64) -> u64 {
        let mut sent = 0;
        let mut next_at = tokio::time::Instant::now();
        loop {
            if let Some(every) = interval {
                tokio::time::sleep_until(next_at).await;
                next_at += every;
            }
            let request = match self.pending.take() {
                Some(p) => p,
                None => self.next_request(petition_every),
            };
            match self.send(&request).await {
                Ok(_) => sent += 1,
                Err(_) => {
                    self.pending = Some(request);
                    self.client = None;
                    return sent;
                }
            }
        }
    }

    /// Connects to the restarted server and resends the pending request.
    async fn recover(&mut self, url: &str) -> anyhow::Result<()> {
        let client = Client::connect(url, options(&self.token))
            .await
            .context("reconnecting after the restart")?;
        self.client = Some(client);
        if let Some(request) = self.pending.take() {
            let duplicate = match self.send(&request).await {
                Ok(d) => d,
                Err(e) => {
                    self.pending = Some(request);
                    return Err(e).context("resending after the restart");
                }
            };
            self.resent += 1;
            if duplicate {
                self.resent_found_stored += 1;
            }
        }
        Ok(())
    }

    /// Checks the timeline past `checked_upto` and the petitions acknowledged since the last
    /// check; `from_start` checks the whole timeline again.
    async fn check(&mut self, from_start: bool) -> anyhow::Result<Findings> {
        let mut f = Findings::default();
        if from_start {
            self.checked_upto = 0;
            self.seen.clear();
        }
        let client = self.client.as_ref().context("not connected")?;
        let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
        let mut after = self.checked_upto;
        loop {
            let page = client
                .get_history(self.petition, after, PAGE)
                .await
                .context("reading the timeline")?;
            for e in &page.entries {
                by_seq.insert(e.seq, e.client_msg_id.clone());
            }
            if page.next_after_seq == 0 || page.entries.is_empty() {
                break;
            }
            after = page.next_after_seq;
        }
        let mut expect = self.checked_upto + 1;
        for (&seq, cmid) in &by_seq {
            if seq != expect {
                f.timeline_gaps += seq.saturating_sub(expect);
            }
            expect = seq + 1;
            if !cmid.is_empty() && !self.seen.insert(cmid.clone()) {
                f.duplicate_messages += 1;
            }
        }
        for (cmid, &seq) in &self.acked {
            if seq > self.checked_upto && by_seq.get(&seq) != Some(cmid) {
                f.lost_messages += 1;
            }
        }
        if let Some((&last, _)) = by_seq.last_key_value() {
            self.checked_upto = last;
        }
        let to_check: Vec<u64> = if from_start {
            self.petitions.values().copied().collect()
        } else {
            std::mem::take(&mut self.unchecked_petitions)
        };
        for id in to_check {
            match client.get_petition(id).await {
                Ok(_) => {}
                Err(ClientError::Server {
                    code: ErrorCode::NotFound,
                    ..
                }) => f.lost_petitions += 1,
                Err(e) => return Err(e).context("reading a petition"),
            }
        }
        if from_start {
            // Every petition of the resident must be one an acknowledgement names.
            let mut known: HashSet<u64> = self.petitions.values().copied().collect();
            known.insert(self.petition);
            let mut before_id = 0;
            loop {
                let page = client
                    .list_petitions(ListPetitions {
                        before_id,
                        limit: 100,
                        ..Default::default()
                    })
                    .await
                    .context("listing petitions")?;
                for p in &page.petitions {
                    if !known.contains(&p.id) {
                        f.duplicate_petitions += 1;
                    }
                }
                if page.next_before_id == 0 || page.petitions.is_empty() {
                    break;
                }
                before_id = page.next_before_id;
            }
        }
        Ok(f)
    }
}

fn submit(text: &str, cmid: &str) -> SubmitPetition {
    SubmitPetition {
        category: Category::SituationReport as i32,
        title: text.chars().take(8).collect(),
        text: text.to_owned(),
        client_msg_id: cmid.to_owned(),
        ..Default::default()
    }
}

/// What a feed follower saw, across every restart.
#[derive(Debug, Default)]
struct FeedStats {
    /// Events received.
    events: AtomicU64,
    /// Cursors skipped (an event arrived with a cursor past the next one).
    gaps: AtomicU64,
    /// Events received again (cursor not past the last one).
    repeats: AtomicU64,
    /// Subscriptions refused because the stored feed was behind a cursor already delivered.
    regressions: AtomicU64,
    /// Subscriptions made (the first and one per restart).
    resumes: AtomicU64,
    /// The last cursor received.
    last: AtomicU64,
}

/// Follows one account's feed until `stop`, reconnecting (with the token) and subscribing from
/// the last cursor whenever the connection drops.
async fn follow(
    url: String,
    token: String,
    stats: Arc<FeedStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let mut client = match Client::connect(&url, options(&token)).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let last = stats.last.load(Ordering::SeqCst);
        match client.subscribe(last).await {
            Ok(_) => {
                stats.resumes.fetch_add(1, Ordering::SeqCst);
            }
            Err(ClientError::Server {
                code: ErrorCode::InvalidArgument,
                ..
            }) => {
                stats.regressions.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => continue,
        }
        loop {
            tokio::select! {
                e = client.next_event() => match e {
                    Some(e) => {
                        stats.events.fetch_add(1, Ordering::SeqCst);
                        let last = stats.last.load(Ordering::SeqCst);
                        if e.cursor <= last {
                            stats.repeats.fetch_add(1, Ordering::SeqCst);
                        } else {
                            if e.cursor > last + 1 {
                                stats.gaps.fetch_add(e.cursor - last - 1, Ordering::SeqCst);
                            }
                            stats.last.store(e.cursor, Ordering::SeqCst);
                        }
                    }
                    None => break,
                },
                _ = stop.changed() => {
                    if *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// Signs in with the demo password; returns the token.
async fn sign_in(url: &str, login: &str) -> anyhow::Result<String> {
    let client = Client::connect(url, ConnectOptions::default()).await?;
    let token = client
        .sign_in(login, DEMO_PASSWORD)
        .await
        .with_context(|| format!("signing in as {login}"))?
        .token;
    client.close().await;
    Ok(token)
}

/// One cycle's figures.
#[derive(Debug, serde::Serialize)]
struct Cycle {
    /// Milliseconds the server ran under load before the kill.
    up_ms: u64,
    /// Requests acknowledged in this cycle before the kill.
    acked: u64,
    /// Milliseconds from the kill to `/readyz` answering after the restart.
    restart_ms: u64,
}

/// Runs the crash loop and builds its report.
pub async fn run(common: &CommonArgs, args: &CrashArgs) -> anyhow::Result<Report> {
    if common.target.is_some() || common.relay || common.compare {
        bail!(
            "crash kills and restarts the server itself: --target, --relay and --compare do not apply"
        );
    }
    if args.min_up_ms > args.max_up_ms {
        bail!("--min-up-ms must not exceed --max-up-ms");
    }
    let wall = Instant::now();
    let started_at_unix = report::unix_now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bin = match &common.server_bin {
        Some(b) => b.clone(),
        None => spawn::default_server_bin()?,
    };
    let dir = tempfile::Builder::new()
        .prefix("lianxin-crash-")
        .tempdir()
        .context("creating a data folder")?;
    let data: PathBuf = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let addr = SocketAddr::from(([127, 0, 0, 1], spawn::free_port()?));
    progress::note(&format!(
        "crash loop: {} cycles (at most {} s), {} senders, seed {seed}; data in {}",
        args.cycles,
        args.max_secs,
        args.senders,
        data.display()
    ));
    let me = Sampler::start(None, Duration::from_secs(1));
    let mut server = Spawned::server_on(&bin, &common.server_log, &data, &log_path, addr).await?;
    let url = server.url.clone();

    // Senders: resident a of grid 1 of communities 1..=n, each with a petition of its own.
    let mut senders = Vec::new();
    let mut follower_logins = Vec::new();
    for n in 0..args.senders as usize {
        let community = n + 1;
        let login = format!("resident-{community:02}-1a");
        let token = sign_in(&url, &login).await?;
        let client = Client::connect(&url, options(&token)).await?;
        let petition = client
            .submit_petition(submit("小区门口积水严重", &format!("crash-{n}-main")))
            .await
            .with_context(|| format!("{login} raising its petition"))?
            .id;
        follower_logins.push((login, token.clone()));
        for worker in ["a", "b"] {
            let w = format!("worker-{community:02}-1{worker}");
            let t = sign_in(&url, &w).await?;
            follower_logins.push((w, t));
        }
        senders.push(Sender {
            n,
            token,
            client: Some(client),
            petition,
            made: 0,
            pending: None,
            acked: HashMap::new(),
            petitions: HashMap::new(),
            unchecked_petitions: Vec::new(),
            checked_upto: 0,
            seen: HashSet::new(),
            resent: 0,
            resent_found_stored: 0,
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut followers = Vec::new();
    for (login, token) in &follower_logins {
        let stats = Arc::new(FeedStats::default());
        let task = tokio::spawn(follow(
            url.clone(),
            token.clone(),
            stats.clone(),
            stop_rx.clone(),
        ));
        followers.push((login.clone(), token.clone(), stats, task));
    }

    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.senders as f64 / args.rate))
        .filter(|d| !d.is_zero());
    let bar = progress::counter(args.cycles, "kill, restart, check");
    let mut findings = Findings::default();
    let mut cycles = Vec::new();
    let deadline = wall + Duration::from_secs(args.max_secs);
    for _ in 0..args.cycles {
        if Instant::now() >= deadline {
            break;
        }
        let up = Duration::from_millis(rng.gen_range(args.min_up_ms..=args.max_up_ms));
        let petition_every = args.petition_every;
        // Load, and the kill at a random moment in it.
        let (sent, killed_at) = {
            let load = futures_util::future::join_all(
                senders.iter_mut().map(|s| s.run(interval, petition_every)),
            );
            let kill = async {
                tokio::time::sleep(up).await;
                server.kill_now();
                Instant::now()
            };
            let (sent, killed_at) = tokio::join!(load, kill);
            (sent.iter().sum::<u64>(), killed_at)
        };
        server = Spawned::server_on(&bin, &common.server_log, &data, &log_path, addr)
            .await
            .context("restarting after the kill")?;
        let restart_ms = killed_at.elapsed().as_millis() as u64;
        for s in &mut senders {
            s.recover(&url).await?;
        }
        for s in &mut senders {
            findings.add(s.check(false).await?);
        }
        cycles.push(Cycle {
            up_ms: up.as_millis() as u64,
            acked: sent,
            restart_ms,
        });
        bar.inc(1);
        if findings.total() > 0 {
            bar.set_message(format!("FOUND {} problems", findings.total()));
        }
    }
    bar.finish();

    // Final: every timeline from the start, every petition list, every feed to its head.
    for s in &mut senders {
        findings.add(s.check(true).await?);
    }
    let mut feed_unreached = 0u64;
    for (login, token, stats, _) in &followers {
        let client = Client::connect(&url, options(token)).await?;
        let head = client.subscribe(0).await?.head_cursor;
        client.close().await;
        let waited = Instant::now();
        while stats.last.load(Ordering::SeqCst) < head && waited.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if stats.last.load(Ordering::SeqCst) != head {
            progress::note(&format!(
                "{login}'s follower stopped at cursor {} of {head}",
                stats.last.load(Ordering::SeqCst)
            ));
            feed_unreached += 1;
        }
    }
    let _ = stop_tx.send(true);
    for (_, _, _, task) in followers.iter_mut() {
        let _ = task.await;
    }
    let pid = server.pid;
    let peak_rss = procstat::read(Some(pid)).ok();
    server.stop();
    let my_samples = me.stop().await;

    let sum = |f: fn(&FeedStats) -> &AtomicU64| -> u64 {
        followers
            .iter()
            .map(|(_, _, s, _)| f(s).load(Ordering::SeqCst))
            .sum()
    };
    let feed_events = sum(|s| &s.events);
    let feed_gaps = sum(|s| &s.gaps);
    let feed_repeats = sum(|s| &s.repeats);
    let feed_regressions = sum(|s| &s.regressions);
    let feed_resumes = sum(|s| &s.resumes);
    let acked_messages: u64 = senders.iter().map(|s| s.acked.len() as u64).sum();
    let acked_petitions: u64 = senders.iter().map(|s| s.petitions.len() as u64 + 1).sum();
    let resent: u64 = senders.iter().map(|s| s.resent).sum();
    let resent_found_stored: u64 = senders.iter().map(|s| s.resent_found_stored).sum();
    let mut restart: Vec<u64> = cycles.iter().map(|c| c.restart_ms).collect();
    restart.sort_unstable();
    let pct = |q: f64| -> f64 {
        if restart.is_empty() {
            return 0.0;
        }
        let i = ((restart.len() - 1) as f64 * q).round() as usize;
        restart[i] as f64 / 1000.0
    };
    let m = |name: &str, label: &str, value: f64, unit: Unit, better: Better| {
        Metric::new(name, label, value, unit, better)
    };
    let metrics = vec![
        m(
            "cycles",
            "kill-restart cycles",
            cycles.len() as f64,
            Unit::Count,
            Better::Higher,
        ),
        m(
            "acked_messages",
            "messages acknowledged",
            acked_messages as f64,
            Unit::Count,
            Better::Neither,
        ),
        m(
            "acked_petitions",
            "petitions acknowledged",
            acked_petitions as f64,
            Unit::Count,
            Better::Neither,
        ),
        m(
            "lost_messages",
            "acknowledged messages lost",
            findings.lost_messages as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "duplicate_messages",
            "messages stored twice",
            findings.duplicate_messages as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "timeline_gaps",
            "holes in timelines",
            findings.timeline_gaps as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "lost_petitions",
            "acknowledged petitions lost",
            findings.lost_petitions as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "duplicate_petitions",
            "petitions stored twice",
            findings.duplicate_petitions as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "feed_gaps",
            "feed cursors skipped",
            feed_gaps as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "feed_repeats",
            "feed events repeated",
            feed_repeats as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "feed_regressions",
            "feeds behind a delivered cursor",
            feed_regressions as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "feeds_not_at_head",
            "followers not at their head",
            feed_unreached as f64,
            Unit::Count,
            Better::Lower,
        ),
        m(
            "feed_events",
            "feed events followed",
            feed_events as f64,
            Unit::Count,
            Better::Neither,
        ),
        m(
            "resent_after_kill",
            "requests resent after a kill",
            resent as f64,
            Unit::Count,
            Better::Neither,
        ),
        m(
            "resent_found_stored",
            "of those already stored",
            resent_found_stored as f64,
            Unit::Count,
            Better::Neither,
        ),
        m(
            "restart_p50_secs",
            "kill to ready, median",
            pct(0.5),
            Unit::Seconds,
            Better::Lower,
        ),
        m(
            "restart_max_secs",
            "kill to ready, max",
            pct(1.0),
            Unit::Seconds,
            Better::Lower,
        ),
    ];
    let problems = findings.total() + feed_gaps + feed_repeats + feed_regressions + feed_unreached;
    let mut notes = vec![format!("seed {seed}: --seed {seed} repeats the kill times")];
    if problems > 0 {
        notes.push(format!(
            "{problems} problems found; the server's log: {}",
            log_path.display()
        ));
    }
    let mut report = Report {
        scenario: "crash".to_owned(),
        target: TargetInfo {
            kind: "server".to_owned(),
            url,
            pid: Some(pid),
        },
        started_at_unix,
        wall_secs: wall.elapsed().as_secs_f64(),
        params: json!({
            "cycles": args.cycles,
            "max_secs": args.max_secs,
            "senders": args.senders,
            "rate": args.rate,
            "petition_every": args.petition_every,
            "min_up_ms": args.min_up_ms,
            "max_up_ms": args.max_up_ms,
            "seed": seed,
            "followers": followers.len(),
        }),
        metrics,
        figures: Default::default(),
        details: json!({
            "cycles": cycles,
            "feed_resumes": feed_resumes,
            "last_server_memory": peak_rss,
        }),
        server_process: None,
        load_generator: procstat::summarize(Some(std::process::id()), &my_samples),
        load_generator_threads: crate::runtime_threads(),
        machine: None,
        notes,
    };
    report.index_figures();
    if problems > 0 {
        // Keep the folder and its log for a look.
        let kept = dir.keep();
        progress::note(&format!(
            "kept the data folder {} for inspection",
            kept.display()
        ));
    }
    Ok(report)
}
