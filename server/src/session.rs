//! One WebSocket connection: a tokio task that decodes frames, answers each request exactly once,
//! and streams the account's feed.
//!
//! Replies go out in the form of the request's frame (binary → protobuf, text → JSON). Feed events
//! go out in the form of the first frame the client sent. The feed is read from storage on
//! `Subscribe` and whenever the live queue fell behind, so a session never misses or repeats an
//! event: it only ever sends the cursor after the last one it sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use lianxin_actors::county::{County, caller_of};
use lianxin_actors::error::DomainError;
use lianxin_actors::hub::{Push, Registration};
use lianxin_actors::petition::{CallerInfo, PetitionReply, PetitionRequest};
use lianxin_protocol::codec::{self, Wire};
use lianxin_protocol::reply;
use lianxin_protocol::v1::{
    BoardUpdate, ClientFrame, Empty, ErrorCode, EscalationTarget, Event, MediaKind, PetitionResult,
    PointsEntry, Pong, RatingLevel, ServerFrame, SignedIn, Subscribed, UploadChunk,
    client_frame::Request, reply::Result as R, server_frame,
};
use lianxin_storage::AccountRecord;
use prost::Message as _;
use tokio::sync::watch;
use tracing::Instrument;

use crate::auth::{self, AuthError, Registration as NewResident};
use crate::config::Config;
use crate::limits::{RequestLimit, SignInLimiter, Verdict};

/// Board updates queued for a session before the board waits and resends the whole board.
const BOARD_QUEUE: usize = 8;

/// The refusal of a sign-in over `limits.max_connections_per_account`.
const TOO_MANY_CONNECTIONS: &str = "too many connections for this account: close one first";

/// Close codes the server uses (see docs/protocol.md).
pub mod close {
    /// The client signed out.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// No sign-in within the sign-in deadline.
    pub const SIGN_IN_TIMEOUT: u16 = 4001;
    /// No frame (not even a pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The session was revoked (signed out everywhere).
    pub const REVOKED: u16 = 4003;
    /// The session token expired.
    pub const EXPIRED: u16 = 4004;
    /// The client did not read its frames fast enough.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// A sustained flood of requests over the rate limit, or a connection over the account's
    /// connection limit.
    pub const RATE_LIMITED: u16 = 4009;
    /// A frame or message larger than twice the frame limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client broke the WebSocket protocol (e.g. invalid UTF-8 in a text frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
}

/// How to close after a failed read: a too-large message or a protocol violation gets its close
/// code; a vanished peer gets nothing.
fn read_failure(e: axum::Error) -> Option<Ending> {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(inner) => match *inner {
            tungstenite::Error::Capacity(_) => Some(Ending {
                code: close::TOO_BIG,
                reason: "message too big",
            }),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => Some(Ending {
                code: close::PROTOCOL_ERROR,
                reason: "websocket protocol error",
            }),
            _ => None,
        },
        Err(_) => None,
    }
}

/// What every session shares.
#[derive(Clone)]
pub struct AppState {
    /// The running domain.
    pub county: County,
    /// The configuration.
    pub config: Arc<Config>,
    /// Turns true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Held by every running session; the server waits until all are dropped.
    pub alive: tokio::sync::mpsc::Sender<()>,
    /// Failed sign-ins per account and per address.
    pub sign_ins: Arc<SignInLimiter>,
    /// Uploads being decoded and stored (`media.processing_slots` at once).
    pub media_slots: Arc<tokio::sync::Semaphore>,
}

/// An authenticated connection's identity.
struct Authed {
    /// The account.
    account: AccountRecord,
    /// The caller built from it.
    caller: CallerInfo,
    /// The session token's hash (for sign-out).
    token_hash: [u8; 32],
    /// When the session token expires; the connection ends then.
    expires_at_ms: i64,
    /// Live pushes from the hub.
    registration: Registration,
}

/// Why a session ends.
struct Ending {
    code: u16,
    reason: &'static str,
}

/// The connection's state.
struct Session {
    /// Shared server state.
    app: AppState,
    /// Socket.
    ws: WebSocket,
    /// Form of the first frame, used for events.
    event_wire: Option<Wire>,
    /// Set once signed in.
    authed: Option<Authed>,
    /// Last feed cursor sent, once subscribed.
    cursor: Option<u64>,
    /// When the last frame arrived from the client.
    last_seen: Instant,
    /// Ending requested by a request handler (sign-out).
    ending: Option<Ending>,
    /// A Subscribe was just answered; the backlog follows the reply.
    catching_up: bool,
    /// Updates of the watched board, once WatchBoard was asked.
    board: Option<tokio::sync::mpsc::Receiver<BoardUpdate>>,
    /// The client's address.
    peer: std::net::SocketAddr,
    /// When the connection opened (the request limit's time scale).
    opened: tokio::time::Instant,
    /// The request rate limit.
    requests: RequestLimit,
    /// Frames were queued on the socket since its last flush.
    unflushed: bool,
    /// After a refusal for the rate, nothing more is read from the socket until then.
    reads_paused_until: Option<tokio::time::Instant>,
    /// Live events that arrived ahead of a cursor not yet sent, by cursor.
    ahead: std::collections::BTreeMap<u64, Bytes>,
    /// When the missing cursor is read from storage if it has not arrived live by then.
    gap_deadline: Option<tokio::time::Instant>,
    /// The series every frame or message updates, looked up once per connection.
    hot: HotMetrics,
}

