//! The connection: connecting, the reader and writer tasks, requests and typed calls.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use http::{HeaderValue, header};
use lianxin_protocol::{
    SUBPROTOCOL, Wire,
    codec::{self, Encoded},
    v1::{
        AddPoints, AppraisalReport, Authenticate, Board, BoardUpdate, ClientFrame, ClosePetition,
        EscalatePetition, Event, GetBoardPetitions, GetHistory, GetInbox, GetMyGrid, GetPetition,
        GetReport, GridInfo, HistoryPage, ListPetitions, LookupAddress, MarkRead, MediaAttachment,
        MediaKind, MessageAck, Petition, PetitionDetail, PetitionPage, Ping, Pong, RatePetition,
        RatingLevel, Register, ReopenPetition, Reply, ResolvePetition, SendMessage, ServerFrame,
        SetOnDuty, SignIn, SignOut, SignOutEverywhere, SignedIn, SubmitPetition, Subscribe,
        Subscribed, TransferPetition, UnwatchBoard, UploadBegin, UploadChunk, UploadStatus,
        WatchBoard, WithdrawPetition, client_frame::Request, reply, server_frame,
    },
};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode},
    },
};

use crate::{
    ClientError,
    error::{into_result, result_name},
    router::{CloseInfo, Router},
};

type Ws = WebSocketStream<TcpStream>;

/// Where a chunked upload stands after a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadProgress {
    /// More bytes are expected from this offset.
    At(UploadStatus),
    /// The upload is complete and stored.
    Done(MediaAttachment),
}

/// The device label sent with [`Client::sign_in`] and [`Client::register`].
pub const DEFAULT_DEVICE: &str = "lianxin-client";

/// How many outgoing messages may wait for the writer task.
const OUTGOING_CAPACITY: usize = 1024;
/// Board updates kept unread before the reader waits (read them, or unwatch the board).
const BOARD_CAPACITY: usize = 64;

/// How long [`Client::close`] and the reader wait for the close handshake to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How to open a connection.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Binary (protobuf) or text (proto3 JSON) frames for requests.
    pub wire: Wire,
    /// Sent as `Authorization: Bearer <token>` with the upgrade request.
    pub bearer_token: Option<String>,
    /// The WebSocket read buffer size in bytes.
    pub read_buffer_size: usize,
    /// The WebSocket write buffer size in bytes (messages are flushed one by one anyway).
    pub write_buffer_size: usize,
    /// The largest frame (and message) accepted from the server, in bytes.
    pub max_frame: usize,
    /// Bind the TCP socket to this source address before connecting.
    pub local_addr: Option<IpAddr>,
    /// Limit for TCP connect plus WebSocket handshake.
    pub connect_timeout: Duration,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How many events may wait unread; when full, the reader waits (and so do replies).
    pub event_capacity: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            wire: Wire::Binary,
            bearer_token: None,
            read_buffer_size: 4096,
            write_buffer_size: 4096,
            max_frame: 4 << 20,
            local_addr: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            event_capacity: 10_000,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("wire", &self.wire)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("max_frame", &self.max_frame)
            .field("local_addr", &self.local_addr)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("event_capacity", &self.event_capacity)
            .finish()
    }
}

impl ConnectOptions {
    /// Default options with the given wire form.
    pub fn with_wire(wire: Wire) -> Self {
        ConnectOptions {
            wire,
            ..ConnectOptions::default()
        }
    }
}

/// A message for the writer task, with an optional acknowledgement of the write.
struct Outgoing {
    message: Message,
    done: Option<oneshot::Sender<Result<(), ClientError>>>,
}

/// What the client's handle and its tasks share.
struct Shared {
    router: Router,
    outgoing: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
    undecodable: AtomicU64,
    wire: Wire,
    request_timeout: Duration,
    local_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
}

/// A connection to a Lianxin server.
///
/// Requests may be made concurrently through `&Client`; events of the account's feed (after
/// [`Client::subscribe`]) are read with [`Client::next_event`]. Dropping the client drops the
/// connection without a close handshake; [`Client::close`] closes it properly.
pub struct Client {
    shared: Arc<Shared>,
    events: mpsc::Receiver<Event>,
    boards: mpsc::Receiver<BoardUpdate>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("wire", &self.shared.wire)
            .field("local_addr", &self.shared.local_addr)
            .field("peer_addr", &self.shared.peer_addr)
            .field("closed", &self.shared.router.close_info())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

fn connect_error(reason: impl Into<String>) -> ClientError {
    ClientError::Connect {
        reason: reason.into(),
        status: None,
    }
}

/// Opens a TCP connection to `host:port`, from `local` if given.
async fn open_tcp(host: &str, port: u16, local: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| connect_error(format!("cannot resolve {host}: {e}")))?;
    let mut last_error = format!("{host} has no address");
    for addr in addrs {
        if local.is_some_and(|l| l.is_ipv4() != addr.is_ipv4()) {
            last_error = format!("{host} has no address of the local address's family");
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| connect_error(format!("cannot create a socket: {e}")))?;
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| connect_error(format!("cannot bind to {ip}: {e}")))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                // Requests are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(connect_error(last_error))
}

