//! `steady`: residents and workers exchange messages at a fixed open-loop rate.
//!
//! Every petition has its resident, the worker it is addressed to and the grid head; each account
//! has one connection (a person, one device), signed in by token and subscribed to its feed.
//! Messages go round-robin over the petitions, alternately from the resident and the worker, each
//! with a unique `client_msg_id`, sent on timer ticks without waiting for earlier replies (at most
//! `max_inflight` unanswered per connection; sends beyond that are dropped and counted).
//!
//! Measured: acknowledgement latency (send → `MessageAck`) and delivery latency (send → the
//! `EntryAdded` event for the acknowledged `(petition, seq)` arriving on the other participant's
//! connection). Nothing is embedded in the text: the send time is kept by `client_msg_id` and
//! request id, the ack names `(petition, seq)`, the event carries the same pair (it may arrive
//! before the ack; both orders are matched). Feed cursors are checked to be contiguous on every
//! connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use lianxin_client::tungstenite::Message;
use lianxin_client::{decode_server_message, encode_client_frame};
use lianxin_protocol::Wire;
use lianxin_protocol::v1::{
    ClientFrame, ErrorCode, Event, Reply, SendMessage, Subscribe, client_frame::Request, entry,
    event, reply::Result as R, server_frame,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Ctx, Outcome};
use crate::accounts::{self, Account, OpenPetition, PlannedPetition};
use crate::cli::LoadShape;
use crate::net::{self, RawWs};
use crate::procstat::Sample;
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};
use crate::schedule;

/// Frames queued per connection for its writer.
const OUT_QUEUE: usize = 4096;

/// Runs `steady`.
pub async fn run(ctx: &Ctx<'_>, shape: &LoadShape) -> anyhow::Result<Outcome> {
    let load = run_load(ctx, shape).await?;
    Ok(load.outcome(ctx, shape))
}

/// A message text of about `bytes` bytes (mostly Chinese, as residents write), never empty.
pub fn message_text(bytes: usize) -> String {
    const SOURCE: &str =
        "您好，楼道的灯又坏了，晚上老人上下楼很不方便，麻烦尽快安排人来修一下，谢谢！";
    let mut text = String::new();
    'outer: loop {
        for c in SOURCE.chars() {
            if text.len() + c.len_utf8() > bytes {
                break 'outer;
            }
            text.push(c);
        }
    }
    while text.len() < bytes {
        text.push('.');
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// A petition messages are sent to.
#[derive(Debug)]
struct Active {
    id: u64,
    resident_id: u64,
    worker_id: u64,
    sent: AtomicU64,
}

enum PendingKind {
    Message { client_msg_id: String },
    Submit,
    Setup(oneshot::Sender<Reply>),
}

struct Pending {
    sent_at: Instant,
    kind: PendingKind,
}

/// One account's connection.
struct LoadConn {
    account_id: u64,
    out: tokio::sync::mpsc::Sender<Message>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    last_cursor: AtomicU64,
}

/// Why a send did not go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Inflight,
    Queue,
    Closed,
}