/// Handles on the metrics a session updates for every frame: the registry is searched once,
/// when the connection opens, not once per frame.
struct HotMetrics {
    frames_in: metrics::Counter,
    events_out: metrics::Counter,
    send_message_seconds: metrics::Histogram,
}

impl HotMetrics {
    fn new() -> HotMetrics {
        HotMetrics {
            frames_in: metrics::counter!("lianxin_frames_in_total"),
            events_out: metrics::counter!("lianxin_events_out_total"),
            send_message_seconds: metrics::histogram!("lianxin_request_seconds", "request" => "send_message"),
        }
    }
}

/// Account already signed in by the `Authorization` header.
pub struct PreAuth {
    /// The account.
    pub account: AccountRecord,
    /// Its session's token hash.
    pub token_hash: [u8; 32],
    /// When the session token expires.
    pub expires_at_ms: i64,
}

/// Runs one connection to its end.
pub async fn run(ws: WebSocket, app: AppState, peer: std::net::SocketAddr, pre: Option<PreAuth>) {
    let span = tracing::info_span!("connection", %peer, account = tracing::field::Empty);
    async move {
        metrics::gauge!("lianxin_connections").increment(1.0);
        let requests = RequestLimit::new(&app.config.limits, 0);
        let mut session = Session {
            app,
            ws,
            event_wire: None,
            authed: None,
            cursor: None,
            last_seen: Instant::now(),
            ending: None,
            catching_up: false,
            board: None,
            peer,
            opened: tokio::time::Instant::now(),
            requests,
            unflushed: false,
            reads_paused_until: None,
            ahead: std::collections::BTreeMap::new(),
            gap_deadline: None,
            hot: HotMetrics::new(),
        };
        let mut ending = None;
        if let Some(pre) = pre
            && session
                .sign_in_as(pre.account, pre.token_hash, pre.expires_at_ms)
                .is_err()
        {
            ending = Some(Some(Ending {
                code: close::RATE_LIMITED,
                reason: "too many connections for this account",
            }));
        }
        let ending = match ending {
            Some(e) => e,
            None => session.serve().await,
        };
        session.finish(ending).await;
        drop(session);
        metrics::gauge!("lianxin_connections").decrement(1.0);
    }
    .instrument(span)
    .await
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n.max(1))
}

/// Live events queued at once after a step of the main loop, before the write.
const DRAIN_AT_ONCE: usize = 64;

/// Live events kept while one before them is missing; past that the gap is read from storage.
const MAX_AHEAD: usize = 64;

/// How long a missing live event is waited for before it is read from storage.
const GAP_WAIT: Duration = Duration::from_millis(50);

/// The outcome of a timed write: a failed socket ends the session silently, a timeout ends it as
/// a slow consumer.
fn slow_consumer(
    outcome: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>,
) -> Result<(), Option<Ending>> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            metrics::counter!("lianxin_slow_consumer_total").increment(1);
            Err(Some(Ending {
                code: close::SLOW_CONSUMER,
                reason: "slow consumer: resume from your cursor",
            }))
        }
    }
}

impl Session {
    fn limits(&self) -> &crate::config::Limits {
        &self.app.config.limits
    }

