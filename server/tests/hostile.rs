//! Hostile clients against the real server: protobuf bombs, broken UTF-8, floods, slowloris
//! handshakes, clients that never answer pings or never read, and the limits on connections,
//! sign-ins and petitions. Each gets its documented close code or typed error, and the clients
//! around it keep working (docs/security.md).
//!
//! Frames one byte over the limit, unknown request types and requests before sign-in are covered
//! in `access_and_errors.rs` (`malformed_frames_get_typed_errors_and_hurt_nobody`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use lianxin_client::tungstenite::Message;
use lianxin_client::tungstenite::protocol::frame::Frame;
use lianxin_client::tungstenite::protocol::frame::coding::{Data, OpCode};
use lianxin_client::v1::{
    ClientFrame, ErrorCode, ServerFrame, SignIn, client_frame::Request, reply, server_frame,
};
use lianxin_client::{Client, ClientError, ConnectOptions, Wire};
use lianxin_server::config::{Config, Limits};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

fn config_with(dir: &std::path::Path, limits: Limits) -> Config {
    Config {
        limits,
        ..test_config(dir)
    }
}

fn error_code(r: Result<lianxin_client::v1::Reply, ClientError>) -> ErrorCode {
    match r.unwrap().result {
        Some(reply::Result::Error(e)) => e.code(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Waits (at most 10 s) for the server to close `client`; its close code.
async fn closed_with(client: &Client) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server closes the connection");
    client.close_reason().map(|c| c.0)
}

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bombs_and_broken_utf8_get_typed_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let bystander = server.sign_in("resident-01-1b", Wire::Binary).await;
    let bin = server.connect(Wire::Binary).await;

    // A length prefix of 2^60 bytes for the sign-in request, in a 12-byte frame.
    let mut huge = vec![0x08, 0x01, (11 << 3) | 2];
    varint(1 << 60, &mut huge);
    huge.extend_from_slice(b"abc");
    let r = bin
        .send_raw_for_reply(Message::Binary(huge.into()), 0)
        .await;
    assert_eq!(error_code(r), ErrorCode::BadFrame);

    // 30,000 nested groups in an unknown field: prost's recursion limit, not a stack overflow.
    let mut groups = vec![0x08, 0x02];
    groups.extend(std::iter::repeat_n((99 << 3) | 3, 30_000));
    groups.extend(std::iter::repeat_n((99 << 3) | 4, 30_000));
    let r = bin
        .send_raw_for_reply(Message::Binary(groups.into()), 0)
        .await;
    assert_eq!(error_code(r), ErrorCode::BadFrame);

    // Length-delimited messages nested 10,000 deep inside the sign-in request's unknown field.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![(15 << 3) | 2];
        varint(nested.len() as u64, &mut outer);
        outer.extend_from_slice(&nested);
        nested = outer;
    }
    let mut frame = vec![0x08, 0x03, (11 << 3) | 2];
    varint(nested.len() as u64, &mut frame);
    frame.extend_from_slice(&nested);
    assert!(frame.len() < Limits::default().max_frame_bytes);
    let r = bin
        .send_raw_for_reply(Message::Binary(frame.into()), 3)
        .await;
    // Unknown fields are skipped, not recursed into: a sign-in with empty credentials.
    assert_eq!(error_code(r), ErrorCode::BadCredentials);

    // A frame that ends in the middle of a varint.
    let r = bin
        .send_raw_for_reply(Message::Binary(vec![0x08, 0xff, 0xff].into()), 0)
        .await;
    assert_eq!(error_code(r), ErrorCode::BadFrame);
    bin.ping().await.unwrap();

    // Invalid UTF-8 in a text frame breaks the WebSocket protocol: close 1002.
    let text = server.connect(Wire::Json).await;
    let raw = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    text.send_raw(Message::Frame(raw)).await.unwrap();
    assert_eq!(closed_with(&text).await, Some(1002));

    // Everyone else goes on.
    bin.ping().await.unwrap();
    bystander.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_connection_is_refused_then_closed_and_nobody_else_notices() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    let server = TestServer::start_with(config_with(dir.path(), limits.clone())).await;
    let bystander = server.sign_in("resident-01-1b", Wire::Binary).await;

    // A burst within the bucket is served in full.
    let polite = server.sign_in("worker-01-1a", Wire::Json).await;
    let burst = (0..limits.request_burst - 5).map(|_| polite.ping());
    for r in futures_util::future::join_all(burst).await {
        r.unwrap();
    }

    // A flood: the burst is served, then the server reads no faster than the rate, refusing
    // with RATE_LIMITED (and the request's id) what arrives before the next token, until the run
    // of refusals closes the connection with 4009.
    let flooder = server.sign_in("resident-01-1a", Wire::Binary).await;
    let flood =
        (0..limits.request_burst + 2 * limits.flood_close_after + 50).map(|_| flooder.ping());
    let results = futures_util::future::join_all(flood).await;
    let served = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ClientError::Server {
                    code: ErrorCode::RateLimited,
                    ..
                })
            )
        })
        .count();
    // (The sign-in took one token of the burst.) After each refusal reading paused until a
    // token was there, so the flooder got about one request served per refusal: the rate,
    // instead of nothing once the bucket was empty.
    assert!(
        served >= (limits.request_burst + limits.flood_close_after / 2) as usize,
        "{served} served"
    );
    assert_eq!(limited, limits.flood_close_after as usize, "refusals");
    assert_eq!(
        closed_with(&flooder).await,
        Some(4009),
        "{:?}",
        flooder.close_reason()
    );

    // The others were never refused.
    bystander.ping().await.unwrap();
    polite.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_account_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections_per_account: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let first = server.connect(Wire::Binary).await;
    let signed = first.sign_in("worker-01-1a", PW).await.unwrap();
    let second = server.sign_in("worker-01-1a", Wire::Json).await;

    // A third sign-in, by password or token, is refused; the connection stays usable.
    let third = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(third.sign_in("worker-01-1a", PW).await),
        ErrorCode::RateLimited
    );
    assert_eq!(
        code_of(third.authenticate(signed.token.clone()).await),
        ErrorCode::RateLimited
    );
    let by_header = ConnectOptions {
        bearer_token: Some(signed.token.clone()),
        ..Default::default()
    };
    match Client::connect(&server.url, by_header.clone()).await {
        Err(ClientError::Connect { status, .. }) => assert_eq!(status, Some(429)),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    // Another account is not affected.
    third.sign_in("worker-01-1b", PW).await.unwrap();

    // Once one closes, there is room again.
    second.close().await;
    let worker = server.account_id("worker-01-1a");
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.county.hub().sessions_of(worker) >= 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let again = Client::connect(&server.url, by_header).await.unwrap();
    again.ping().await.unwrap();
    first.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_limited_per_account_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        sign_in_failures_per_account: 3,
        sign_in_failures_per_address: 5,
        sign_in_window_secs: 900,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let c = server.connect(Wire::Binary).await;
    // Successful sign-ins do not count.
    for _ in 0..4 {
        let ok = server.sign_in("resident-01-1a", Wire::Binary).await;
        ok.close().await;
    }
    for _ in 0..3 {
        assert_eq!(
            code_of(c.sign_in("resident-01-1a", "guess-guess").await),
            ErrorCode::BadCredentials
        );
    }
    // Locked: even the right password is refused, before it is checked.
    assert_eq!(
        code_of(c.sign_in("resident-01-1a", PW).await),
        ErrorCode::RateLimited
    );
    // Other accounts from this address: two more failures use up the address's allowance.
    for login in ["resident-01-1b", "nobody-at-all"] {
        assert_eq!(
            code_of(c.sign_in(login, "guess-guess").await),
            ErrorCode::BadCredentials
        );
    }
    assert_eq!(
        code_of(c.sign_in("resident-01-1c", PW).await),
        ErrorCode::RateLimited
    );
    // Registration hashes a password too: refused from this address.
    let r = c
        .register("newcomer-1", "long-enough-pw", "新来的", "条心路3号")
        .await;
    assert_eq!(code_of(r), ErrorCode::RateLimited);
    // The allowance comes back with time (the server's clock).
    server.clock.advance(Duration::from_secs(900));
    c.sign_in("resident-01-1a", PW).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_sign_ins_are_limited_per_account_even_when_right() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        sign_ins_per_account: 3,
        sign_in_window_secs: 900,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let c = server.connect(Wire::Binary).await;
        tokens.push(c.sign_in("resident-01-1a", PW).await.unwrap().token);
        c.close().await;
    }
    // The fourth is refused before its password is hashed; other accounts are not.
    let c = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(c.sign_in("resident-01-1a", PW).await),
        ErrorCode::RateLimited
    );
    c.sign_in("resident-01-1b", PW).await.unwrap();
    let c = server.connect(Wire::Binary).await;
    // Tokens are not limited: reconnecting with one costs no hash.
    for token in tokens.iter().cycle().take(10) {
        let again = server.connect(Wire::Binary).await;
        again.authenticate(token.clone()).await.unwrap();
        again.close().await;
    }
    // One comes back every 900 s / 3 (the server's clock).
    server.clock.advance(Duration::from_secs(300));
    c.sign_in("resident-01-1a", PW).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petitions_per_resident_per_day_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_petitions_per_day: 3,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let resident_id = server.account_id("resident-01-1a");
    let worker_id = server.account_id("worker-01-1a");
    let submit = |n: u32| lianxin_client::v1::SubmitPetition {
        client_msg_id: format!("p-{n}"),
        ..complaint(worker_id, &format!("第{n}件事"))
    };
    let mut first = None;
    for n in 0..3 {
        let p = resident.submit_petition(submit(n)).await.unwrap();
        first.get_or_insert(p.id);
    }
    assert_eq!(
        code_of(resident.submit_petition(submit(3)).await),
        ErrorCode::RateLimited
    );
    // A retry of an accepted submission is still answered with its petition.
    assert_eq!(
        resident.submit_petition(submit(0)).await.unwrap().id,
        first.unwrap()
    );
    // Staff filing for the resident (by phone, in person) are not limited.
    let filed = lianxin_client::v1::SubmitPetition {
        on_behalf_of: resident_id,
        channel: lianxin_client::v1::Channel::Phone as i32,
        ..complaint(worker_id, "电话反映")
    };
    worker.submit_petition(filed).await.unwrap();
    // A day later the resident may raise petitions again.
    server.clock.advance(Duration::from_secs(24 * 3600));
    resident.submit_petition(submit(4)).await.unwrap();
    server.stop().await;
}