/// Turns a failed handshake into a [`ClientError::Connect`], keeping the HTTP status.
fn handshake_error(err: tungstenite::Error) -> ClientError {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            let reason = if body.is_empty() {
                format!("server refused the upgrade: {status}")
            } else {
                format!("server refused the upgrade: {status}: {body}")
            };
            ClientError::Connect {
                reason,
                status: Some(status.as_u16()),
            }
        }
        other => connect_error(format!("websocket handshake failed: {other}")),
    }
}

/// Decodes a server frame from a WebSocket message: protobuf in binary messages, proto3 JSON in
/// text messages. Control messages give `Ok(None)`.
pub fn decode_server_message(
    message: &Message,
    limit: usize,
) -> Result<Option<ServerFrame>, ClientError> {
    match message {
        Message::Binary(bytes) => Ok(Some(codec::decode_binary(bytes, limit)?)),
        Message::Text(text) => Ok(Some(codec::decode_json(text.as_str(), limit)?)),
        _ => Ok(None),
    }
}

/// Encodes a client frame as a WebSocket message in the given wire form.
pub fn encode_client_frame(frame: &ClientFrame, wire: Wire) -> Message {
    match codec::encode(frame, wire) {
        Encoded::Binary(bytes) => Message::Binary(bytes),
        Encoded::Text(text) => Message::Text(text.into()),
    }
}

/// Reads the socket until it ends: replies go to their requests, events to the event channel.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    boards: mpsc::Sender<BoardUpdate>,
    max_frame: usize,
) {
    let info = loop {
        let message = match stream.next().await {
            None => {
                break CloseInfo {
                    code: None,
                    reason: "connection ended without a close frame".to_owned(),
                };
            }
            Some(Err(err)) => {
                break CloseInfo {
                    code: None,
                    reason: format!("connection lost: {err}"),
                };
            }
            Some(Ok(message)) => message,
        };
        if let Message::Close(frame) = &message {
            break match frame {
                Some(frame) => CloseInfo {
                    code: Some(u16::from(frame.code)),
                    reason: frame.reason.as_str().to_owned(),
                },
                None => CloseInfo {
                    code: None,
                    reason: "closed without a code".to_owned(),
                },
            };
        }
        let frame = match decode_server_message(&message, max_frame) {
            Ok(Some(frame)) => frame,
            // Pings are answered by tungstenite while reading; pongs need nothing.
            Ok(None) => continue,
            Err(err) => {
                shared.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "dropping an undecodable frame from the server");
                continue;
            }
        };
        match frame.frame {
            Some(server_frame::Frame::Reply(reply)) => {
                let id = reply.id;
                if !shared.router.deliver(reply) {
                    tracing::debug!(id, "reply for a request nobody waits for");
                }
            }
            Some(server_frame::Frame::Event(event)) => {
                // Waits while the channel is full: back-pressure to the server. A dropped
                // receiver means the client is gone, and the task is about to be aborted.
                if events.send(event).await.is_err() {
                    tracing::debug!("event dropped: the client is gone");
                }
            }
            Some(server_frame::Frame::BoardUpdate(update)) => {
                // Each update holds the rows changed since the previous one, so none may be
                // dropped: like events, a full channel makes the reader wait.
                if boards.send(update).await.is_err() {
                    tracing::debug!("board update dropped: the client is gone");
                }
            }
            None => tracing::warn!("server frame without content"),
        }
    };
    tracing::debug!(code = ?info.code, reason = %info.reason, "connection closed");
    shared.router.close(info);
    // Let `next_event` end once the buffered events are read.
    drop(events);
    // Keep reading for a while so tungstenite sends the close reply and the handshake completes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Writes queued messages, one by one, flushing each.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut outgoing: mpsc::Receiver<Outgoing>) {
    while let Some(Outgoing { message, done }) = outgoing.recv().await {
        let result = sink.send(message).await.map_err(ClientError::from);
        let failed = result.is_err();
        if let Some(done) = done {
            let _ = done.send(result);
        }
        if failed {
            break;
        }
    }
}