    /// The most connections an account may have signed in at once.
    fn max_connections(&self) -> usize {
        match self.limits().max_connections_per_account {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    fn sign_in_as(
        &mut self,
        account: AccountRecord,
        token_hash: [u8; 32],
        expires_at_ms: i64,
    ) -> Result<(), Refusal> {
        let Some(registration) = self.app.county.hub().register_at_most(
            account.id,
            self.limits().outbound_queue,
            self.max_connections(),
        ) else {
            return Err(Refusal::new(ErrorCode::RateLimited, TOO_MANY_CONNECTIONS));
        };
        tracing::Span::current().record("account", account.id);
        self.app.county.device_presence(&account, true);
        self.authed = Some(Authed {
            caller: caller_of(&account),
            account,
            token_hash,
            expires_at_ms,
            registration,
        });
        Ok(())
    }

    async fn finish(&mut self, ending: Option<Ending>) {
        if let Some(authed) = self.authed.take() {
            if self.board.take().is_some() {
                self.app.county.unwatch_board(authed.registration.id);
            }
            self.app
                .county
                .hub()
                .unregister(authed.account.id, authed.registration.id);
            self.app.county.device_presence(&authed.account, false);
        }
        if let Some(e) = ending {
            tracing::debug!(code = e.code, reason = e.reason, "closing connection");
            let frame = CloseFrame {
                code: e.code,
                reason: Utf8Bytes::from_static(e.reason),
            };
            let send = self.ws.send(Message::Close(Some(frame)));
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), send).await {
                // The close handshake: frames the client sent before it read our close are read
                // and dropped until its close reply. Closing the socket with them unread would
                // reset the connection, and the client could lose our close frame (its code).
                let handshake = async {
                    while let Some(Ok(m)) = self.ws.next().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), handshake).await;
            }
        }
    }

    /// The main loop; returns how to close, or None when the socket is already gone.
    async fn serve(&mut self) -> Option<Ending> {
        let ping_every = secs(self.limits().ping_interval_secs);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let auth_deadline = tokio::time::sleep(secs(self.limits().auth_timeout_secs));
        tokio::pin!(auth_deadline);
        let mut shutdown = self.app.shutdown.clone();
        loop {
            if let Some(e) = self.ending.take() {
                return Some(e);
            }
            let authed = self.authed.is_some();
            let signals = self.authed.as_ref().map(|a| a.registration.signals.clone());
            let paused = self.reads_paused_until;
            let gap = self.gap_deadline;
            tokio::select! {
                _ = reads_resume(paused) => self.reads_paused_until = None,
                _ = reads_resume(gap) => {
                    if let Err(e) = self.close_gap().await {
                        return e;
                    }
                }
                incoming = self.ws.next(), if paused.is_none() => match incoming {
                    Some(Ok(msg)) => {
                        self.last_seen = Instant::now();
                        if let Err(e) = self.on_message(msg).await {
                            return e;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        return read_failure(e);
                    }
                    None => return None,
                },
                push = next_push(&mut self.authed) => {
                    if let Err(e) = self.on_push(push).await {
                        return e;
                    }
                }
                update = next_board_update(&mut self.board) => {
                    if let Err(e) = self.on_board_update(update).await {
                        return e;
                    }
                }
                _ = lag_signal(signals) => {
                    if let Err(e) = self.on_lag().await {
                        return e;
                    }
                }
                _ = ping.tick() => {
                    if self.last_seen.elapsed() > secs(self.limits().idle_timeout_secs) {
                        return Some(Ending { code: close::IDLE_TIMEOUT, reason: "idle timeout" });
                    }
                    if self.expired(self.app.county.clock().now_ms()) {
                        return Some(Ending { code: close::EXPIRED, reason: "session expired" });
                    }
                    if let Err(e) = self.send(Message::Ping(Bytes::new())).await {
                        return e;
                    }
                }
                _ = &mut auth_deadline, if !authed => {
                    return Some(Ending { code: close::SIGN_IN_TIMEOUT, reason: "sign-in timeout" });
                }
                _ = shutdown.changed() => {
                    return Some(Ending { code: close::GOING_AWAY, reason: "server shutting down" });
                }
            }
            // What this step queued, with the live events already waiting, leaves in one write.
            if let Err(e) = self.flush_out().await {
                return e;
            }
        }
    }

    /// Sends one frame (and every frame queued before it), closing the connection as a slow
    /// consumer if it cannot be written in time.
    async fn send(&mut self, msg: Message) -> Result<(), Option<Ending>> {
        let timeout = secs(self.limits().send_timeout_secs);
        self.unflushed = false;
        slow_consumer(tokio::time::timeout(timeout, self.ws.send(msg)).await)
    }

    /// Queues one frame; it is written with the next [`Session::flush_out`] (or sooner, once the
    /// queued frames pass the WebSocket's write buffer size). Replies and events go this way, so
    /// that frames ready together leave in one write.
    async fn feed(&mut self, msg: Message) -> Result<(), Option<Ending>> {
        let timeout = secs(self.limits().send_timeout_secs);
        self.unflushed = true;
        slow_consumer(tokio::time::timeout(timeout, self.ws.feed(msg)).await)
    }

    /// Queues the live events that are already waiting (up to [`DRAIN_AT_ONCE`]), then writes
    /// everything queued. Called after every step of the main loop.
    async fn flush_out(&mut self) -> Result<(), Option<Ending>> {
        for _ in 0..DRAIN_AT_ONCE {
            let Some(push) = self
                .authed
                .as_mut()
                .and_then(|a| a.registration.rx.try_recv().ok())
            else {
                break;
            };
            self.on_push(Some(push)).await?;
        }
        if !self.unflushed {
            return Ok(());
        }
        let timeout = secs(self.limits().send_timeout_secs);
        self.unflushed = false;
        slow_consumer(tokio::time::timeout(timeout, self.ws.flush()).await)
    }

    async fn send_frame(&mut self, frame: &ServerFrame, wire: Wire) -> Result<(), Option<Ending>> {
        let msg = match wire {
            Wire::Binary => Message::Binary(codec::encode_binary(frame)),
            Wire::Json => match codec::try_encode_json(frame) {
                Ok(text) => Message::Text(text.into()),
                Err(e) => {
                    // An enum number without a name (found by fuzzing): the client still gets an
                    // answer with its request's id, never an empty object.
                    tracing::error!(error = %e, "a frame has no JSON form");
                    let id = match &frame.frame {
                        Some(server_frame::Frame::Reply(r)) => r.id,
                        _ => return Ok(()),
                    };
                    let fallback = reply::error(
                        id,
                        ErrorCode::Internal,
                        "the reply cannot be expressed in JSON; use binary frames",
                    );
                    Message::Text(codec::encode_json(&fallback).into())
                }
            },
        };
        self.feed(msg).await
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), Option<Ending>> {
        let (payload, wire) = match msg {
            Message::Binary(b) => (b, Wire::Binary),
            Message::Text(t) => (Bytes::from(t), Wire::Json),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(None),
        };
        self.event_wire.get_or_insert(wire);
        self.hot.frames_in.increment(1);
        let limit = self.limits().max_frame_bytes;
        let now = i64::try_from(self.opened.elapsed().as_millis()).unwrap_or(i64::MAX);
        let verdict = self.requests.check(now);
        if verdict != Verdict::Allow {
            metrics::counter!("lianxin_rate_limited_total").increment(1);
            // The id is read so that the client can match the refusal to its request.
            let id = codec::decode::<ClientFrame>(&payload, wire, limit).map_or(0, |f| f.id);
            let reply = reply::error(
                id,
                ErrorCode::RateLimited,
                "too many requests on this connection: slow down",
            );
            self.send_frame(&reply, wire).await?;
            if verdict == Verdict::Close {
                tracing::info!("closing a connection that floods requests");
                return Err(Some(Ending {
                    code: close::RATE_LIMITED,
                    reason: "too many requests",
                }));
            }
            // Reading stops until the next request could be allowed: a flood then waits in the
            // client's socket instead of costing the server a refusal per frame.
            let pause = u64::try_from(self.requests.pause_ms(now)).unwrap_or(0);
            if pause > 0 {
                self.reads_paused_until =
                    Some(tokio::time::Instant::now() + Duration::from_millis(pause));
            }
            return Ok(());
        }
        let reply = match codec::decode::<ClientFrame>(&payload, wire, limit) {
            Ok(frame) => self.on_request(frame).await,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable frame");
                metrics::counter!("lianxin_bad_frames_total").increment(1);
                reply::error(e.request_id(), e.code(), e.to_string())
            }
        };
        self.send_frame(&reply, wire).await?;
        // The backlog owed after a Subscribe reply follows it.
        if self.catching_up {
            self.catching_up = false;
            self.fill(None).await?;
        }
        Ok(())
    }

    async fn on_request(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = frame.id;
        let Some(request) = frame.request else {
            return reply::error(
                id,
                ErrorCode::UnknownRequest,
                "the frame carries no request this server knows",
            );
        };
        let name = request_name(&request);
        let started = Instant::now();
        let result = self.dispatch(request).await;
        let took = started.elapsed().as_secs_f64();
        if name == "send_message" {
            self.hot.send_message_seconds.record(took);
        } else {
            metrics::histogram!("lianxin_request_seconds", "request" => name).record(took);
        }
        match result {
            Ok(r) => reply::ok(id, r),
            Err(e) => {
                metrics::counter!("lianxin_request_errors_total", "request" => name, "code" => e.code.as_str_name())
                    .increment(1);
                reply::error(id, e.code, e.message)
            }
        }
    }

    /// Whether the signed-in session's token has expired.
    fn expired(&self, now_ms: i64) -> bool {
        self.authed
            .as_ref()
            .is_some_and(|a| a.expires_at_ms <= now_ms)
    }

    /// This session's id (its hub registration), 0 before sign-in.
    fn session_id(&self) -> u64 {
        self.authed.as_ref().map_or(0, |a| a.registration.id)
    }

    fn caller(&self) -> Result<&CallerInfo, Refusal> {
        self.authed
            .as_ref()
            .map(|a| &a.caller)
            .ok_or_else(|| Refusal::new(ErrorCode::Unauthenticated, "sign in first"))
    }

    async fn dispatch(&mut self, request: Request) -> Result<R, Refusal> {
        let county = self.app.county.clone();
        let now = county.clock().now_ms();
        if self.expired(now) {
            self.ending = Some(Ending {
                code: close::EXPIRED,
                reason: "session expired",
            });
            return Err(Refusal::new(
                ErrorCode::Unauthenticated,
                "the session expired: sign in again",
            ));
        }
        let ttl_ms = i64::try_from(self.limits().session_ttl().as_millis()).unwrap_or(i64::MAX);
        match request {
            Request::Ping(_) => Ok(R::Pong(Pong {
                server_time_ms: now,
            })),
            Request::SignIn(s) => {
                self.not_yet_signed_in()?;
                let sign_ins = self.app.sign_ins.clone();
                let max = self.max_connections();
                let hub_county = county.clone();
                let admit = move |a: &AccountRecord| {
                    if hub_county.hub().sessions_of(a.id) >= max {
                        Err(AuthError::RateLimited(TOO_MANY_CONNECTIONS))
                    } else {
                        Ok(())
                    }
                };
                let gate = auth::SignInGate {
                    limiter: &sign_ins,
                    ip: self.peer.ip(),
                    admit: &admit,
                };
                let (account, session) = auth::sign_in(
                    county.store(),
                    &s.login,
                    &s.password,
                    &s.device,
                    now,
                    ttl_ms,
                    gate,
                )
                .await?;
                let reply = SignedIn {
                    token: session.token,
                    expires_at_ms: session.record.expires_at_ms,
                    account: Some(account.public()),
                };
                if let Err(refusal) =
                    self.sign_in_as(account, session.token_hash, session.record.expires_at_ms)
                {
                    // Another connection took the last place meanwhile: the token dies unused.
                    county
                        .store()
                        .delete_session(&session.token_hash)
                        .map_err(DomainError::from)?;
                    return Err(refusal);
                }
                Ok(R::SignedIn(reply))
            }
            Request::Register(r) => {
                self.not_yet_signed_in()?;
                if !self.app.sign_ins.register(self.peer.ip(), now) {
                    return Err(Refusal::new(
                        ErrorCode::RateLimited,
                        "too many registrations from this address; try again later",
                    ));
                }
                let account = auth::register(
                    county.store(),
                    NewResident {
                        login: r.login,
                        password: r.password,
                        display_name: r.display_name,
                        address: r.address,
                    },
                    now,
                )
                .await?;
                let session =
                    auth::start_session(county.store(), account.id, &r.device, now, ttl_ms)?;
                county.store().durable().await.map_err(DomainError::from)?;
                let reply = SignedIn {
                    token: session.token,
                    expires_at_ms: session.record.expires_at_ms,
                    account: Some(account.public()),
                };
                self.sign_in_as(account, session.token_hash, session.record.expires_at_ms)?;
                Ok(R::SignedIn(reply))
            }
            Request::Authenticate(a) => {
                self.not_yet_signed_in()?;
                let (account, hash, session) = auth::authenticate(county.store(), &a.token, now)?;
                let reply = SignedIn {
                    token: String::new(),
                    expires_at_ms: session.expires_at_ms,
                    account: Some(account.public()),
                };
                self.sign_in_as(account, hash, session.expires_at_ms)?;
                Ok(R::SignedIn(reply))
            }
            Request::LookupAddress(l) => Ok(R::Grid(county.lookup_address(&l.address).await?)),
            other => self.dispatch_signed_in(other, now).await,
        }
    }

    fn not_yet_signed_in(&self) -> Result<(), Refusal> {
        if self.authed.is_some() {
            Err(Refusal::new(
                ErrorCode::Forbidden,
                "this connection is already signed in",
            ))
        } else {
            Ok(())
        }
    }

    async fn dispatch_signed_in(&mut self, request: Request, _now: i64) -> Result<R, Refusal> {
        let county = self.app.county.clone();
        let who = self.caller()?.clone();
        let petition = |reply: PetitionReply| match reply {
            PetitionReply::Petition(p) => Ok(R::Petition(PetitionResult { petition: Some(p) })),
            PetitionReply::Ack(a) => Ok(R::MessageAck(a)),
            PetitionReply::Detail(d) => Ok(R::PetitionDetail(d)),
            PetitionReply::Done | PetitionReply::Supervised(_) => {
                Ok(R::Ok(lianxin_protocol::v1::Empty {}))
            }
        };
        match request {
            Request::SignOut(_) => {
                if let Some(a) = &self.authed {
                    county
                        .store()
                        .delete_session(&a.token_hash)
                        .map_err(DomainError::from)?;
                    county.store().durable().await.map_err(DomainError::from)?;
                }
                self.ending = Some(Ending {
                    code: close::NORMAL,
                    reason: "signed out",
                });
                Ok(R::Ok(lianxin_protocol::v1::Empty {}))
            }
            Request::SignOutEverywhere(_) => {
                if let Some(a) = &self.authed {
                    county
                        .store()
                        .delete_sessions_of(a.account.id)
                        .map_err(DomainError::from)?;
                    county.store().durable().await.map_err(DomainError::from)?;
                    county.hub().revoke(a.account.id, Some(a.registration.id));
                }
                self.ending = Some(Ending {
                    code: close::NORMAL,
                    reason: "signed out everywhere",
                });
                Ok(R::Ok(lianxin_protocol::v1::Empty {}))
            }
            Request::Subscribe(s) => {
                let head = county
                    .store()
                    .feed_head(who.caller.account_id)
                    .map_err(DomainError::from)?;
                if s.after_cursor > head {
                    return Err(Refusal::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "cursor {} is ahead of this feed (newest is {head})",
                            s.after_cursor
                        ),
                    ));
                }
                self.cursor = Some(s.after_cursor);
                self.catching_up = true;
                self.ahead.clear();
                self.gap_deadline = None;
                Ok(R::Subscribed(Subscribed { head_cursor: head }))
            }
            Request::SubmitPetition(s) => {
                let p = county.submit(&who, s).await?;
                Ok(R::Petition(PetitionResult { petition: Some(p) }))
            }
            Request::SendMessage(_)
            | Request::MarkRead(_)
            | Request::Transfer(_)
            | Request::Escalate(_)
            | Request::Resolve(_)
            | Request::Close(_)
            | Request::Withdraw(_)
            | Request::Rate(_)
            | Request::Reopen(_)
            | Request::GetPetition(_) => {
                let (petition_id, req) = petition_request(request)?;
                petition(county.petition(petition_id, &who, req).await?)
            }
            Request::ListPetitions(l) => Ok(R::Petitions(county.list_petitions(
                &who,
                &l.states,
                l.before_id,
                l.limit,
            )?)),
            Request::GetHistory(h) => Ok(R::History(county.history(
                &who,
                h.petition_id,
                h.after_seq,
                h.limit,
            )?)),
            Request::GetMyGrid(_) => Ok(R::Grid(county.my_grid(&who).await?)),
            Request::GetInbox(_) => Ok(R::Petitions(county.inbox(&who)?)),
            Request::WatchBoard(w) => {
                let session = self.session_id();
                let (tx, rx) = tokio::sync::mpsc::channel(BOARD_QUEUE);
                let board = county.watch_board(session, &who, w, tx).await?;
                self.board = Some(rx);
                Ok(R::Board(board))
            }
            Request::UnwatchBoard(_) => {
                if self.board.take().is_some() {
                    county.unwatch_board(self.session_id());
                }
                Ok(R::Ok(Empty {}))
            }
            Request::GetBoardPetitions(g) => {
                Ok(R::Petitions(county.board_petitions(&who, g).await?))
            }
            Request::GetReport(g) => Ok(R::Report(county.appraisal_report(
                &who,
                &g.period,
                g.community_id,
            )?)),
            Request::AddPoints(a) => {
                county.add_points(
                    &who,
                    PointsEntry {
                        worker_id: a.worker_id,
                        points_cents: a.points_cents,
                        reason: a.reason,
                    },
                )?;
                Ok(R::Ok(Empty {}))
            }
            Request::SetAccountDisabled(d) => {
                if who.caller.role != lianxin_protocol::v1::Role::Admin {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only the administrator disables accounts",
                    ));
                }
                if d.account_id == who.caller.account_id && d.disabled {
                    return Err(Refusal::new(
                        ErrorCode::InvalidArgument,
                        "the administrator cannot disable their own account",
                    ));
                }
                let account =
                    match crate::admin::set_disabled(county.store(), d.account_id, d.disabled) {
                        Ok(a) => a,
                        Err(crate::admin::AdminError::Invalid(m)) => {
                            return Err(Refusal::new(ErrorCode::NotFound, m));
                        }
                        Err(e) => return Err(Refusal::new(ErrorCode::Unavailable, e.to_string())),
                    };
                if d.disabled {
                    county
                        .store()
                        .delete_sessions_of(account.id)
                        .map_err(DomainError::from)?;
                }
                county.store().durable().await.map_err(DomainError::from)?;
                if d.disabled {
                    county.hub().revoke(account.id, None);
                    if account.is_grid_staff() {
                        county
                            .set_on_duty(&lianxin_actors::county::caller_of(&account), false)
                            .await?;
                    }
                    tracing::info!(account = account.id, "account disabled");
                }
                Ok(R::Ok(Empty {}))
            }
            Request::UploadBegin(b) => {
                let dir = crate::upload::partial_dir(county.store().media_dir());
                let limits = self.app.config.media.limits();
                let account = who.caller.account_id;
                let now = county.clock().now_ms();
                let status = tokio::task::spawn_blocking(move || {
                    crate::upload::begin(&dir, account, &b, &limits, now)
                })
                .await
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
                Ok(R::UploadStatus(status))
            }
            Request::UploadChunk(c) => self.upload_chunk(c, who.caller.account_id).await,
            Request::SetOnDuty(d) => {
                county.set_on_duty(&who, d.on_duty).await?;
                Ok(R::Ok(lianxin_protocol::v1::Empty {}))
            }
            Request::Ping(_)
            | Request::SignIn(_)
            | Request::Register(_)
            | Request::Authenticate(_)
            | Request::LookupAddress(_) => {
                Err(Refusal::new(ErrorCode::Internal, "request routed twice"))
            }
        }
    }

    /// Appends a chunk; the last one is checked, processed and stored like `POST /media`.
    async fn upload_chunk(&mut self, c: UploadChunk, account: u64) -> Result<R, Refusal> {
        let county = self.app.county.clone();
        let dir = crate::upload::partial_dir(county.store().media_dir());
        let upload_id = c.upload_id.clone();
        let d = dir.clone();
        let outcome = tokio::task::spawn_blocking(move || crate::upload::chunk(&d, account, &c))
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
        let finished = match outcome {
            crate::upload::ChunkOutcome::Status(s) => return Ok(R::UploadStatus(s)),
            crate::upload::ChunkOutcome::Finished(f) => f,
        };
        let limits = self.app.config.media.limits();
        let store = county.store().clone();
        let now = county.clock().now_ms();
        // The declared kind is checked like a `Content-Type` over HTTP, before anything is stored.
        let claimed = match MediaKind::try_from(finished.declared.kind) {
            Ok(MediaKind::Image) => "image/*",
            _ => "audio/*",
        };
        let _slot = self
            .app
            .media_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
        let result = tokio::task::spawn_blocking(move || {
            crate::media::store_upload(
                &store,
                &finished.bytes,
                Some(claimed),
                &limits,
                account,
                now,
            )
        })
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        let attachment = match result {
            Ok(done) => done,
            Err(refusal) => {
                // Bytes the checks refuse will never pass: the upload is over. Storage failures
                // keep the partial, so the last chunk can be sent again.
                if refusal.code != ErrorCode::Unavailable {
                    crate::upload::remove(&dir, account, &upload_id);
                }
                return Err(Refusal::new(refusal.code, refusal.message));
            }
        };
        crate::upload::remove(&dir, account, &upload_id);
        county.store().durable().await.map_err(DomainError::from)?;
        Ok(R::Media(attachment))
    }

    async fn on_push(&mut self, push: Option<Push>) -> Result<(), Option<Ending>> {
        match push {
            Some(Push::Event(item)) => {
                let Some(last) = self.cursor else {
                    return Ok(()); // not subscribed: the event waits in the feed
                };
                if self.catching_up || item.cursor <= last {
                    return Ok(());
                }
                if item.cursor == last + 1 {
                    self.send_event(item.cursor, &item.event).await?;
                    self.send_ahead().await
                } else {
                    // Two petitions' events of one group may reach the hub in either order: the
                    // missing one is usually a moment behind, so this one waits for it (storage
                    // fills the gap once too many wait).
                    self.ahead.insert(item.cursor, item.event.clone());
                    if self.ahead.len() > MAX_AHEAD {
                        return self.close_gap().await;
                    }
                    self.gap_deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + GAP_WAIT);
                    Ok(())
                }
            }
            Some(Push::Revoked) => Err(Some(Ending {
                code: close::REVOKED,
                reason: "signed out everywhere",
            })),
            None => Err(Some(Ending {
                code: close::GOING_AWAY,
                reason: "server shutting down",
            })),
        }
    }

    async fn on_board_update(&mut self, update: Option<BoardUpdate>) -> Result<(), Option<Ending>> {
        let Some(update) = update else {
            self.board = None; // the board actor stopped (shutdown)
            return Ok(());
        };
        let frame = ServerFrame {
            frame: Some(server_frame::Frame::BoardUpdate(update)),
        };
        self.send_frame(&frame, self.event_wire.unwrap_or(Wire::Binary))
            .await
    }

    async fn on_lag(&mut self) -> Result<(), Option<Ending>> {
        let Some(authed) = &self.authed else {
            return Ok(());
        };
        if authed.registration.signals.revoked.load(Ordering::Acquire) {
            return Err(Some(Ending {
                code: close::REVOKED,
                reason: "signed out everywhere",
            }));
        }
        if authed
            .registration
            .signals
            .lagging
            .swap(false, Ordering::AcqRel)
            && !self.catching_up
        {
            self.fill(None).await?;
            self.send_ahead().await?;
        }
        Ok(())
    }

    /// Sends the events waiting ahead that now follow the last one sent; drops those already
    /// sent.
    async fn send_ahead(&mut self) -> Result<(), Option<Ending>> {
        while let Some(entry) = self.ahead.first_entry() {
            let Some(last) = self.cursor else {
                break;
            };
            let cursor = *entry.key();
            if cursor > last + 1 {
                // Still a gap: it is waited for (again) and then read from storage.
                self.gap_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + GAP_WAIT);
                return Ok(());
            }
            let event = entry.remove();
            if cursor == last + 1 {
                self.send_event(cursor, &event).await?;
            }
        }
        self.gap_deadline = None;
        Ok(())
    }

    /// Reads the missing events from storage, up to the newest one waiting ahead, then sends
    /// what still waits.
    async fn close_gap(&mut self) -> Result<(), Option<Ending>> {
        self.gap_deadline = None;
        let until = self.ahead.last_key_value().map(|(&c, _)| c);
        self.fill(until).await?;
        self.send_ahead().await
    }

    /// Sends stored feed events after the last one sent, up to `until` (or the newest).
    async fn fill(&mut self, until: Option<u64>) -> Result<(), Option<Ending>> {
        let Some(account_id) = self.authed.as_ref().map(|a| a.account.id) else {
            return Ok(());
        };
        loop {
            let Some(last) = self.cursor else {
                return Ok(());
            };
            if until.is_some_and(|u| last >= u) {
                return Ok(());
            }
            metrics::counter!("lianxin_feed_reads_total").increment(1);
            let batch = match self.app.county.store().feed_after(account_id, last, 256) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading the feed failed");
                    return Err(Some(Ending {
                        code: close::GOING_AWAY,
                        reason: "storage unavailable",
                    }));
                }
            };
            if batch.is_empty() {
                return Ok(());
            }
            for ev in batch {
                self.send_event(ev.cursor, &ev.event).await?;
            }
        }
    }

    async fn send_event(&mut self, cursor: u64, event: &Bytes) -> Result<(), Option<Ending>> {
        let msg = match self.event_wire.unwrap_or(Wire::Binary) {
            Wire::Binary => Message::Binary(event_frame_bytes(event)),
            Wire::Json => match Event::decode(event.as_ref()) {
                Ok(ev) => Message::Text(
                    codec::encode_json(&ServerFrame {
                        frame: Some(server_frame::Frame::Event(ev)),
                    })
                    .into(),
                ),
                Err(e) => {
                    tracing::error!(cursor, error = %e, "stored event does not decode");
                    return Err(Some(Ending {
                        code: close::GOING_AWAY,
                        reason: "storage corrupt",
                    }));
                }
            },
        };
        self.feed(msg).await?;
        self.cursor = Some(cursor);
        self.hot.events_out.increment(1);
        Ok(())
    }
}