/// Raises this process's open-file limit for tests with many sockets.
fn more_files() {
    let _ = rlimit::increase_nofile_limit(10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_of_1000_dribbling_handshakes_is_dropped_while_real_clients_connect() {
    more_files();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        handshake_timeout_secs: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let addr = server.addr;
    // 900 connections dribble an upgrade request one byte every 200 ms; 100 send nothing.
    // (Connected one after another, so that none waits in the kernel's accept queue, where
    // the server cannot see it yet.)
    let mut attackers = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        attackers.push(tokio::spawn(async move {
            let request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut buf = [0u8; 64];
            if i % 10 == 0 {
                // Silent: wait for the server to hang up.
                let r = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
                if !matches!(r, Ok(Ok(0) | Err(_))) {
                    eprintln!("silent {i}: {r:?} {:?}", String::from_utf8_lossy(&buf));
                }
                return matches!(r, Ok(Ok(0) | Err(_)));
            }
            for byte in request.iter().cycle() {
                if s.write_all(&[*byte]).await.is_err() {
                    return true; // dropped by the server
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(n)) => {
                        eprintln!("dribbler {i}: {:?}", String::from_utf8_lossy(&buf[..n]));
                        return false; // the server answered a request never finished
                    }
                    Err(_) => {}
                }
            }
            false
        }));
    }
    // Meanwhile, real clients connect, sign in and are served.
    for login in ["resident-01-1a", "worker-01-1a", "resident-02-1a"] {
        let c = server.sign_in(login, Wire::Binary).await;
        c.ping().await.unwrap();
    }
    let mut dropped = 0;
    for a in attackers {
        if tokio::time::timeout(Duration::from_secs(60), a)
            .await
            .expect("every attacker is dropped in time")
            .unwrap()
        {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 1000);
    let after = server.sign_in("resident-01-1b", Wire::Json).await;
    after.ping().await.unwrap();
    server.stop().await;
}

/// Opens a WebSocket with a plain TCP socket, then reads raw bytes (so no pong is ever sent,
/// unlike a WebSocket library that answers pings while reading); returns the close code the
/// server sends.
async fn raw_ws_close_code(addr: std::net::SocketAddr, sign_in: Option<&str>) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: lianxin.v1\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    if let Some(login) = sign_in {
        let frame = ClientFrame {
            id: 1,
            request: Some(Request::SignIn(SignIn {
                login: login.into(),
                password: PW.into(),
                device: "raw".into(),
            })),
        }
        .encode_to_vec();
        // A masked binary frame (clients must mask).
        let mut out = vec![0x82];
        assert!(frame.len() < 126);
        out.push(0x80 | frame.len() as u8);
        let mask = [1u8, 2, 3, 4];
        out.extend_from_slice(&mask);
        out.extend(frame.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&out).await.unwrap();
    }
    // Server frames are unmasked: opcode byte, length, payload.
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut all)).await;
    let mut i = 0;
    while i + 2 <= all.len() {
        let opcode = all[i] & 0x0f;
        let (len, start) = match all[i + 1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([all[i + 2], all[i + 3]])),
                i + 4,
            ),
            127 => panic!("no frame this large is expected"),
            n => (usize::from(n), i + 2),
        };
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([all[start], all[start + 1]]));
        }
        if opcode == 0x2 && sign_in.is_some() {
            let f = ServerFrame::decode(&all[start..start + len]).unwrap();
            assert!(matches!(
                f.frame,
                Some(server_frame::Frame::Reply(lianxin_client::v1::Reply {
                    result: Some(reply::Result::SignedIn(_)),
                    ..
                }))
            ));
        }
        i = start + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_answer_pings_or_never_sign_in_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        ping_interval_secs: 1,
        idle_timeout_secs: 2,
        auth_timeout_secs: 60,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    // A pinging client that answers (its library sends pongs) stays.
    let lively = server.sign_in("resident-01-1b", Wire::Binary).await;
    // Signed in, then deaf to pings: closed with 4002.
    assert_eq!(
        raw_ws_close_code(server.addr, Some("resident-01-1a")).await,
        Some(4002)
    );
    lively.ping().await.unwrap();
    assert!(!lively.is_closed());
    server.stop().await;

    // Never signing in: closed with 4001 after the sign-in deadline.
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        auth_timeout_secs: 1,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let anonymous = server.connect(Wire::Binary).await;
    anonymous.ping().await.unwrap(); // a ping request does not extend the deadline
    assert_eq!(closed_with(&anonymous).await, Some(4001));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_as_a_slow_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        send_timeout_secs: 1,
        requests_per_sec: 1_000,
        request_burst: 1_000,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let worker_id = server.account_id("worker-01-1a");
    // A long conversation: replies to history requests of ~2 MB each.
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(complaint(worker_id, "长谈"))
        .await
        .unwrap();
    let long: String = "长".repeat(4000);
    for _ in 0..150 {
        resident.send_message(p.id, &long, "").await.unwrap();
    }

    // A worker with a 4 KiB receive buffer asks for the history again and again, never reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut request =
        lianxin_client::tungstenite::client::IntoClientRequest::into_client_request(&server.url)
            .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "lianxin.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let frame = |id: u64, request: Request| {
        Message::Binary(
            ClientFrame {
                id,
                request: Some(request),
            }
            .encode_to_vec()
            .into(),
        )
    };
    ws.send(frame(
        1,
        Request::SignIn(SignIn {
            login: "worker-01-1a".into(),
            password: PW.into(),
            device: "slow".into(),
        }),
    ))
    .await
    .unwrap();
    let signed = ws.next().await.unwrap().unwrap();
    assert!(matches!(signed, Message::Binary(_)));
    for id in 2..12 {
        let get = lianxin_client::v1::GetHistory {
            petition_id: p.id,
            after_seq: 0,
            limit: 500,
        };
        // The server may give up on it before all ten are sent (its replies fill the socket
        // fast): then the socket is closed under the sender.
        if ws.send(frame(id, Request::GetHistory(get))).await.is_err() {
            break;
        }
    }
    // The server gives up on it: its session ends while it still has not read a byte.
    tokio::time::timeout(Duration::from_secs(20), async {
        while server.county.hub().sessions_of(worker_id) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow consumer is disconnected");
    // What it finally reads ends without the rest of the replies (a close frame, 4008, if
    // there was room for one).
    let mut replies = 0;
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match m {
            Message::Binary(_) => replies += 1,
            Message::Close(Some(c)) => code = Some(u16::from(c.code)),
            _ => {}
        }
    }
    assert!(replies < 10, "all {replies} replies arrived");
    assert!(code.is_none() || code == Some(4008), "{code:?}");
    // The resident was never held up.
    resident.ping().await.unwrap();
    server.stop().await;
}