/// Extracts one success variant from a reply result, or says what came instead.
macro_rules! expect_result {
    ($result:expr, $variant:ident, $expected:literal) => {
        match $result {
            reply::Result::$variant(value) => Ok(value),
            other => Err(ClientError::UnexpectedReply {
                expected: $expected,
                got: result_name(&other).to_owned(),
            }),
        }
    };
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`) with the `lianxin.v1` subprotocol.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let timeout = options.connect_timeout;
        tokio::time::timeout(timeout, Self::connect_inner(url, options))
            .await
            .map_err(|_| ClientError::Timeout(format!("connecting to {url}")))?
    }

    async fn connect_inner(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| connect_error(format!("bad URL {url:?}: {e}")))?;
        match request.uri().scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err(connect_error("wss:// is not supported (no TLS)")),
            _ => return Err(connect_error(format!("not a ws:// URL: {url}"))),
        }
        let host = request
            .uri()
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| connect_error(format!("no host in {url}")))?;
        let port = request.uri().port_u16().unwrap_or(80);
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(token) = &options.bearer_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| connect_error("the bearer token is not a valid header value"))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }

        let tcp = open_tcp(&host, port, options.local_addr).await?;
        let local_addr = tcp.local_addr().ok();
        let peer_addr = tcp.peer_addr().ok();
        let config = WebSocketConfig::default()
            .read_buffer_size(options.read_buffer_size)
            .write_buffer_size(options.write_buffer_size)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(options.max_frame))
            .max_frame_size(Some(options.max_frame));
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
                .await
                .map_err(handshake_error)?;
        let accepted = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if accepted != Some(SUBPROTOCOL) {
            return Err(connect_error(format!(
                "server did not accept the {SUBPROTOCOL} subprotocol (answered {accepted:?})"
            )));
        }

        let (sink, stream) = ws.split();
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(options.event_capacity.max(1));
        let (boards_tx, boards_rx) = mpsc::channel(BOARD_CAPACITY);
        let shared = Arc::new(Shared {
            router: Router::default(),
            outgoing: outgoing_tx,
            next_id: AtomicU64::new(1),
            undecodable: AtomicU64::new(0),
            wire: options.wire,
            request_timeout: options.request_timeout,
            local_addr,
            peer_addr,
        });
        let reader = tokio::spawn(read_loop(
            stream,
            Arc::clone(&shared),
            events_tx,
            boards_tx,
            options.max_frame,
        ));
        let writer = tokio::spawn(write_loop(sink, outgoing_rx));
        Ok(Client {
            shared,
            events: events_rx,
            boards: boards_rx,
            reader,
            writer,
        })
    }

    /// The wire form requests are sent in.
    pub fn wire(&self) -> Wire {
        self.shared.wire
    }

    /// The local address of the TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    /// The server's address of the TCP connection.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer_addr
    }

    /// Takes the next request id (ids start at 1 and are never reused by this client).
    pub fn next_request_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How many frames from the server could not be decoded (they are dropped).
    pub fn undecodable_frames(&self) -> u64 {
        self.shared.undecodable.load(Ordering::Relaxed)
    }

    /// How many requests are waiting for their replies.
    pub fn pending_requests(&self) -> usize {
        self.shared.router.pending()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.router.close_info().is_some()
    }

    /// The code and reason of the close frame that ended the connection, if one did.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        let info = self.shared.router.close_info()?;
        Some((info.code?, info.reason))
    }

    /// The error a request on this (ended) connection gets.
    pub(crate) fn closed_error(&self) -> ClientError {
        self.shared.router.closed_error()
    }

    /// Queues a message for the writer and waits until it is written.
    async fn write(&self, message: Message) -> Result<(), ClientError> {
        let (done_tx, done_rx) = oneshot::channel();
        let outgoing = Outgoing {
            message,
            done: Some(done_tx),
        };
        if self.shared.outgoing.send(outgoing).await.is_err() {
            return Err(self.closed_error());
        }
        match done_rx.await {
            Ok(result) => result,
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Sends any WebSocket message as is (for tests that send malformed frames).
    pub async fn send_raw(&self, message: Message) -> Result<(), ClientError> {
        self.write(message).await
    }

    /// Sends any WebSocket message and waits for the reply with id `reply_id` (the server replies
    /// to an undecodable frame with id 0).
    pub async fn send_raw_for_reply(
        &self,
        message: Message,
        reply_id: u64,
    ) -> Result<Reply, ClientError> {
        self.exchange(reply_id, message).await
    }

    /// Sends a frame as is (its id is not changed) and returns its reply, error or not.
    pub async fn request_raw(&self, frame: ClientFrame) -> Result<Reply, ClientError> {
        let message = encode_client_frame(&frame, self.shared.wire);
        self.exchange(frame.id, message).await
    }

    async fn exchange(&self, id: u64, message: Message) -> Result<Reply, ClientError> {
        let rx = self.shared.router.register(id)?;
        let wait = async {
            self.write(message).await?;
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(self.closed_error()),
            }
        };
        let result = match tokio::time::timeout(self.shared.request_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(format!("the reply to request {id}"))),
        };
        if result.is_err() {
            self.shared.router.cancel(id);
        }
        result
    }

    /// Sends a request under a fresh id and returns its successful result; error replies become
    /// [`ClientError::Server`].
    pub async fn request(&self, request: Request) -> Result<reply::Result, ClientError> {
        let frame = ClientFrame {
            id: self.next_request_id(),
            request: Some(request),
        };
        into_result(self.request_raw(frame).await?)
    }

    /// Waits for the next event of the feed; `None` once the connection has ended and every
    /// buffered event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next buffered event, without waiting.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Closes the connection with a normal close frame and waits (briefly) for the handshake.
    pub async fn close(mut self) {
        self.close_with(CloseCode::Normal, "").await;
    }

    /// Closes the connection with the given close code and reason.
    pub async fn close_with(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.write(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut self.reader).await;
    }

    // ------------------------------------------------------------------ typed calls: session

    /// Signs in with login and password.
    pub async fn sign_in(
        &self,
        login: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<SignedIn, ClientError> {
        let request = Request::SignIn(SignIn {
            login: login.into(),
            password: password.into(),
            device: DEFAULT_DEVICE.to_owned(),
        });
        expect_result!(self.request(request).await?, SignedIn, "signedIn")
    }

    /// Registers a resident account at an address of the jurisdiction, and signs in.
    pub async fn register(
        &self,
        login: impl Into<String>,
        password: impl Into<String>,
        display_name: impl Into<String>,
        address: impl Into<String>,
    ) -> Result<SignedIn, ClientError> {
        let request = Request::Register(Register {
            login: login.into(),
            password: password.into(),
            display_name: display_name.into(),
            address: address.into(),
            device: DEFAULT_DEVICE.to_owned(),
        });
        expect_result!(self.request(request).await?, SignedIn, "signedIn")
    }

    /// Presents a session token obtained earlier.
    pub async fn authenticate(&self, token: impl Into<String>) -> Result<SignedIn, ClientError> {
        let request = Request::Authenticate(Authenticate {
            token: token.into(),
        });
        expect_result!(self.request(request).await?, SignedIn, "signedIn")
    }

    /// Starts the feed after `after_cursor` (0 for all of it); read it with [`Client::next_event`].
    pub async fn subscribe(&self, after_cursor: u64) -> Result<Subscribed, ClientError> {
        let request = Request::Subscribe(Subscribe { after_cursor });
        expect_result!(self.request(request).await?, Subscribed, "subscribed")
    }

    /// Ends this connection's session.
    pub async fn sign_out(&self) -> Result<(), ClientError> {
        let result = self.request(Request::SignOut(SignOut {})).await?;
        expect_result!(result, Ok, "ok").map(|_| ())
    }

    /// Ends every session of the account.
    pub async fn sign_out_everywhere(&self) -> Result<(), ClientError> {
        let result = self
            .request(Request::SignOutEverywhere(SignOutEverywhere {}))
            .await?;
        expect_result!(result, Ok, "ok").map(|_| ())
    }

    /// Application-level keep-alive.
    pub async fn ping(&self) -> Result<Pong, ClientError> {
        expect_result!(self.request(Request::Ping(Ping {})).await?, Pong, "pong")
    }

    // ------------------------------------------------------------------ typed calls: petitions

    /// Raises a petition.
    pub async fn submit_petition(&self, submit: SubmitPetition) -> Result<Petition, ClientError> {
        self.petition_call(Request::SubmitPetition(submit)).await
    }

    /// Posts a message to a petition's conversation.
    pub async fn send_message(
        &self,
        petition_id: u64,
        text: impl Into<String>,
        client_msg_id: impl Into<String>,
    ) -> Result<MessageAck, ClientError> {
        self.send_message_with_media(petition_id, text, client_msg_id, Vec::new())
            .await
    }

    /// Posts a message carrying media (ids from `POST /media`): up to 9 photos or one voice clip.
    pub async fn send_message_with_media(
        &self,
        petition_id: u64,
        text: impl Into<String>,
        client_msg_id: impl Into<String>,
        media_ids: Vec<String>,
    ) -> Result<MessageAck, ClientError> {
        let request = Request::SendMessage(SendMessage {
            petition_id,
            text: text.into(),
            client_msg_id: client_msg_id.into(),
            media_ids,
        });
        expect_result!(self.request(request).await?, MessageAck, "messageAck")
    }

    /// Starts a chunked upload (or learns the offset an earlier one of this id continues from).
    pub async fn upload_begin(&self, begin: UploadBegin) -> Result<UploadStatus, ClientError> {
        let result = self.request(Request::UploadBegin(begin)).await?;
        expect_result!(result, UploadStatus, "uploadStatus")
    }

    /// Sends one chunk at `offset`: the upload's new status, or the stored item after the last.
    pub async fn upload_chunk(
        &self,
        upload_id: impl Into<String>,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<UploadProgress, ClientError> {
        let request = Request::UploadChunk(UploadChunk {
            upload_id: upload_id.into(),
            offset,
            data,
        });
        match self.request(request).await? {
            reply::Result::UploadStatus(s) => Ok(UploadProgress::At(s)),
            reply::Result::Media(m) => Ok(UploadProgress::Done(m)),
            other => Err(ClientError::UnexpectedReply {
                expected: "uploadStatus or media",
                got: result_name(&other).to_owned(),
            }),
        }
    }

    /// Uploads `bytes` in chunks of `chunk_size` under `upload_id`, continuing from the offset the
    /// server reports (so calling it again after a dropped connection resumes the upload).
    pub async fn upload(
        &self,
        upload_id: impl Into<String>,
        kind: MediaKind,
        bytes: &[u8],
        chunk_size: usize,
    ) -> Result<MediaAttachment, ClientError> {
        let upload_id = upload_id.into();
        let status = self
            .upload_begin(UploadBegin {
                upload_id: upload_id.clone(),
                kind: kind as i32,
                total_size: bytes.len() as u64,
                sha256: String::new(),
            })
            .await?;
        let chunk_size = chunk_size.max(1);
        let mut offset = usize::try_from(status.offset).unwrap_or(usize::MAX);
        loop {
            let Some(rest) = bytes.get(offset..).filter(|r| !r.is_empty()) else {
                return Err(ClientError::UnexpectedReply {
                    expected: "an offset within the upload",
                    got: offset.to_string(),
                });
            };
            let end = rest.len().min(chunk_size);
            let data = rest.get(..end).unwrap_or_default().to_vec();
            match self
                .upload_chunk(upload_id.clone(), offset as u64, data)
                .await?
            {
                UploadProgress::Done(m) => return Ok(m),
                UploadProgress::At(s) => {
                    offset = usize::try_from(s.offset).unwrap_or(usize::MAX);
                }
            }
        }
    }

    /// Marks a petition read up to `seq`.
    pub async fn mark_read(&self, petition_id: u64, seq: u64) -> Result<(), ClientError> {
        let request = Request::MarkRead(MarkRead { petition_id, seq });
        expect_result!(self.request(request).await?, Ok, "ok").map(|_| ())
    }

    /// Hands a petition to another worker or grid.
    pub async fn transfer(&self, transfer: TransferPetition) -> Result<Petition, ClientError> {
        self.petition_call(Request::Transfer(transfer)).await
    }

    /// Passes a petition to the community or a co-building unit.
    pub async fn escalate(&self, escalate: EscalatePetition) -> Result<Petition, ClientError> {
        self.petition_call(Request::Escalate(escalate)).await
    }

    /// Reports the handling result of a petition.
    pub async fn resolve(
        &self,
        petition_id: u64,
        summary: impl Into<String>,
    ) -> Result<Petition, ClientError> {
        let request = Request::Resolve(ResolvePetition {
            petition_id,
            summary: summary.into(),
        });
        self.petition_call(request).await
    }

    /// Closes a resolved petition.
    pub async fn close_petition(&self, petition_id: u64) -> Result<Petition, ClientError> {
        self.petition_call(Request::Close(ClosePetition { petition_id }))
            .await
    }

    /// Withdraws the resident's own petition.
    pub async fn withdraw(
        &self,
        petition_id: u64,
        reason: impl Into<String>,
    ) -> Result<Petition, ClientError> {
        let request = Request::Withdraw(WithdrawPetition {
            petition_id,
            reason: reason.into(),
        });
        self.petition_call(request).await
    }

    async fn petition_call(&self, request: Request) -> Result<Petition, ClientError> {
        let result = expect_result!(self.request(request).await?, Petition, "petition")?;
        result.petition.ok_or_else(|| ClientError::UnexpectedReply {
            expected: "petition",
            got: "a petition result without a petition".to_owned(),
        })
    }

    /// Rates a resolved petition (the resident), closing it.
    pub async fn rate(
        &self,
        petition_id: u64,
        level: RatingLevel,
        comment: impl Into<String>,
    ) -> Result<Petition, ClientError> {
        self.rate_as(petition_id, level, comment.into(), false)
            .await
    }

    /// Records a rating a resident gave by telephone (staff, petitions filed for a resident).
    pub async fn record_phone_rating(
        &self,
        petition_id: u64,
        level: RatingLevel,
        comment: impl Into<String>,
    ) -> Result<Petition, ClientError> {
        self.rate_as(petition_id, level, comment.into(), true).await
    }

    async fn rate_as(
        &self,
        petition_id: u64,
        level: RatingLevel,
        comment: String,
        by_phone: bool,
    ) -> Result<Petition, ClientError> {
        self.petition_call(Request::Rate(RatePetition {
            petition_id,
            level: level as i32,
            comment,
            by_phone,
        }))
        .await
    }

    /// Reopens a closed petition (the resident): a new handling round.
    pub async fn reopen(
        &self,
        petition_id: u64,
        reason: impl Into<String>,
    ) -> Result<Petition, ClientError> {
        self.petition_call(Request::Reopen(ReopenPetition {
            petition_id,
            reason: reason.into(),
        }))
        .await
    }

    // ------------------------------------------------------------------ typed calls: queries

    /// A page of the petitions this account takes part in.
    pub async fn list_petitions(&self, list: ListPetitions) -> Result<PetitionPage, ClientError> {
        let result = self.request(Request::ListPetitions(list)).await?;
        expect_result!(result, Petitions, "petitions")
    }

    /// One petition with its read marks.
    pub async fn get_petition(&self, petition_id: u64) -> Result<PetitionDetail, ClientError> {
        let request = Request::GetPetition(GetPetition { petition_id });
        expect_result!(
            self.request(request).await?,
            PetitionDetail,
            "petitionDetail"
        )
    }

    /// A page of a petition's timeline after `after_seq` (limit 0 for the server's default).
    pub async fn get_history(
        &self,
        petition_id: u64,
        after_seq: u64,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let request = Request::GetHistory(GetHistory {
            petition_id,
            after_seq,
            limit,
        });
        expect_result!(self.request(request).await?, History, "history")
    }

    /// The account's grid, its jurisdiction and its workers.
    pub async fn my_grid(&self) -> Result<GridInfo, ClientError> {
        let result = self.request(Request::GetMyGrid(GetMyGrid {})).await?;
        expect_result!(result, Grid, "grid")
    }

    /// The grid whose jurisdiction holds an address.
    pub async fn lookup_address(
        &self,
        address: impl Into<String>,
    ) -> Result<GridInfo, ClientError> {
        let request = Request::LookupAddress(LookupAddress {
            address: address.into(),
        });
        expect_result!(self.request(request).await?, Grid, "grid")
    }

    /// A worker's open petitions, most urgent first.
    pub async fn inbox(&self) -> Result<PetitionPage, ClientError> {
        let result = self.request(Request::GetInbox(GetInbox {})).await?;
        expect_result!(result, Petitions, "petitions")
    }

    /// Goes on or off duty.
    pub async fn set_on_duty(&self, on_duty: bool) -> Result<(), ClientError> {
        let request = Request::SetOnDuty(SetOnDuty { on_duty });
        expect_result!(self.request(request).await?, Ok, "ok").map(|_| ())
    }

    // ------------------------------------------------------------------ typed calls: supervision

    /// Starts watching a response board: returns it whole; its changes then arrive through
    /// [`Client::next_board_update`].
    pub async fn watch_board(&self, watch: WatchBoard) -> Result<Board, ClientError> {
        let result = self.request(Request::WatchBoard(watch)).await?;
        expect_result!(result, Board, "board")
    }

    /// Stops the board updates.
    pub async fn unwatch_board(&self) -> Result<(), ClientError> {
        let request = Request::UnwatchBoard(UnwatchBoard {});
        expect_result!(self.request(request).await?, Ok, "ok").map(|_| ())
    }

    /// The petitions behind one figure of a board.
    pub async fn board_petitions(
        &self,
        drill: GetBoardPetitions,
    ) -> Result<PetitionPage, ClientError> {
        let result = self.request(Request::GetBoardPetitions(drill)).await?;
        expect_result!(result, Petitions, "petitions")
    }

    /// The appraisal report of a period ("2026-11") for a community, or the township (0).
    pub async fn report(
        &self,
        period: impl Into<String>,
        community_id: u64,
    ) -> Result<AppraisalReport, ClientError> {
        let request = Request::GetReport(GetReport {
            period: period.into(),
            community_id,
        });
        expect_result!(self.request(request).await?, Report, "report")
    }

    /// Records a manual points entry for a worker (supervisors).
    pub async fn add_points(
        &self,
        worker_id: u64,
        points_cents: i64,
        reason: impl Into<String>,
    ) -> Result<(), ClientError> {
        let request = Request::AddPoints(AddPoints {
            worker_id,
            points_cents,
            reason: reason.into(),
        });
        expect_result!(self.request(request).await?, Ok, "ok").map(|_| ())
    }

    /// Disables an account (its sessions end, its sign-ins are refused) or enables it again
    /// (the administrator only).
    pub async fn set_account_disabled(
        &self,
        account_id: u64,
        disabled: bool,
    ) -> Result<(), ClientError> {
        let request = Request::SetAccountDisabled(lianxin_protocol::v1::SetAccountDisabled {
            account_id,
            disabled,
        });
        expect_result!(self.request(request).await?, Ok, "ok").map(|_| ())
    }

    /// The next update of the watched board; `None` once the connection has ended.
    pub async fn next_board_update(&mut self) -> Option<BoardUpdate> {
        self.boards.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;
    use lianxin_protocol::v1::{
        Empty, EntryAdded, ErrorCode, GetMyGrid, Grid, PetitionState, event,
    };
    use std::error::Error;

    type TestResult = Result<(), Box<dyn Error>>;

    fn pong(t: i64) -> reply::Result {
        reply::Result::Pong(Pong { server_time_ms: t })
    }

    fn options(wire: Wire) -> ConnectOptions {
        ConnectOptions {
            request_timeout: Duration::from_secs(5),
            ..ConnectOptions::with_wire(wire)
        }
    }

    /// The server answers a Ping with a Pong, pushes an event, then closes with 4001 "test".
    async fn ping_event_close(wire: Wire) -> TestResult {
        let (url, server) = mock::start(move |mut conn| async move {
            assert_eq!(conn.handshake.protocol.as_deref(), Some(SUBPROTOCOL));
            assert_eq!(
                conn.handshake.authorization.as_deref(),
                Some("Bearer tok-1")
            );
            let Some(frame) = conn.recv().await else {
                panic!("no request");
            };
            assert!(matches!(frame.request, Some(Request::Ping(_))));
            assert_eq!(conn.wire, wire, "the request came in the chosen wire");
            conn.reply(frame.id, pong(42)).await;
            conn.event(Event {
                cursor: 7,
                at_ms: 1000,
                kind: Some(event::Kind::EntryAdded(EntryAdded {
                    entry: None,
                    state: PetitionState::Responded as i32,
                    assignee_id: 3,
                })),
            })
            .await;
            conn.close(4001, "test").await;
        })
        .await?;

        let options = ConnectOptions {
            bearer_token: Some("tok-1".into()),
            ..options(wire)
        };
        let mut client = Client::connect(&url, options).await?;
        assert_eq!(client.wire(), wire);
        let pong = client.ping().await?;
        assert_eq!(pong.server_time_ms, 42);
        let event = client.next_event().await;
        assert_eq!(event.as_ref().map(|e| e.cursor), Some(7));
        assert!(matches!(
            event.and_then(|e| e.kind),
            Some(event::Kind::EntryAdded(EntryAdded { assignee_id: 3, .. }))
        ));
        assert_eq!(
            client.next_event().await,
            None,
            "the feed ends with the connection"
        );
        assert_eq!(client.close_reason(), Some((4001, "test".to_owned())));
        assert!(client.is_closed());
        let after = client.ping().await;
        assert!(
            matches!(after, Err(ClientError::Closed { code: Some(4001), ref reason }) if reason == "test"),
            "{after:?}"
        );
        assert_eq!(client.undecodable_frames(), 0);
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn pong_event_and_close_reason_over_binary() -> TestResult {
        ping_event_close(Wire::Binary).await
    }

    #[tokio::test]
    async fn pong_event_and_close_reason_over_json() -> TestResult {
        ping_event_close(Wire::Json).await
    }

    #[tokio::test]
    async fn websocket_pings_are_answered_while_idle() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            assert!(conn.ping_pong(b"one").await, "first pong");
            assert!(conn.ping_pong(b"two").await, "second pong");
            conn.close(4002, "pinged").await;
        })
        .await?;
        let mut client = Client::connect(&url, options(Wire::Binary)).await?;
        // The client does nothing but wait; the reader answers the pings.
        assert_eq!(client.next_event().await, None);
        assert_eq!(client.close_reason(), Some((4002, "pinged".to_owned())));
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_pending_request_fails_when_the_server_closes() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            let _ = conn.recv().await;
            conn.close(4001, "going away").await;
        })
        .await?;
        let client = Client::connect(&url, options(Wire::Binary)).await?;
        let result = client.ping().await;
        assert!(
            matches!(result, Err(ClientError::Closed { code: Some(4001), ref reason }) if reason == "going away"),
            "{result:?}"
        );
        assert_eq!(client.pending_requests(), 0);
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn replies_are_routed_by_id_whatever_their_order() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            let mut frames = Vec::new();
            for _ in 0..3 {
                if let Some(frame) = conn.recv().await {
                    frames.push(frame);
                }
            }
            // Answer in reverse order, each with its own id as the payload.
            for frame in frames.into_iter().rev() {
                conn.reply(frame.id, pong(frame.id as i64 * 100)).await;
            }
            conn.serve(|_| pong(0)).await;
        })
        .await?;
        let client = Client::connect(&url, options(Wire::Json)).await?;
        let ids = [
            client.next_request_id(),
            client.next_request_id(),
            client.next_request_id(),
        ];
        assert_eq!(ids, [1, 2, 3]);
        let frames = ids.map(|id| ClientFrame {
            id,
            request: Some(Request::Ping(Ping {})),
        });
        let [a, b, c] = frames;
        let (ra, rb, rc) = tokio::join!(
            client.request_raw(a),
            client.request_raw(b),
            client.request_raw(c)
        );
        for (reply, id) in [(ra?, 1u64), (rb?, 2), (rc?, 3)] {
            assert_eq!(reply.id, id);
            assert_eq!(reply.result, Some(pong(id as i64 * 100)));
        }
        client.close().await;
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn error_replies_and_wrong_variants_are_typed() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            conn.serve(|request| match request {
                Request::GetMyGrid(_) => reply::Result::Error(lianxin_protocol::v1::Error {
                    code: ErrorCode::Unauthenticated as i32,
                    message: "sign in first".into(),
                }),
                Request::Ping(_) => reply::Result::Ok(Empty {}),
                Request::SetOnDuty(_) => reply::Result::Ok(Empty {}),
                _ => reply::Result::Grid(GridInfo {
                    grid: Some(Grid {
                        id: 9,
                        ..Grid::default()
                    }),
                    ..GridInfo::default()
                }),
            })
            .await;
        })
        .await?;
        let client = Client::connect(&url, options(Wire::Binary)).await?;
        let err = client.my_grid().await.err();
        assert_eq!(
            err.as_ref().and_then(ClientError::code),
            Some(ErrorCode::Unauthenticated)
        );
        let err = client.ping().await.err();
        assert!(
            matches!(err, Some(ClientError::UnexpectedReply { expected: "pong", ref got }) if got == "ok"),
            "{err:?}"
        );
        client.set_on_duty(true).await?;
        let grid = client.lookup_address("1 Main St").await?;
        assert_eq!(grid.grid.map(|g| g.id), Some(9));
        // request_raw hands back error replies as they are.
        let reply = client
            .request_raw(ClientFrame {
                id: 77,
                request: Some(Request::GetMyGrid(GetMyGrid {})),
            })
            .await?;
        assert_eq!(reply.id, 77);
        assert!(matches!(reply.result, Some(reply::Result::Error(_))));
        client.close().await;
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_request_without_reply_times_out() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            // Read requests, never answer.
            while conn.recv().await.is_some() {}
        })
        .await?;
        let options = ConnectOptions {
            request_timeout: Duration::from_millis(200),
            ..ConnectOptions::default()
        };
        let client = Client::connect(&url, options).await?;
        let result = client.ping().await;
        assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
        assert_eq!(
            client.pending_requests(),
            0,
            "a timed-out request is forgotten"
        );
        client.close().await;
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn raw_frames_and_a_chosen_source_address() -> TestResult {
        let (url, server) = mock::start(|mut conn| async move {
            assert_eq!(conn.peer.ip(), IpAddr::from([127, 0, 0, 1]));
            // The malformed frame does not decode: answer it with id 0, as a server would.
            let _ = conn.recv().await;
            conn.send(&lianxin_protocol::reply::error(
                0,
                ErrorCode::BadFrame,
                "bad frame",
            ))
            .await;
            conn.serve(|_| pong(1)).await;
        })
        .await?;
        let options = ConnectOptions {
            local_addr: Some(IpAddr::from([127, 0, 0, 1])),
            ..ConnectOptions::default()
        };
        let client = Client::connect(&url, options).await?;
        assert_eq!(
            client.local_addr().map(|a| a.ip()),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        let reply = client
            .send_raw_for_reply(Message::Binary(vec![0x0a, 0xff, 0xff].into()), 0)
            .await?;
        assert!(matches!(
            into_result(reply),
            Err(ClientError::Server {
                code: ErrorCode::BadFrame,
                ..
            })
        ));
        assert_eq!(client.ping().await?.server_time_ms, 1);
        client.close().await;
        server.await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_a_connect_error() -> TestResult {
        // A plain HTTP server that refuses every request.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let result = Client::connect(&url, ConnectOptions::default()).await;
        assert!(
            matches!(
                result,
                Err(ClientError::Connect {
                    status: Some(401),
                    ..
                })
            ),
            "{result:?}"
        );
        server.await?;
        let bad = Client::connect("wss://127.0.0.1:1/ws", ConnectOptions::default()).await;
        assert!(matches!(
            bad,
            Err(ClientError::Connect { status: None, .. })
        ));
        let bad = Client::connect("not a url", ConnectOptions::default()).await;
        assert!(matches!(bad, Err(ClientError::Connect { .. })));
        Ok(())
    }
}
