//! Sessions and transport: `Origin` checks on the upgrade, tampered and revoked tokens, revocation
//! reaching live sessions within a second, no secret in the logs, and TLS with a real TLS client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use lianxin_client::tungstenite::Message;
use lianxin_client::tungstenite::client::IntoClientRequest;
use lianxin_client::v1::{ClientFrame, ErrorCode, ServerFrame, SignIn, client_frame::Request};
use lianxin_client::{Client, ClientError, ConnectOptions, Wire};
use lianxin_server::config::{Config, TlsConfig};
use prost::Message as _;
use tokio_rustls::rustls;

/// The HTTP status of a WebSocket upgrade to `url` with these extra headers.
async fn upgrade_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "lianxin.v1".parse().unwrap());
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(lianxin_client::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_and_apps_own_and_listed_origins_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        allowed_origins: vec!["https://lianxin.example.cn".into()],
        ..test_config(dir.path())
    })
    .await;
    let own = format!("http://{}", server.addr);
    // Apps and scripts send no Origin.
    assert_eq!(upgrade_status(&server.url, &[]).await, 101);
    // The server's own pages (same host and port).
    assert_eq!(upgrade_status(&server.url, &[("Origin", &own)]).await, 101);
    // A listed origin.
    assert_eq!(
        upgrade_status(&server.url, &[("Origin", "https://lianxin.example.cn")]).await,
        101
    );
    // Anyone else's page, a sandboxed page ("null"), another port of the same host.
    let other_port = format!("http://127.0.0.1:{}", server.addr.port().wrapping_add(1));
    for foreign in ["https://evil.example", "null", other_port.as_str()] {
        assert_eq!(
            upgrade_status(&server.url, &[("Origin", foreign)]).await,
            403,
            "{foreign}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_are_refused_and_revocation_closes_live_sessions_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let me = server.connect(Wire::Binary).await;
    let token = me.sign_in("worker-01-1a", PW).await.unwrap().token;

    // One changed character, a truncated token, an appended one: refused both ways.
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        flipped,
        token[..token.len() - 1].to_owned(),
        format!("{token}A"),
    ] {
        let anon = server.connect(Wire::Json).await;
        assert_eq!(
            code_of(anon.authenticate(bad.clone()).await),
            ErrorCode::BadCredentials
        );
        let options = ConnectOptions {
            bearer_token: Some(bad),
            ..Default::default()
        };
        match Client::connect(&server.url, options).await {
            Err(ClientError::Connect { status, .. }) => assert_eq!(status, Some(401)),
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }

    // Three live sessions of the same token: by header, by authenticate, and one more.
    let header = ConnectOptions {
        bearer_token: Some(token.clone()),
        ..Default::default()
    };
    let mut others = vec![Client::connect(&server.url, header).await.unwrap()];
    for wire in [Wire::Json, Wire::Binary] {
        let c = server.connect(wire).await;
        c.authenticate(token.clone()).await.unwrap();
        others.push(c);
    }
    let phone = server.sign_in("worker-01-1a", Wire::Binary).await;
    // The bystander of another account is untouched.
    let bystander = server.sign_in("worker-01-1b", Wire::Binary).await;

    phone.sign_out_everywhere().await.unwrap();
    let revoked_at = tokio::time::Instant::now();
    for c in &others {
        assert_revoked_within_a_second(c, revoked_at).await;
    }
    let fresh = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(fresh.authenticate(token).await),
        ErrorCode::BadCredentials
    );
    bystander.ping().await.unwrap();
    server.stop().await;
}

/// The `lianxin` binary with `RUST_LOG=trace`, every line of its log kept.
struct LoggedServer {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    url: String,
}

