//! The bare relay: plain tokio-tungstenite, no actors, no storage, no durability, no access rules,
//! speaking the subset of the protocol the scenarios use, so that a report can say how the Lianxin
//! server compares with the cheapest thing that moves the same frames.
//!
//! - `SignIn` and `Authenticate` (or an `Authorization: Bearer` header) always succeed: the token is
//!   `relay-token:<login>` and the account id a hash of the login.
//! - `Subscribe` replies `Subscribed` and then sends the account's feed after the cursor, from
//!   memory; later events follow live. Feeds are kept in memory for the life of the process (a
//!   reconnecting client resumes from its cursor, as with the server).
//! - `SubmitPetition` opens a petition between the resident, the named worker and the grid head
//!   (derived from the demo login `resident-CC-G?` → `head-CC-G`) and puts a `PetitionNotice` in
//!   their feeds; `GetPetition` adds the caller as a participant.
//! - `SendMessage` numbers the message with the petition's counter, replies `MessageAck` and puts
//!   an `EntryAdded` event in every participant's feed (the sender's too, as the server does).
//! - `Ping` replies `Pong`; anything else is answered `UNKNOWN_REQUEST`.
//!
//! Buffers are the server's: 4 KiB read buffer, no write buffer, a bounded write backlog. A
//! connection whose outgoing queue overflows is closed with 4008, as a slow consumer.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use lianxin_client::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode, header},
    protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
};
use lianxin_protocol::codec::{self, Wire};
use lianxin_protocol::reply;
use lianxin_protocol::v1::{
    Account, Action, ClientFrame, EntryAdded, ErrorCode, Event, NoticeKind, Petition,
    PetitionDetail, PetitionNotice, PetitionResult, PetitionState, Pong, Role, ServerFrame,
    SignedIn, Subscribed, TextBody, Transition, client_frame::Request as Req, entry, event,
    reply::Result as R, server_frame,
};
use lianxin_protocol::v1::{Channel, Entry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

/// The prefix of the relay's fake tokens.
pub const TOKEN_PREFIX: &str = "relay-token:";

/// Frames queued for one connection before it is closed as a slow consumer.
pub const OUT_QUEUE: usize = 65_536;

/// The largest frame accepted from a client (the server's default limit).
pub const MAX_FRAME: usize = 64 * 1024;

/// The close code for a slow consumer (as the server's).
pub const SLOW_CONSUMER: u16 = 4008;

/// The WebSocket settings, the same as the server's.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(MAX_FRAME * 2))
        .max_frame_size(Some(MAX_FRAME * 2))
}

/// The relay's account id for a login: a 53-bit FNV-1a hash, never 0.
pub fn fake_account_id(login: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in login.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & ((1 << 53) - 1)).max(1)
}

/// The grid head of a demo resident or worker: `resident-03-2b` → `head-03-2`.
pub fn grid_head_login(login: &str) -> Option<String> {
    let rest = login
        .strip_prefix("resident-")
        .or_else(|| login.strip_prefix("worker-"))?;
    let (community, grid) = rest.split_once('-')?;
    let grid: String = grid.chars().take_while(char::is_ascii_digit).collect();
    (!community.is_empty() && !grid.is_empty()).then(|| format!("head-{community}-{grid}"))
}

/// The role a demo login has.
pub fn role_of(login: &str) -> Role {
    if login.starts_with("resident-") {
        Role::Resident
    } else if login.starts_with("worker-") {
        Role::Worker
    } else if login.starts_with("head-") {
        Role::GridHead
    } else if login.starts_with("sup-") {
        Role::CommunitySupervisor
    } else if login == "admin" {
        Role::Admin
    } else {
        Role::Resident
    }
}