/// Bystanders' request latencies (p50, p99) for `secs` seconds: `clients` signed-in clients,
/// each making a request every 25 ms.
async fn bystander_latencies(url: &str, clients: usize, secs: u64) -> (Duration, Duration) {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let login = format!("resident-{:02}-{}a", i % 12 + 1, i / 12 % 4 + 1);
        let c = sign_in(url, &login, Wire::Binary).await;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let end = tokio::time::Instant::now() + Duration::from_secs(secs);
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let mut n = 0u64;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                let started = std::time::Instant::now();
                if n.is_multiple_of(2) {
                    c.ping().await.unwrap();
                } else {
                    c.my_grid().await.unwrap();
                }
                samples.push(started.elapsed());
                n += 1;
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (at(0.50), at(0.99))
}

/// Not a pass/fail test: measures what hostile clients cost the others, attackers and server in
/// this process. Run it with
/// `cargo test --release -p lianxin-server --test hostile -- --ignored --nocapture bystander`
/// (docs/security.md has the figures).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run by hand"]
async fn bystander_latency_under_attack() {
    more_files();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        handshake_timeout_secs: 2,
        ..Limits::default()
    };
    let server = TestServer::start_with(config_with(dir.path(), limits)).await;
    let attacker = Attacker::InProcess {
        url: server.url.clone(),
        addr: server.addr,
        running: None,
    };
    let what = "in-process server and attackers";
    measure_bystanders(&server.url, attacker, None, what).await;
    server.stop().await;
}