impl LoggedServer {
    async fn start(dir: &std::path::Path) -> LoggedServer {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lianxin"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawns lianxin");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let keep = lines.clone();
        let keep_out = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                keep_out.lock().unwrap().push(line);
            }
        });
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent
                    && line.contains("lianxin is ready")
                    && let Some(at) = line.find("ws://")
                {
                    let url: String = line[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    sent = tx.send(url).is_ok();
                }
                keep.lock().unwrap().push(line);
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("lianxin logged its ready line");
        LoggedServer {
            child,
            lines,
            reader: Some(reader),
            url,
        }
    }

    /// Stops the server (SIGKILL: every line written so far is in the pipe) and returns the log.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_reaches_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let server = LoggedServer::start(dir.path()).await;
    let password = "Pw-for-the-log-test-7f3a9c";
    let wrong = "Wrong-pw-for-the-log-test-e21b";
    let json = |wire| ConnectOptions::with_wire(wire);

    // Registration, a wrong and a right password, in both wire forms.
    let c = Client::connect(&server.url, json(Wire::Json))
        .await
        .unwrap();
    let registered = c
        .register("log-test-resident", password, "日志测试", "条心路3号")
        .await
        .unwrap();
    let b = Client::connect(&server.url, json(Wire::Binary))
        .await
        .unwrap();
    assert_eq!(
        code_of(b.sign_in("log-test-resident", wrong).await),
        ErrorCode::BadCredentials
    );
    let signed = b.sign_in("log-test-resident", password).await.unwrap();
    // Tokens by header and in a frame, a bad token, then sign-out everywhere.
    let by_header = ConnectOptions {
        bearer_token: Some(signed.token.clone()),
        ..json(Wire::Json)
    };
    let h = Client::connect(&server.url, by_header).await.unwrap();
    h.ping().await.unwrap();
    let a = Client::connect(&server.url, json(Wire::Json))
        .await
        .unwrap();
    a.authenticate(registered.token.clone()).await.unwrap();
    let d = Client::connect(&server.url, json(Wire::Json))
        .await
        .unwrap();
    let bogus = format!("{}x", signed.token);
    assert_eq!(
        code_of(d.authenticate(bogus.clone()).await),
        ErrorCode::BadCredentials
    );
    a.sign_out_everywhere().await.unwrap();

    let log = server.stop();
    assert!(
        log.iter().any(|l| l.contains("TRACE")),
        "the server logged at trace level ({} lines)",
        log.len()
    );
    for secret in [
        password,
        wrong,
        signed.token.as_str(),
        registered.token.as_str(),
        bogus.as_str(),
    ] {
        let leaks: Vec<_> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a secret reached the log: {leaks:#?}");
    }
}

/// A self-signed certificate for `localhost` in PEM files; the certificate's DER.
fn certificate(dir: &std::path::Path) -> (TlsConfig, rustls::pki_types::CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.key_pair.serialize_pem()).unwrap();
    (
        TlsConfig {
            cert_path: Some(cert_path),
            key_path: Some(key_path),
        },
        generated.cert.der().clone(),
    )
}