impl LoadConn {
    fn request(
        &self,
        request: Request,
        kind: PendingKind,
        max_inflight: usize,
    ) -> Result<(), Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = encode_client_frame(
            &ClientFrame {
                id,
                request: Some(request),
            },
            Wire::Binary,
        );
        let mut pending = lock(&self.pending);
        if pending.len() >= max_inflight {
            return Err(Refused::Inflight);
        }
        pending.insert(
            id,
            Pending {
                sent_at: Instant::now(),
                kind,
            },
        );
        if self.out.try_send(message).is_err() {
            pending.remove(&id);
            return Err(if self.closed.load(Ordering::Acquire) {
                Refused::Closed
            } else {
                Refused::Queue
            });
        }
        Ok(())
    }

    /// Sends a request and waits for its reply (set-up only).
    async fn call(&self, request: Request) -> anyhow::Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.request(request, PendingKind::Setup(tx), usize::MAX)
            .map_err(|r| anyhow::anyhow!("cannot send: {r:?}"))?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("no reply within 30 s")?
            .context("the connection closed")
    }

    fn open_requests(&self) -> usize {
        lock(&self.pending)
            .values()
            .filter(|p| !matches!(p.kind, PendingKind::Setup(_)))
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the readers record.
struct Track {
    ack: Histogram<u64>,
    e2e: Histogram<u64>,
    submit: Histogram<u64>,
    /// Acknowledged, delivery not yet seen: (petition, seq) → send time, client_msg_id.
    awaiting: HashMap<(u64, u64), (Instant, String)>,
    /// Delivered before their ack arrived: (petition, seq) → arrival time, client_msg_id.
    early: HashMap<(u64, u64), (Instant, String)>,
    acked: u64,
    acked_in_window: u64,
    duplicate_acks: u64,
    errors: BTreeMap<String, u64>,
    unexpected_replies: u64,
    delivered: u64,
    client_msg_id_mismatches: u64,
    text_events: u64,
    notices: u64,
    other_events: u64,
    cursor_gaps: u64,
    cursor_duplicates: u64,
    submitted: u64,
    lost_on_close: u64,
    closed_connections: u64,
    close_reasons: BTreeMap<String, u64>,
    last_ack: Option<Instant>,
    acks_per_sec: Vec<u64>,
    ack_max_us_per_sec: Vec<u64>,
}

impl Track {
    fn new() -> Track {
        Track {
            ack: report::latency_histogram(),
            e2e: report::latency_histogram(),
            submit: report::latency_histogram(),
            awaiting: HashMap::new(),
            early: HashMap::new(),
            acked: 0,
            acked_in_window: 0,
            duplicate_acks: 0,
            errors: BTreeMap::new(),
            unexpected_replies: 0,
            delivered: 0,
            client_msg_id_mismatches: 0,
            text_events: 0,
            notices: 0,
            other_events: 0,
            cursor_gaps: 0,
            cursor_duplicates: 0,
            submitted: 0,
            lost_on_close: 0,
            closed_connections: 0,
            close_reasons: BTreeMap::new(),
            last_ack: None,
            acks_per_sec: Vec::new(),
            ack_max_us_per_sec: Vec::new(),
        }
    }
}

/// What every connection's reader shares.
struct Shared {
    track: Mutex<Track>,
    petitions: RwLock<Vec<Arc<Active>>>,
    participants: RwLock<HashMap<u64, (u64, u64)>>,
    /// When sending started, and how long it lasts (set once sending starts).
    window: RwLock<Option<(Instant, Duration)>>,
    plan: Vec<PlannedPetition>,
    accounts: HashMap<String, Account>,
}

impl Shared {
    fn add_petition(&self, p: &OpenPetition) {
        write(&self.participants).insert(p.id, (p.resident_id, p.worker_id));
        write(&self.petitions).push(Arc::new(Active {
            id: p.id,
            resident_id: p.resident_id,
            worker_id: p.worker_id,
            sent: AtomicU64::new(0),
        }));
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn code_name(code: i32) -> String {
    ErrorCode::try_from(code)
        .map_or_else(|_| format!("code {code}"), |c| c.as_str_name().to_owned())
}

fn on_reply(conn: &LoadConn, shared: &Shared, reply: Reply, now: Instant) {
    let pending = lock(&conn.pending).remove(&reply.id);
    let Some(pending) = pending else {
        lock(&shared.track).unexpected_replies += 1;
        return;
    };
    match pending.kind {
        PendingKind::Setup(tx) => {
            let _ = tx.send(reply);
        }
        PendingKind::Message { client_msg_id } => {
            let mut t = lock(&shared.track);
            match reply.result {
                Some(R::MessageAck(ack)) => {
                    report::record(&mut t.ack, now - pending.sent_at);
                    t.acked += 1;
                    if ack.duplicate {
                        t.duplicate_acks += 1;
                    }
                    t.last_ack = Some(now);
                    if let Some((start, length)) = *read(&shared.window) {
                        let since = now.saturating_duration_since(start);
                        if since <= length {
                            t.acked_in_window += 1;
                        }
                        let sec = since.as_secs() as usize;
                        if t.acks_per_sec.len() <= sec {
                            t.acks_per_sec.resize(sec + 1, 0);
                            t.ack_max_us_per_sec.resize(sec + 1, 0);
                        }
                        t.acks_per_sec[sec] += 1;
                        let us =
                            u64::try_from((now - pending.sent_at).as_micros()).unwrap_or(u64::MAX);
                        t.ack_max_us_per_sec[sec] = t.ack_max_us_per_sec[sec].max(us);
                    }
                    let key = (ack.petition_id, ack.seq);
                    if let Some((arrived, id)) = t.early.remove(&key) {
                        report::record(
                            &mut t.e2e,
                            arrived.saturating_duration_since(pending.sent_at),
                        );
                        t.delivered += 1;
                        if id != client_msg_id {
                            t.client_msg_id_mismatches += 1;
                        }
                    } else {
                        t.awaiting.insert(key, (pending.sent_at, client_msg_id));
                    }
                }
                Some(R::Error(e)) => *t.errors.entry(code_name(e.code)).or_default() += 1,
                _ => t.unexpected_replies += 1,
            }
        }
        PendingKind::Submit => match reply.result {
            Some(R::Petition(result)) => {
                let mut t = lock(&shared.track);
                report::record(&mut t.submit, now - pending.sent_at);
                t.submitted += 1;
                drop(t);
                if let Some(p) = result.petition {
                    let plan = shared.plan.iter().find(|plan| {
                        shared
                            .accounts
                            .get(&plan.resident)
                            .is_some_and(|a| a.id == p.resident_id)
                    });
                    if let Some(plan) = plan {
                        shared.add_petition(&accounts::open_petition(&p, plan, &shared.accounts));
                    }
                }
            }
            Some(R::Error(e)) => {
                *lock(&shared.track)
                    .errors
                    .entry(code_name(e.code))
                    .or_default() += 1
            }
            _ => lock(&shared.track).unexpected_replies += 1,
        },
    }
}

fn on_event(conn: &LoadConn, shared: &Shared, event: Event, now: Instant) {
    let last = conn.last_cursor.load(Ordering::Relaxed);
    let mut t = lock(&shared.track);
    if event.cursor == last + 1 {
        conn.last_cursor.store(event.cursor, Ordering::Relaxed);
    } else if event.cursor <= last {
        t.cursor_duplicates += 1;
    } else {
        t.cursor_gaps += event.cursor - last - 1;
        conn.last_cursor.store(event.cursor, Ordering::Relaxed);
    }
    match event.kind {
        Some(event::Kind::EntryAdded(added)) => {
            let Some(e) = added.entry else {
                t.other_events += 1;
                return;
            };
            if !matches!(e.body, Some(entry::Body::Text(_))) {
                t.other_events += 1;
                return;
            }
            t.text_events += 1;
            let me = conn.account_id;
            let other_side = read(&shared.participants)
                .get(&e.petition_id)
                .is_some_and(|(r, w)| (me == *r || me == *w) && me != e.author_id);
            if !other_side {
                return;
            }
            let key = (e.petition_id, e.seq);
            if let Some((sent_at, id)) = t.awaiting.remove(&key) {
                report::record(&mut t.e2e, now.saturating_duration_since(sent_at));
                t.delivered += 1;
                if id != e.client_msg_id {
                    t.client_msg_id_mismatches += 1;
                }
            } else {
                t.early.insert(key, (now, e.client_msg_id));
            }
        }
        Some(event::Kind::PetitionNotice(_)) => t.notices += 1,
        _ => t.other_events += 1,
    }
}

async fn read_loop(conn: Arc<LoadConn>, mut stream: SplitStream<RawWs>, shared: Arc<Shared>) {
    let reason = loop {
        let message = match stream.next().await {
            None => break "ended without a close frame".to_owned(),
            Some(Err(e)) => break format!("lost: {e}"),
            Some(Ok(Message::Close(frame))) => {
                break frame.map_or_else(
                    || "closed".to_owned(),
                    |f| format!("closed {}: {}", u16::from(f.code), f.reason),
                );
            }
            Some(Ok(m)) => m,
        };
        let now = Instant::now();
        let Ok(Some(frame)) = decode_server_message(&message, net::MAX_FRAME) else {
            continue;
        };
        match frame.frame {
            Some(server_frame::Frame::Reply(reply)) => on_reply(&conn, &shared, reply, now),
            Some(server_frame::Frame::Event(event)) => on_event(&conn, &shared, event, now),
            // No scenario watches a board.
            Some(server_frame::Frame::BoardUpdate(_)) | None => {}
        }
    };
    conn.closed.store(true, Ordering::Release);
    let lost = {
        let mut pending = lock(&conn.pending);
        let lost = pending
            .values()
            .filter(|p| !matches!(p.kind, PendingKind::Setup(_)))
            .count();
        pending.clear();
        lost
    };
    let mut t = lock(&shared.track);
    t.lost_on_close += lost as u64;
    t.closed_connections += 1;
    *t.close_reasons.entry(reason).or_default() += 1;
}

async fn write_loop(
    mut sink: SplitSink<RawWs, Message>,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
) {
    while let Some(message) = rx.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// A connection and its reader and writer tasks.
type Opened = (Arc<LoadConn>, Vec<JoinHandle<()>>);

/// The connections of a load run and their tasks.
struct Conns {
    by_account: HashMap<u64, Arc<LoadConn>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Conns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn open_connections(
    ctx: &Ctx<'_>,
    accounts: &HashMap<String, Account>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Conns> {
    let sources = ctx.sources(accounts.len() as u64);
    let mut list: Vec<&Account> = accounts.values().collect();
    list.sort_by(|a, b| a.login.cmp(&b.login));
    let bar = progress::counter(list.len() as u64, "connecting and subscribing");
    let opened: Vec<anyhow::Result<Opened>> =
        futures_util::stream::iter(list.into_iter().enumerate())
            .map(|(i, account)| {
                let bar = bar.clone();
                let shared = Arc::clone(shared);
                let url = ctx.url.clone();
                let local = sources.pick(i);
                async move {
                    let ws = net::connect_raw(&url, local, Some(&account.token))
                        .await
                        .with_context(|| format!("connecting as {}", account.login))?;
                    let (sink, stream) = ws.split();
                    let (out, rx) = tokio::sync::mpsc::channel(OUT_QUEUE);
                    let conn = Arc::new(LoadConn {
                        account_id: account.id,
                        out,
                        pending: Mutex::new(HashMap::new()),
                        next_id: AtomicU64::new(1),
                        closed: AtomicBool::new(false),
                        last_cursor: AtomicU64::new(account.head),
                    });
                    let tasks = vec![
                        tokio::spawn(write_loop(sink, rx)),
                        tokio::spawn(read_loop(Arc::clone(&conn), stream, shared)),
                    ];
                    let reply = conn
                        .call(Request::Subscribe(Subscribe {
                            after_cursor: account.head,
                        }))
                        .await?;
                    if !matches!(reply.result, Some(R::Subscribed(_))) {
                        for t in &tasks {
                            t.abort();
                        }
                        bail!(
                            "subscribing as {} failed: {:?}",
                            account.login,
                            reply.result
                        );
                    }
                    bar.inc(1);
                    Ok((conn, tasks))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
    bar.finish_and_clear();
    let mut conns = Conns {
        by_account: HashMap::new(),
        tasks: Vec::new(),
    };
    for r in opened {
        let (conn, tasks) = r?;
        conns.tasks.extend(tasks);
        conns.by_account.insert(conn.account_id, conn);
    }
    Ok(conns)
}

/// Counts of sends by outcome, kept by the sending loop.
#[derive(Debug, Default, Clone)]
struct SendCounts {
    attempted: u64,
    sent: u64,
    dropped_inflight: u64,
    dropped_queue: u64,
    dropped_closed: u64,
    submits_attempted: u64,
    submits_dropped: u64,
    with_photo: u64,
    sent_per_sec: Vec<u64>,
}

/// Whether send number `i` carries a photo, for `percent` of sends spread evenly.
fn with_photo(i: u64, percent: u8) -> bool {
    (i.wrapping_mul(37) % 100) < u64::from(percent)
}

/// Photo size uploaded per sender, KiB (a phone photo after the client's own downscaling).
const PHOTO_KIB: u32 = 200;

/// Uploads one photo per sender (each petition's resident and worker) over `POST /media`;
/// returns the media id per account.
async fn upload_photos(
    ctx: &Ctx<'_>,
    plan: &[PlannedPetition],
    accounts: &HashMap<String, Account>,
) -> anyhow::Result<HashMap<u64, String>> {
    let http = super::uploads::http_base(ctx);
    let mut senders: Vec<&Account> = plan
        .iter()
        .flat_map(|p| [&p.resident, &p.worker])
        .filter_map(|login| accounts.get(login))
        .collect();
    senders.sort_by_key(|a| a.id);
    senders.dedup_by_key(|a| a.id);
    let client = reqwest::Client::new();
    let bar = progress::counter(senders.len() as u64, "uploading one photo per sender");
    let uploaded: Vec<anyhow::Result<(u64, String)>> =
        futures_util::stream::iter(senders.into_iter().enumerate())
            .map(|(i, account)| {
                let (client, bar, url) = (client.clone(), bar.clone(), format!("{http}/media"));
                async move {
                    let photo = super::uploads::noise_jpeg(PHOTO_KIB, i as u32)?;
                    let (status, body) =
                        super::uploads::post_photo(&client, &url, &account.token, photo).await?;
                    anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
                    let body: serde_json::Value =
                        serde_json::from_str(&body).context("reading the upload's answer")?;
                    let id = body["id"]
                        .as_str()
                        .context("the upload's answer has no id")?
                        .to_owned();
                    bar.inc(1);
                    Ok((account.id, id))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    bar.finish_and_clear();
    uploaded.into_iter().collect()
}

/// Everything a load run measured.
pub struct LoadRun {
    connections: usize,
    metrics: Vec<Metric>,
    details: serde_json::Value,
    /// The target's samples during the load (sending plus drain).
    pub load_samples: Vec<Sample>,
    notes: Vec<String>,
}

impl LoadRun {
    /// Turns the run into a scenario outcome.
    pub fn outcome(self, ctx: &Ctx<'_>, shape: &LoadShape) -> Outcome {
        let params = serde_json::json!({
            "rate": shape.rate,
            "duration_secs": shape.duration_secs,
            "petitions": shape.petitions,
            "petition_rate": shape.petition_rate,
            "max_inflight": shape.max_inflight,
            "drain_secs": shape.drain_secs,
            "text_bytes": shape.text_bytes,
            "photo_percent": shape.photo_percent,
            "connections": self.connections,
            "target": ctx.url,
        });
        Outcome {
            params,
            metrics: self.metrics,
            details: self.details,
            notes: self.notes,
        }
    }
}

/// The server's own view of `send_message` latency (quantiles over the exporter's recent window,
/// seconds), read from `/metrics`; empty for the relay or when unavailable.
async fn server_side_latency(ctx: &Ctx<'_>) -> Vec<(String, f64)> {
    if ctx.is_relay() {
        return Vec::new();
    }
    let Some(addr) = ctx
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        return Vec::new();
    };
    match crate::spawn::http_get(addr, "/metrics").await {
        Ok((200, body)) => crate::spawn::request_quantiles(&body, "send_message"),
        _ => Vec::new(),
    }
}

/// Signs in, opens the petitions and connections, sends at the rate for the duration, drains,
/// and measures. Shared by `steady` and `soak`.
pub async fn run_load(ctx: &Ctx<'_>, shape: &LoadShape) -> anyhow::Result<LoadRun> {
    let run_id = accounts::run_id();
    let extra = if shape.petition_rate > 0.0 {
        schedule::total(shape.duration_secs, shape.petition_rate)
    } else {
        0
    };
    let plan = accounts::plan_petitions((shape.petitions + extra) as usize);
    let logins = accounts::logins_of(&plan);
    progress::note(&format!(
        "{} petitions between {} accounts; {} msg/s for {} s",
        shape.petitions,
        logins.len(),
        shape.rate,
        shape.duration_secs
    ));
    let mut accounts_map = accounts::sign_in_all(&ctx.url, &logins).await?;
    let initial_plan = &plan[..shape.petitions as usize];
    let opened = accounts::submit_all(&ctx.url, initial_plan, &accounts_map, &run_id).await?;
    accounts::refresh_heads(&ctx.url, &mut accounts_map).await?;
    let shared = Arc::new(Shared {
        track: Mutex::new(Track::new()),
        petitions: RwLock::new(Vec::new()),
        participants: RwLock::new(HashMap::new()),
        window: RwLock::new(None),
        plan: plan.clone(),
        accounts: accounts_map.clone(),
    });
    for p in &opened {
        shared.add_petition(p);
    }
    let photos = if shape.photo_percent > 0 && !ctx.is_relay() {
        upload_photos(ctx, &plan[..shape.petitions as usize], &accounts_map).await?
    } else {
        HashMap::new()
    };
    let conns = open_connections(ctx, &accounts_map, &shared).await?;
    let text = message_text(shape.text_bytes as usize);
    let max_inflight = shape.max_inflight as usize;
    let length = Duration::from_secs(shape.duration_secs);

    // Let set-up traffic settle, then take the "before" readings.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0_sampler = ctx.sampler_secs();
    let server_before = ctx.snapshot();
    let me_before = crate::procstat::read(None).ok();
    let start = Instant::now();
    *write(&shared.window) = Some((start, length));

    let bar = progress::timer(shape.duration_secs, "sending");
    let mut counts = SendCounts::default();
    let mut tick =
        tokio::time::interval(schedule::tick_period(shape.rate.max(shape.petition_rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_plan = shape.petitions as usize;
    let mut last_second = 0;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed().min(length);
        let due = schedule::due(elapsed, shape.rate);
        if due > counts.attempted {
            // Held while sending (no await inside): a reader adding a petition waits briefly.
            let petitions = read(&shared.petitions);
            while counts.attempted < due {
                let i = counts.attempted;
                counts.attempted += 1;
                let sec = elapsed.as_secs() as usize;
                if counts.sent_per_sec.len() <= sec {
                    counts.sent_per_sec.resize(sec + 1, 0);
                }
                let p = &petitions[i as usize % petitions.len()];
                let k = p.sent.fetch_add(1, Ordering::Relaxed);
                let sender = if k.is_multiple_of(2) {
                    p.resident_id
                } else {
                    p.worker_id
                };
                let Some(conn) = conns.by_account.get(&sender) else {
                    counts.dropped_closed += 1;
                    continue;
                };
                let client_msg_id = format!("{run_id}-{i}");
                let media_ids = match photos.get(&sender) {
                    Some(id) if with_photo(i, shape.photo_percent) => {
                        counts.with_photo += 1;
                        vec![id.clone()]
                    }
                    _ => Vec::new(),
                };
                let request = Request::SendMessage(SendMessage {
                    petition_id: p.id,
                    text: text.clone(),
                    client_msg_id: client_msg_id.clone(),
                    media_ids,
                });
                match conn.request(
                    request,
                    PendingKind::Message { client_msg_id },
                    max_inflight,
                ) {
                    Ok(()) => {
                        counts.sent += 1;
                        counts.sent_per_sec[sec] += 1;
                    }
                    Err(Refused::Inflight) => counts.dropped_inflight += 1,
                    Err(Refused::Queue) => counts.dropped_queue += 1,
                    Err(Refused::Closed) => counts.dropped_closed += 1,
                }
            }
        }
        if shape.petition_rate > 0.0 {
            let due = schedule::due(elapsed, shape.petition_rate);
            while counts.submits_attempted < due && next_plan < plan.len() {
                counts.submits_attempted += 1;
                let planned = &plan[next_plan];
                let request = accounts::submit_request(
                    planned,
                    &accounts_map,
                    format!("{run_id}-p{next_plan}"),
                )?;
                next_plan += 1;
                let resident = accounts_map.get(&planned.resident).map_or(0, |a| a.id);
                let sent = conns.by_account.get(&resident).map(|c| {
                    c.request(
                        Request::SubmitPetition(request),
                        PendingKind::Submit,
                        max_inflight,
                    )
                });
                if !matches!(sent, Some(Ok(()))) {
                    counts.submits_dropped += 1;
                }
            }
        }
        let second = elapsed.as_secs();
        if second != last_second {
            last_second = second;
            bar.set_position(second);
            let t = lock(&shared.track);
            bar.set_message(format!(
                "sent {} acked {} errors {} dropped {}",
                counts.sent,
                t.acked,
                t.errors.values().sum::<u64>(),
                counts.dropped_inflight + counts.dropped_queue + counts.dropped_closed
            ));
        }
        if elapsed >= length {
            break;
        }
    }
    bar.finish_and_clear();
    let send_end = Instant::now();

    // Drain: wait for outstanding replies and deliveries.
    let drain_bar = progress::timer(shape.drain_secs, "draining");
    let drain_deadline = send_end + Duration::from_secs(shape.drain_secs);
    loop {
        let open: usize = conns.by_account.values().map(|c| c.open_requests()).sum();
        let awaiting = lock(&shared.track).awaiting.len();
        if (open == 0 && awaiting == 0) || Instant::now() >= drain_deadline {
            break;
        }
        drain_bar.set_position(send_end.elapsed().as_secs());
        drain_bar.set_message(format!(
            "{open} replies and {awaiting} deliveries outstanding"
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drain_bar.finish_and_clear();
    let end = Instant::now();
    let server_side = server_side_latency(ctx).await;
    let server_after = ctx.snapshot();
    let me_after = crate::procstat::read(None).ok();
    let unanswered: usize = conns.by_account.values().map(|c| c.open_requests()).sum();
    let connections = conns.by_account.len();
    let petitions_at_end = read(&shared.petitions).len();
    drop(conns);

    let t = lock(&shared.track);
    let load_samples = ctx.samples_since(t0_sampler);
    let secs = length.as_secs_f64();
    let active_secs = t.last_ack.map_or(secs, |l| {
        l.saturating_duration_since(start).as_secs_f64().max(secs)
    });
    let achieved = t.acked as f64 / active_secs;
    let ack = LatencySummary::of(&t.ack);
    let e2e = LatencySummary::of(&t.e2e);
    let submit = LatencySummary::of(&t.submit);
    let errors_total: u64 = t.errors.values().sum();
    let dropped = counts.dropped_inflight + counts.dropped_queue + counts.dropped_closed;
    let wall = (end - start).as_secs_f64();
    let server_cpu = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let me_cpu = match (me_before, me_after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let rss_max = load_samples.iter().map(|s| s.snapshot.rss_bytes).max();

    let mut metrics = vec![
        Metric::new(
            "offered_msgs_per_sec",
            "offered rate",
            shape.rate,
            Unit::PerSec,
            Better::Neither,
        ),
        Metric::new(
            "sent_msgs_per_sec",
            "sent rate",
            counts.sent as f64 / secs,
            Unit::PerSec,
            Better::Higher,
        ),
        Metric::new(
            "achieved_msgs_per_sec",
            "achieved rate (acks)",
            achieved,
            Unit::PerSec,
            Better::Higher,
        ),
        Metric::new(
            "acked",
            "messages acknowledged",
            t.acked as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "dropped",
            "sends dropped (in-flight bound)",
            dropped as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "errors",
            "error replies",
            errors_total as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "unanswered",
            "sends never answered",
            (unanswered as u64 + t.lost_on_close) as f64,
            Unit::Count,
            Better::Lower,
        ),
    ];
    metrics.extend(ack.metrics("ack", "ack latency"));
    metrics.extend(e2e.metrics("e2e", "delivery latency"));
    metrics.push(Metric::new(
        "undelivered",
        "acked but not delivered",
        t.awaiting.len() as f64,
        Unit::Count,
        Better::Lower,
    ));
    metrics.push(Metric::new(
        "cursor_errors",
        "feed cursor gaps + duplicates",
        (t.cursor_gaps + t.cursor_duplicates) as f64,
        Unit::Count,
        Better::Lower,
    ));
    if let Some(cpu) = server_cpu {
        metrics.push(Metric::new(
            "server_cpu_cores",
            "target CPU",
            cpu / wall,
            Unit::Cores,
            Better::Lower,
        ));
        if t.acked > 0 {
            metrics.push(Metric::new(
                "server_cpu_us_per_msg",
                "target CPU per message",
                cpu * 1e6 / t.acked as f64,
                Unit::Micros,
                Better::Lower,
            ));
        }
    }
    if let (Some(b), Some(a)) = (
        server_before.and_then(|s| s.disk_write_bytes),
        server_after.and_then(|s| s.disk_write_bytes),
    ) && t.acked > 0
    {
        metrics.push(Metric::new(
            "server_disk_bytes_per_msg",
            "target disk writes per message",
            a.saturating_sub(b) as f64 / t.acked as f64,
            Unit::Bytes,
            Better::Lower,
        ));
    }
    if let Some(p999) = server_side
        .iter()
        .find(|(q, _)| q == "0.999")
        .map(|(_, v)| *v)
    {
        metrics.push(Metric::new(
            "server_side_p999_us",
            "server-side send_message p99.9 (/metrics)",
            p999 * 1e6,
            Unit::Micros,
            Better::Lower,
        ));
    }
    if let Some(rss) = rss_max {
        metrics.push(Metric::new(
            "server_peak_rss_bytes",
            "target peak RSS (during load)",
            rss as f64,
            Unit::Bytes,
            Better::Lower,
        ));
    }
    if let Some(cpu) = me_cpu {
        metrics.push(Metric::new(
            "loadgen_cpu_cores",
            "load generator CPU",
            cpu / wall,
            Unit::Cores,
            Better::Neither,
        ));
    }

    let per_second: Vec<serde_json::Value> =
        (0..counts.sent_per_sec.len().max(t.acks_per_sec.len()))
            .map(|s| {
                serde_json::json!({
                    "second": s,
                    "sent": counts.sent_per_sec.get(s).copied().unwrap_or(0),
                    "acked": t.acks_per_sec.get(s).copied().unwrap_or(0),
                "ack_max_us": t.ack_max_us_per_sec.get(s).copied().unwrap_or(0),
                })
            })
            .collect();
    let details = serde_json::json!({
        "connections": connections,
        "accounts": accounts_map.len(),
        "petitions_at_start": opened.len(),
        "petitions_at_end": petitions_at_end,
        "sends": {
            "attempted": counts.attempted,
            "sent": counts.sent,
            "dropped_inflight": counts.dropped_inflight,
            "dropped_queue": counts.dropped_queue,
            "dropped_closed": counts.dropped_closed,
            "submits_attempted": counts.submits_attempted,
            "submits_dropped": counts.submits_dropped,
            "sent_with_photo": counts.with_photo,
        },
        "acked": t.acked,
        "acked_within_duration": t.acked_in_window,
        "acked_within_duration_per_sec": t.acked_in_window as f64 / secs,
        "duplicate_acks": t.duplicate_acks,
        "errors_by_code": t.errors,
        "unexpected_replies": t.unexpected_replies,
        "unanswered_at_end": unanswered,
        "lost_when_a_connection_closed": t.lost_on_close,
        "ack_latency": ack,
        "delivery_latency": e2e,
        "submit_latency": submit,
        "delivered": t.delivered,
        "acked_not_delivered": t.awaiting.len(),
        "delivered_without_ack": t.early.len(),
        "client_msg_id_mismatches": t.client_msg_id_mismatches,
        "text_events_received": t.text_events,
        "petition_notices_received": t.notices,
        "other_events_received": t.other_events,
        "cursor_gaps": t.cursor_gaps,
        "cursor_duplicates": t.cursor_duplicates,
        "submitted_during_run": t.submitted,
        "closed_connections": t.closed_connections,
        "close_reasons": t.close_reasons,
        "load_wall_secs": wall,
        "send_secs": secs,
        "active_secs": active_secs,
        "server_cpu_secs": server_cpu,
        "loadgen_cpu_secs": me_cpu,
        "server_rss_before_bytes": server_before.map(|s| s.rss_bytes),
        "server_rss_after_bytes": server_after.map(|s| s.rss_bytes),
        "server_rss_max_during_load_bytes": rss_max,
        "per_second": per_second,
        "server_side_send_message_seconds": server_side
            .iter()
            .map(|(q, v)| (q.clone(), *v))
            .collect::<BTreeMap<String, f64>>(),
    });
    let mut notes = vec![if counts.with_photo > 0 {
        format!(
            "messages carry {} bytes of text; {} of them ({} %) also a photo of {PHOTO_KIB} KiB \
             uploaded before the run",
            shape.text_bytes, counts.with_photo, shape.photo_percent
        )
    } else {
        format!("every message is text only ({} bytes)", shape.text_bytes)
    }];
    if shape.photo_percent > 0 && ctx.is_relay() {
        notes.push("the relay stores no media: its messages are text only".to_owned());
    }
    if ctx.is_relay() {
        notes.push(
            "bare relay: no storage, no durability (acks before any disk write), in-memory feeds, \
             no access rules, no idempotency, no Respond transition"
                .to_owned(),
        );
    }
    if dropped > 0 {
        notes.push(format!(
            "{dropped} sends were dropped because a connection had {max_inflight} requests \
             unanswered (the target could not keep up with the offered rate)"
        ));
    }
    drop(t);
    Ok(LoadRun {
        connections,
        metrics,
        details,
        load_samples,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_have_the_asked_size() {
        for n in [1, 2, 3, 10, 60, 61, 500] {
            let t = message_text(n);
            assert_eq!(t.len(), n, "{n}: {t}");
            assert!(!t.trim().is_empty());
        }
        assert!(message_text(60).starts_with("您好"));
    }
}