/// The same measurement with three processes: the server (the `lianxin` binary, default limits
/// but a 2 s handshake deadline), the bystanders (this test) and the attackers (this test binary
/// run again as `attacker_process`, at the niceness `ATTACKER_NICE`, default 0), so neither the
/// attackers' runtime nor, when niced, their CPU is counted against the server:
/// `ATTACK=flood ATTACKER_NICE=19 cargo test --release -p lianxin-server --test hostile --
/// --ignored --nocapture separate_process`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run by hand"]
async fn bystander_latency_under_attack_separate_process() {
    more_files();
    let dir = tempfile::tempdir().unwrap();
    // HANDSHAKE_SECS: the server's handshake deadline (default 2 s, five times the default's
    // slowloris reconnects).
    let handshake = std::env::var("HANDSHAKE_SECS").unwrap_or_else(|_| "2".into());
    let server = ChildServer::start_with_env(
        dir.path(),
        &[("LIANXIN_LIMITS__HANDSHAKE_TIMEOUT_SECS", handshake.as_str())],
    )
    .await;
    let nice = std::env::var("ATTACKER_NICE").unwrap_or_else(|_| "0".into());
    // SERVER_CPUS, BYSTANDER_CPUS, ATTACKER_CPUS: `taskset` CPU lists to pin each process to
    // (unset: not pinned), e.g. the attackers on a core of their own, as if on another machine.
    let pin = |var: &str, pid: u32| {
        if let Ok(cpus) = std::env::var(var) {
            let status = std::process::Command::new("taskset")
                .args(["-a", "-cp", &cpus, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "taskset {cpus} for {var}");
        }
    };
    pin("SERVER_CPUS", server.child.id());
    pin("BYSTANDER_CPUS", std::process::id());
    let mut command = match std::env::var("ATTACKER_CPUS") {
        Ok(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpus, "nice"]);
            c
        }
        Err(_) => std::process::Command::new("nice"),
    };
    let mut child = command
        .args(["-n", &nice])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "attacker_process", "--nocapture"])
        .env("LIANXIN_ATTACK_URL", &server.url)
        .env("LIANXIN_ATTACK_ADDR", server.addr.to_string())
        .env("ATTACK", attack_kind())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let commands = child.stdin.take().unwrap();
    let acks = std::io::BufReader::new(child.stdout.take().unwrap());
    let attacker = Attacker::Child { commands, acks };
    let cpus = |var: &str| std::env::var(var).unwrap_or_else(|_| "any".into());
    let what = format!(
        "server with a {handshake} s handshake deadline, bystanders and attackers (nice {nice}) \
         in three processes; CPUs: server {}, bystanders {}, attackers {}",
        cpus("SERVER_CPUS"),
        cpus("BYSTANDER_CPUS"),
        cpus("ATTACKER_CPUS")
    );
    measure_bystanders(&server.url, attacker, Some(server.child.id()), &what).await;
    let _ = child.wait();
    server.kill();
}