/// A `ServerFrame` holding an already-encoded `Event`: field 2, length-delimited, then the bytes.
fn event_frame_bytes(event: &Bytes) -> Bytes {
    let mut buf = BytesMut::with_capacity(event.len() + 6);
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut buf);
    prost::encoding::encode_varint(event.len() as u64, &mut buf);
    buf.put_slice(event);
    buf.freeze()
}

async fn next_push(authed: &mut Option<Authed>) -> Option<Push> {
    match authed {
        Some(a) => a.registration.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_board_update(
    board: &mut Option<tokio::sync::mpsc::Receiver<BoardUpdate>>,
) -> Option<BoardUpdate> {
    match board {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when reading may go on after a rate-limit pause; never while there is none.
async fn reads_resume(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn lag_signal(signals: Option<Arc<lianxin_actors::hub::SessionSignals>>) {
    match signals {
        Some(s) => s.wake.notified().await,
        None => std::future::pending().await,
    }
}

/// A request refused with a protocol error code.
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for Refusal {
    fn from(e: DomainError) -> Self {
        if matches!(e, DomainError::Storage(_)) {
            tracing::error!(error = %e, "storage failure");
        }
        Refusal {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::upload::UploadError> for Refusal {
    fn from(e: crate::upload::UploadError) -> Self {
        Refusal {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::BadCredentials => ErrorCode::BadCredentials,
            AuthError::Invalid(_) => ErrorCode::InvalidArgument,
            AuthError::LoginTaken(_) => ErrorCode::Conflict,
            AuthError::Store(_) => ErrorCode::Unavailable,
            AuthError::Hash(_) => ErrorCode::Internal,
            AuthError::RateLimited(_) => ErrorCode::RateLimited,
        };
        Refusal {
            code,
            message: e.to_string(),
        }
    }
}

/// A short name of a request, for metrics and logs.
fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Authenticate(_) => "authenticate",
        Request::SignIn(_) => "sign_in",
        Request::Register(_) => "register",
        Request::SignOut(_) => "sign_out",
        Request::SignOutEverywhere(_) => "sign_out_everywhere",
        Request::Subscribe(_) => "subscribe",
        Request::Ping(_) => "ping",
        Request::SubmitPetition(_) => "submit_petition",
        Request::SendMessage(_) => "send_message",
        Request::MarkRead(_) => "mark_read",
        Request::Transfer(_) => "transfer",
        Request::Escalate(_) => "escalate",
        Request::Resolve(_) => "resolve",
        Request::Close(_) => "close",
        Request::Withdraw(_) => "withdraw",
        Request::Rate(_) => "rate",
        Request::Reopen(_) => "reopen",
        Request::ListPetitions(_) => "list_petitions",
        Request::GetPetition(_) => "get_petition",
        Request::GetHistory(_) => "get_history",
        Request::GetMyGrid(_) => "get_my_grid",
        Request::LookupAddress(_) => "lookup_address",
        Request::GetInbox(_) => "get_inbox",
        Request::SetOnDuty(_) => "set_on_duty",
        Request::WatchBoard(_) => "watch_board",
        Request::UnwatchBoard(_) => "unwatch_board",
        Request::GetBoardPetitions(_) => "get_board_petitions",
        Request::GetReport(_) => "get_report",
        Request::AddPoints(_) => "add_points",
        Request::SetAccountDisabled(_) => "set_account_disabled",
        Request::UploadBegin(_) => "upload_begin",
        Request::UploadChunk(_) => "upload_chunk",
    }
}

/// The petition a request concerns and what it asks of it, for the requests a petition actor
/// carries out.
fn petition_request(request: Request) -> Result<(u64, PetitionRequest), Refusal> {
    Ok(match request {
        Request::SendMessage(m) => (
            m.petition_id,
            PetitionRequest::Message {
                text: m.text,
                client_msg_id: m.client_msg_id,
                media_ids: m.media_ids,
            },
        ),
        Request::MarkRead(m) => (m.petition_id, PetitionRequest::MarkRead { seq: m.seq }),
        Request::Transfer(t) => (
            t.petition_id,
            PetitionRequest::Transfer {
                to_worker_id: t.to_worker_id,
                to_grid_id: t.to_grid_id,
                reason: t.reason,
            },
        ),
        Request::Escalate(e) => {
            let target = EscalationTarget::try_from(e.target).map_err(|_| {
                Refusal::new(ErrorCode::InvalidArgument, "unknown escalation target")
            })?;
            (
                e.petition_id,
                PetitionRequest::Escalate {
                    target,
                    unit_name: e.unit_name,
                    note: e.note,
                },
            )
        }
        Request::Resolve(r) => (
            r.petition_id,
            PetitionRequest::Resolve { summary: r.summary },
        ),
        Request::Close(c) => (c.petition_id, PetitionRequest::Close),
        Request::Withdraw(w) => (
            w.petition_id,
            PetitionRequest::Withdraw { reason: w.reason },
        ),
        Request::Rate(r) => (
            r.petition_id,
            PetitionRequest::Rate {
                level: RatingLevel::try_from(r.level).unwrap_or(RatingLevel::Unspecified),
                comment: r.comment,
                by_phone: r.by_phone,
            },
        ),
        Request::Reopen(r) => (r.petition_id, PetitionRequest::Reopen { reason: r.reason }),
        Request::GetPetition(g) => (g.petition_id, PetitionRequest::Open),
        _ => return Err(Refusal::new(ErrorCode::Internal, "not a petition request")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_event_bytes_decode_as_a_server_frame() {
        let ev = Event {
            cursor: 9,
            at_ms: 5,
            kind: None,
        };
        let frame =
            ServerFrame::decode(event_frame_bytes(&Bytes::from(ev.encode_to_vec()))).unwrap();
        assert_eq!(frame.frame, Some(server_frame::Frame::Event(ev)));
    }
}