/// A TLS client trusting `cert`, speaking only `versions`.
fn tls_client(
    cert: &rustls::pki_types::CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_websocket_sessions_with_tls_1_2_and_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (tls, cert) = certificate(certs.path());
    let server = TestServer::start_with(Config {
        tls,
        ..test_config(dir.path())
    })
    .await;
    let port = server.addr.port();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    for (versions, expected) in [
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
    ] {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let stream = tls_client(&cert, versions)
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        let mut request = format!("wss://localhost:{port}/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "lianxin.v1".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("WebSocket over TLS");
        let sign_in = ClientFrame {
            id: 1,
            request: Some(Request::SignIn(SignIn {
                login: "resident-01-1a".into(),
                password: PW.into(),
                device: "tls".into(),
            })),
        };
        ws.send(Message::Binary(sign_in.encode_to_vec().into()))
            .await
            .unwrap();
        let reply = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => break ServerFrame::decode(b.as_ref()).unwrap(),
                _ => continue,
            }
        };
        let signed_in = matches!(
            reply.frame,
            Some(lianxin_client::v1::server_frame::Frame::Reply(
                lianxin_client::v1::Reply {
                    id: 1,
                    result: Some(lianxin_client::v1::reply::Result::SignedIn(_)),
                }
            ))
        );
        assert!(signed_in, "{reply:?}");
        ws.close(None).await.unwrap();
    }

    // Plain WebSocket on the TLS port gets nowhere.
    let plain = Client::connect(&server.url, ConnectOptions::default()).await;
    assert!(plain.is_err());
    // A client that does not trust the certificate is refused by its own TLS check.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let untrusted = tls_client(stranger.cert.der(), &[&rustls::version::TLS13])
        .connect(name, tcp)
        .await;
    assert!(untrusted.is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_path_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        tls: TlsConfig {
            cert_path: Some(dir.path().join("missing.pem")),
            key_path: Some(dir.path().join("missing-key.pem")),
        },
        ..test_config(dir.path())
    };
    let clock = Arc::new(lianxin_actors::clock::ManualClock::new(START_MS));
    let err = lianxin_server::server::Server::start(config, clock, None)
        .await
        .err()
        .expect("refuses to start");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let half = Config {
        tls: TlsConfig {
            cert_path: Some(dir.path().join("cert.pem")),
            key_path: None,
        },
        ..test_config(dir.path())
    };
    let clock = Arc::new(lianxin_actors::clock::ManualClock::new(START_MS));
    assert!(
        lianxin_server::server::Server::start(half, clock, None)
            .await
            .is_err()
    );
}

/// Waits until `c` is closed, at most a second after `since`, and checks the code is 4003.
async fn assert_revoked_within_a_second(c: &Client, since: tokio::time::Instant) {
    let left = Duration::from_secs(1).saturating_sub(since.elapsed());
    tokio::time::timeout(left, async {
        while !c.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every live session ends within a second of the revocation");
    assert_eq!(c.close_reason().map(|r| r.0), Some(4003));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_loses_its_sessions_and_cannot_sign_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let admin = server.sign_in("admin", Wire::Json).await;
    let supervisor = server.sign_in("sup-01", Wire::Json).await;
    let token = server
        .connect(Wire::Binary)
        .await
        .sign_in("worker-01-1a", PW)
        .await
        .unwrap()
        .token;
    let phone = server.connect(Wire::Binary).await;
    phone.authenticate(token.clone()).await.unwrap();
    let tablet = server.sign_in("worker-01-1a", Wire::Json).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let on_duty = |grid: &lianxin_client::v1::GridInfo| {
        grid.workers
            .iter()
            .find(|w| w.id == worker_id)
            .map(|w| w.on_duty)
    };
    assert_eq!(on_duty(&resident.my_grid().await.unwrap()), Some(true));

    // Only the administrator may.
    assert_eq!(
        code_of(supervisor.set_account_disabled(worker_id, true).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(admin.set_account_disabled(999_999, true).await),
        ErrorCode::NotFound
    );

    admin.set_account_disabled(worker_id, true).await.unwrap();
    let disabled_at = tokio::time::Instant::now();
    for c in [&phone, &tablet] {
        assert_revoked_within_a_second(c, disabled_at).await;
    }
    let fresh = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(fresh.authenticate(token).await),
        ErrorCode::BadCredentials
    );
    assert_eq!(
        code_of(fresh.sign_in("worker-01-1a", PW).await),
        ErrorCode::BadCredentials
    );
    // Nothing new is routed to them: they are off duty.
    assert_eq!(on_duty(&resident.my_grid().await.unwrap()), Some(false));

    // Enabled again, they sign in.
    admin.set_account_disabled(worker_id, false).await.unwrap();
    let back = server.connect(Wire::Binary).await;
    back.sign_in("worker-01-1a", PW).await.unwrap();
    server.stop().await;
}