/// The attacker side of `bystander_latency_under_attack_separate_process`; does nothing unless
/// started by it (`LIANXIN_ATTACK_URL` set). Reads `on` and `off` lines from its stdin, answers
/// each with a line once done, and ends when its stdin closes.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the attacker process of a measurement"]
async fn attacker_process() {
    let Ok(url) = std::env::var("LIANXIN_ATTACK_URL") else {
        return;
    };
    more_files();
    let addr = std::env::var("LIANXIN_ATTACK_ADDR")
        .unwrap()
        .parse()
        .unwrap();
    let mut attacker = Attacker::InProcess {
        url,
        addr,
        running: None,
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        match line.trim() {
            "on" => attacker.on().await,
            _ => attacker.off().await,
        }
        // (The test harness writes to stdout too: the parent waits for this exact line.)
        if out.write_all(b"\ndone\n").await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
    attacker.off().await;
}

/// The attack `ATTACK` names: slowloris, flood or big; all at once when unset.
fn attack_kind() -> String {
    std::env::var("ATTACK").unwrap_or_default()
}

type Stop = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// Attackers that can be turned on and off between rounds of a measurement.
enum Attacker {
    /// Attack tasks in this process.
    InProcess {
        url: String,
        addr: std::net::SocketAddr,
        running: Option<(Stop, tokio::task::JoinHandle<()>)>,
    },
    /// An `attacker_process` told `on` and `off` through its stdin.
    Child {
        commands: std::process::ChildStdin,
        acks: std::io::BufReader<std::process::ChildStdout>,
    },
}

impl Attacker {
    async fn on(&mut self) {
        match self {
            Attacker::InProcess { url, addr, running } => {
                let stop = Stop::default();
                let task = tokio::spawn(attack(url.clone(), *addr, attack_kind(), stop.clone()));
                *running = Some((stop, task));
            }
            Attacker::Child { .. } => self.tell("on").await,
        }
    }

    async fn off(&mut self) {
        match self {
            Attacker::InProcess { running, .. } => {
                if let Some((stop, task)) = running.take() {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
                }
            }
            Attacker::Child { .. } => self.tell("off").await,
        }
    }

    /// Stops the attack; a child is told to end and its output read to its end.
    async fn finish(mut self) {
        self.off().await;
        if let Attacker::Child { commands, mut acks } = self {
            drop(commands);
            let _ = std::io::Read::read_to_end(&mut acks, &mut Vec::new());
        }
    }

    /// Sends a command to the child and waits for its answer.
    async fn tell(&mut self, command: &str) {
        if let Attacker::Child { commands, acks } = self {
            use std::io::{BufRead, Write};
            writeln!(commands, "{command}").unwrap();
            commands.flush().unwrap();
            tokio::task::block_in_place(|| {
                let mut line = String::new();
                while acks.read_line(&mut line).unwrap() > 0 && line.trim() != "done" {
                    line.clear();
                }
            });
        }
    }
}

/// CPU time the process `pid` has used (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name; clock ticks of 10 ms.
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Bystanders' latencies over one phase, and the server's CPU time per second of it.
async fn phase(url: &str, server: Option<u32>) -> ((Duration, Duration), Option<f64>) {
    let cpu_before = server.map(cpu_time);
    let started = std::time::Instant::now();
    let latencies = bystander_latencies(url, 20, 5).await;
    let share = server.zip(cpu_before).map(|(pid, before)| {
        (cpu_time(pid) - before).as_secs_f64() / started.elapsed().as_secs_f64()
    });
    (latencies, share)
}

/// Rounds of 5 s of bystanders alone, then 5 s under attack (after 2 s for it to build up);
/// prints the medians over the rounds (`ROUNDS`, default 5) of each phase's p50 and p99, and of
/// the server's CPU use when it is the process `server`.
async fn measure_bystanders(url: &str, mut attacker: Attacker, server: Option<u32>, what: &str) {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (mut alone, mut hit) = (Vec::new(), Vec::new());
    let (mut cpu_alone, mut cpu_hit) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (latencies, cpu) = phase(url, server).await;
        alone.push(latencies);
        cpu_alone.extend(cpu);
        attacker.on().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (latencies, cpu) = phase(url, server).await;
        hit.push(latencies);
        cpu_hit.extend(cpu);
        attacker.off().await;
    }
    attacker.finish().await;
    let median = |v: &[(Duration, Duration)], pick: fn(&(Duration, Duration)) -> Duration| {
        let mut x: Vec<Duration> = v.iter().map(pick).collect();
        x.sort();
        x[x.len() / 2]
    };
    let (a50, a99) = (median(&alone, |x| x.0), median(&alone, |x| x.1));
    let (h50, h99) = (median(&hit, |x| x.0), median(&hit, |x| x.1));
    let kind = attack_kind();
    eprintln!(
        "bystanders ({}, {what}), medians of {rounds} rounds: p50 {a50:?} / p99 {a99:?} alone; \
         p50 {h50:?} / p99 {h99:?} under attack ({:+.1}% p99)",
        if kind.is_empty() {
            "all attacks"
        } else {
            kind.as_str()
        },
        (h99.as_secs_f64() / a99.as_secs_f64() - 1.0) * 100.0
    );
    if !cpu_alone.is_empty() {
        cpu_alone.sort_by(f64::total_cmp);
        cpu_hit.sort_by(f64::total_cmp);
        eprintln!(
            "  server CPU, medians: {:.1}% of a core alone, {:.1}% under attack",
            cpu_alone[cpu_alone.len() / 2] * 100.0,
            cpu_hit[cpu_hit.len() / 2] * 100.0
        );
    }
    eprintln!(
        "  p99 per round, alone: {:?}",
        alone.iter().map(|x| x.1).collect::<Vec<_>>()
    );
    eprintln!(
        "  p99 per round, under attack: {:?}",
        hit.iter().map(|x| x.1).collect::<Vec<_>>()
    );
}