fn account_of(login: &str) -> Account {
    Account {
        id: fake_account_id(login),
        login: login.to_owned(),
        display_name: login.to_owned(),
        role: role_of(login) as i32,
        community_id: 0,
        grid_id: 0,
        address: String::new(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A connection that receives an account's feed live.
struct Subscriber {
    conn: u64,
    out: mpsc::Sender<Message>,
    wire: Wire,
    overflowed: Arc<AtomicBool>,
}

impl Subscriber {
    /// Queues a stored event; false when the connection is gone or too slow.
    fn push(&self, frame: &Bytes) -> bool {
        let message = match self.wire {
            Wire::Binary => Message::Binary(frame.clone()),
            Wire::Json => match codec::decode_binary::<ServerFrame>(frame, usize::MAX) {
                Ok(f) => Message::Text(codec::encode_json(&f).into()),
                Err(_) => return true,
            },
        };
        match self.out.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// One account's feed: every event as an encoded `ServerFrame`, and who listens.
#[derive(Default)]
struct Feed {
    events: Vec<Bytes>,
    subscribers: Vec<Subscriber>,
}

struct RelayPetition {
    petition: Petition,
    participants: Vec<u64>,
}

#[derive(Default)]
struct State {
    feeds: HashMap<u64, Feed>,
    petitions: HashMap<u64, RelayPetition>,
    next_petition: u64,
}

impl State {
    /// Appends an event to an account's feed and pushes it to its live connections.
    fn publish(&mut self, account: u64, kind: event::Kind, at_ms: i64) {
        let feed = self.feeds.entry(account).or_default();
        let event = Event {
            cursor: feed.events.len() as u64 + 1,
            at_ms,
            kind: Some(kind),
        };
        let frame = codec::encode_binary(&ServerFrame {
            frame: Some(server_frame::Frame::Event(event)),
        });
        feed.subscribers.retain(|s| s.push(&frame));
        feed.events.push(frame);
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the relay on `listener` until `shutdown` resolves (with TCP_NODELAY on every socket).
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, shutdown, true).await
}

/// Serves the relay, with or without TCP_NODELAY on accepted sockets.
pub async fn serve_with(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    nodelay: bool,
) -> std::io::Result<()> {
    let state: Shared = Arc::new(Mutex::new(State::default()));
    let mut next_conn: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    if nodelay {
                        let _ = tcp.set_nodelay(true);
                    }
                    next_conn += 1;
                    tokio::spawn(connection(tcp, Arc::clone(&state), next_conn));
                }
                // Out of file descriptors or a connection reset before accept: keep going.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// Binds `listen` and serves the relay until SIGINT or SIGTERM.
pub async fn run(listen: SocketAddr, nodelay: bool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    crate::progress::note(&format!(
        "bare relay listening on ws://{}/ws",
        listener.local_addr()?
    ));
    serve_with(listener, shutdown_signal(), nodelay).await?;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// One connection's state.
struct Conn {
    id: u64,
    login: Option<String>,
    out: mpsc::Sender<Message>,
    overflowed: Arc<AtomicBool>,
    event_wire: Option<Wire>,
}

impl Conn {
    fn account(&self) -> Option<u64> {
        self.login.as_deref().map(fake_account_id)
    }

    /// Queues a frame; false when the connection must end.
    fn send(&self, frame: &ServerFrame, wire: Wire) -> bool {
        let message = match codec::encode(frame, wire) {
            codec::Encoded::Binary(b) => Message::Binary(b),
            codec::Encoded::Text(t) => Message::Text(t.into()),
        };
        match self.out.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn token_login(token: &str) -> Option<String> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

async fn connection(tcp: TcpStream, state: Shared, id: u64) {
    let mut bearer: Option<Option<String>> = None;
    #[allow(clippy::result_large_err)] // the handshake's callback type is tungstenite's
    let callback = |request: &Request, mut response: Response| {
        let headers = request.headers();
        let wants_protocol = headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|p| p.trim() == lianxin_protocol::SUBPROTOCOL)
            });
        if wants_protocol {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(lianxin_protocol::SUBPROTOCOL),
            );
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let login = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(token_login);
            if login.is_none() {
                let mut refused = ErrorResponse::new(Some("bad token\n".to_owned()));
                *refused.status_mut() = StatusCode::UNAUTHORIZED;
                return Err(refused);
            }
            bearer = Some(login);
        }
        Ok(response)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(ws_config())).await
    else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let (out, rx) = mpsc::channel(OUT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_loop(sink, rx, Arc::clone(&overflowed)));
    let mut conn = Conn {
        id,
        login: bearer.flatten(),
        out,
        overflowed,
        event_wire: None,
    };
    while let Some(Ok(message)) = stream.next().await {
        let (payload, wire) = match message {
            Message::Binary(b) => (b, Wire::Binary),
            Message::Text(t) => (Bytes::from(t), Wire::Json),
            Message::Close(_) => break,
            _ => continue,
        };
        let wire = *conn.event_wire.get_or_insert(wire);
        let alive = match codec::decode::<ClientFrame>(&payload, wire, MAX_FRAME) {
            Ok(frame) => handle(&state, &mut conn, frame, wire),
            Err(e) => conn.send(&reply::error(0, e.code(), e.to_string()), wire),
        };
        if !alive {
            break;
        }
    }
    if let Some(account) = conn.account()
        && let Some(feed) = lock(&state).feeds.get_mut(&account)
    {
        feed.subscribers.retain(|s| s.conn != id);
    }
    drop(conn);
    let _ = writer.await;
}

async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::Receiver<Message>,
    overflowed: Arc<AtomicBool>,
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
        if overflowed.load(Ordering::Acquire) {
            let frame = CloseFrame {
                code: CloseCode::from(SLOW_CONSUMER),
                reason: "slow consumer: resume from your cursor".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
    }
    let _ = sink.close().await;
}

type Answer = Result<R, (ErrorCode, String)>;

fn refuse(code: ErrorCode, message: &str) -> Answer {
    Err((code, message.to_owned()))
}

/// Answers one request; false when the connection must end.
fn handle(state: &Shared, conn: &mut Conn, frame: ClientFrame, wire: Wire) -> bool {
    let id = frame.id;
    let now = now_ms();
    let answer: Answer = match frame.request {
        None => refuse(ErrorCode::UnknownRequest, "the frame carries no request"),
        Some(Req::Ping(_)) => Ok(R::Pong(Pong {
            server_time_ms: now,
        })),
        Some(Req::SignIn(s)) => sign_in(conn, s.login, now),
        Some(Req::Authenticate(a)) => match token_login(&a.token) {
            Some(login) => sign_in(conn, login, now).map(|r| match r {
                R::SignedIn(s) => R::SignedIn(SignedIn {
                    token: String::new(),
                    ..s
                }),
                other => other,
            }),
            None => refuse(ErrorCode::BadCredentials, "not a relay token"),
        },
        Some(request) => {
            let Some(account) = conn.account() else {
                let refusal = reply::error(id, ErrorCode::Unauthenticated, "sign in first");
                return conn.send(&refusal, wire);
            };
            let mut st = lock(state);
            match request {
                Req::Subscribe(s) => {
                    return subscribe(&mut st, conn, id, account, s.after_cursor, wire);
                }
                Req::SubmitPetition(s) => {
                    let login = conn.login.clone().unwrap_or_default();
                    submit(&mut st, account, &login, s, now)
                }
                Req::SendMessage(m) => message(&mut st, account, conn, m, now),
                Req::GetPetition(g) => match st.petitions.get_mut(&g.petition_id) {
                    Some(p) => {
                        if !p.participants.contains(&account) {
                            p.participants.push(account);
                        }
                        Ok(R::PetitionDetail(PetitionDetail {
                            petition: Some(p.petition.clone()),
                            read_marks: Vec::new(),
                        }))
                    }
                    None => refuse(ErrorCode::NotFound, "no such petition"),
                },
                _ => refuse(
                    ErrorCode::UnknownRequest,
                    "the bare relay does not implement this request",
                ),
            }
        }
    };
    let frame = match answer {
        Ok(result) => reply::ok(id, result),
        Err((code, message)) => reply::error(id, code, message),
    };
    conn.send(&frame, wire)
}

fn sign_in(conn: &mut Conn, login: String, now: i64) -> Answer {
    if conn.login.is_some() {
        return refuse(ErrorCode::Forbidden, "this connection is already signed in");
    }
    if login.is_empty() {
        return refuse(ErrorCode::BadCredentials, "empty login");
    }
    let reply = SignedIn {
        token: format!("{TOKEN_PREFIX}{login}"),
        expires_at_ms: now + 30 * 24 * 3600 * 1000,
        account: Some(account_of(&login)),
    };
    conn.login = Some(login);
    Ok(R::SignedIn(reply))
}

/// Replies `Subscribed`, queues the backlog after it and registers for live events, all under the
/// lock so that no event is missed or sent twice.
fn subscribe(st: &mut State, conn: &Conn, id: u64, account: u64, after: u64, wire: Wire) -> bool {
    let feed = st.feeds.entry(account).or_default();
    let head = feed.events.len() as u64;
    if after > head {
        let refusal = reply::error(
            id,
            ErrorCode::InvalidArgument,
            format!("cursor {after} is ahead of this feed (newest is {head})"),
        );
        return conn.send(&refusal, wire);
    }
    if !conn.send(
        &reply::ok(id, R::Subscribed(Subscribed { head_cursor: head })),
        wire,
    ) {
        return false;
    }
    feed.subscribers.retain(|s| s.conn != conn.id);
    let subscriber = Subscriber {
        conn: conn.id,
        out: conn.out.clone(),
        wire: conn.event_wire.unwrap_or(wire),
        overflowed: Arc::clone(&conn.overflowed),
    };
    for frame in &feed.events[after as usize..] {
        if !subscriber.push(frame) {
            return false;
        }
    }
    feed.subscribers.push(subscriber);
    true
}

fn submit(
    st: &mut State,
    account: u64,
    login: &str,
    s: lianxin_protocol::v1::SubmitPetition,
    now: i64,
) -> Answer {
    if s.text.trim().is_empty() {
        return refuse(ErrorCode::InvalidArgument, "the first message is empty");
    }
    let head_id = grid_head_login(login).map_or(0, |h| fake_account_id(&h));
    let assignee = if s.worker_id != 0 {
        s.worker_id
    } else {
        head_id
    };
    st.next_petition += 1;
    let id = st.next_petition;
    let petition = Petition {
        id,
        resident_id: account,
        resident_name: login.to_owned(),
        assignee_id: assignee,
        category: s.category,
        title: s.title,
        state: PetitionState::Submitted as i32,
        channel: Channel::Online as i32,
        created_at_ms: now,
        updated_at_ms: now,
        last_seq: 2,
        grid_head_id: head_id,
        ..Petition::default()
    };
    let base = |seq: u64| Entry {
        petition_id: id,
        seq,
        author_id: account,
        author_name: login.to_owned(),
        author_role: Role::Resident as i32,
        at_ms: now,
        client_msg_id: String::new(),
        media: Vec::new(),
        body: None,
    };
    let entries = vec![
        Entry {
            body: Some(entry::Body::Transition(Transition {
                action: Action::Submit as i32,
                to: PetitionState::Submitted as i32,
                assignee_id: assignee,
                ..Transition::default()
            })),
            ..base(1)
        },
        Entry {
            client_msg_id: s.client_msg_id,
            body: Some(entry::Body::Text(TextBody { text: s.text })),
            ..base(2)
        },
    ];
    let mut participants = vec![account, assignee, head_id];
    participants.retain(|p| *p != 0);
    participants.sort_unstable();
    participants.dedup();
    let notice = event::Kind::PetitionNotice(PetitionNotice {
        kind: NoticeKind::NewPetition as i32,
        petition: Some(petition.clone()),
        entries,
    });
    for p in &participants {
        st.publish(*p, notice.clone(), now);
    }
    st.petitions.insert(
        id,
        RelayPetition {
            petition: petition.clone(),
            participants,
        },
    );
    Ok(R::Petition(PetitionResult {
        petition: Some(petition),
    }))
}

fn message(
    st: &mut State,
    account: u64,
    conn: &Conn,
    m: lianxin_protocol::v1::SendMessage,
    now: i64,
) -> Answer {
    if m.text.trim().is_empty() {
        return refuse(ErrorCode::InvalidArgument, "message text is empty");
    }
    let Some(p) = st.petitions.get_mut(&m.petition_id) else {
        return refuse(ErrorCode::NotFound, "no such petition");
    };
    if !p.participants.contains(&account) {
        return refuse(ErrorCode::NotFound, "no such petition");
    }
    let seq = p.petition.last_seq + 1;
    p.petition.last_seq = seq;
    p.petition.updated_at_ms = now;
    let login = conn.login.clone().unwrap_or_default();
    let entry = Entry {
        petition_id: m.petition_id,
        seq,
        author_id: account,
        author_name: login.clone(),
        author_role: role_of(&login) as i32,
        at_ms: now,
        client_msg_id: m.client_msg_id,
        media: Vec::new(),
        body: Some(entry::Body::Text(TextBody { text: m.text })),
    };
    let kind = event::Kind::EntryAdded(EntryAdded {
        entry: Some(entry),
        state: p.petition.state,
        assignee_id: p.petition.assignee_id,
    });
    let participants = p.participants.clone();
    for r in participants {
        st.publish(r, kind.clone(), now);
    }
    Ok(R::MessageAck(lianxin_protocol::v1::MessageAck {
        petition_id: m.petition_id,
        seq,
        at_ms: now,
        duplicate: false,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_logins_map_to_heads_and_ids() {
        assert_eq!(
            grid_head_login("resident-03-2b").as_deref(),
            Some("head-03-2")
        );
        assert_eq!(
            grid_head_login("worker-12-4a").as_deref(),
            Some("head-12-4")
        );
        assert_eq!(grid_head_login("head-01-1"), None);
        assert_eq!(grid_head_login("resident-"), None);
        assert_eq!(fake_account_id("a"), fake_account_id("a"));
        assert_ne!(fake_account_id("a"), fake_account_id("b"));
        assert!(fake_account_id("") > 0 && fake_account_id("x") < (1 << 53));
        assert_eq!(role_of("head-01-1"), Role::GridHead);
        assert_eq!(token_login("relay-token:bob").as_deref(), Some("bob"));
        assert_eq!(token_login("relay-token:"), None);
        let ids: std::collections::HashSet<u64> = crate::accounts::demo_logins()
            .iter()
            .map(|l| fake_account_id(l))
            .collect();
        assert_eq!(ids.len(), 288, "no two demo logins share an id");
    }
}