/// Runs the attack `only` names (all when empty) against the server until `stop` is set.
async fn attack(
    url: String,
    addr: std::net::SocketAddr,
    only: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut attack = Vec::new();
    let wants = |kind: &str| only.is_empty() || only == kind;
    // 1,000 slowloris connections, replaced as the server drops them.
    for _ in 0..if wants("slowloris") { 1000 } else { 0 } {
        let stop = stop.clone();
        attack.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = s.write_all(b"GET /ws HTTP/1.1\r\n").await;
                let mut buf = [0u8; 16];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b"X").await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(_) => break,
                        Err(_) => continue,
                    }
                }
            }
        }));
    }
    // Two flooders, reconnecting with their token whenever they are closed; one sender of
    // oversized frames.
    for login in ["worker-01-1a", "worker-02-1a"] {
        if !wants("flood") {
            break;
        }
        let stop = stop.clone();
        let url = url.clone();
        let token = connect(&url, Wire::Binary)
            .await
            .sign_in(login, PW)
            .await
            .map(|s| s.token)
            .unwrap_or_default();
        attack.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = connect(&url, Wire::Binary).await;
                if c.authenticate(token.clone()).await.is_err() {
                    continue;
                }
                while !c.is_closed() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let burst = (0..50).map(|_| c.ping());
                    let _ = futures_util::future::join_all(burst).await;
                }
            }
        }));
    }
    if wants("big") {
        let stop = stop.clone();
        let url = url.clone();
        attack.push(tokio::spawn(async move {
            let big = vec![0u8; Limits::default().max_frame_bytes + 1];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = connect(&url, Wire::Binary).await;
                while !c.is_closed() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = c
                        .send_raw_for_reply(Message::Binary(big.clone().into()), 0)
                        .await;
                }
            }
        }));
    }
    for a in attack {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
}
