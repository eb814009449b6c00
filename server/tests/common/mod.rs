//! Test harness: starts the real server on a loopback port (in this process, or as the `lianxin`
//! binary in a child process for crash tests) and connects real WebSocket clients to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lianxin_actors::clock::ManualClock;
use lianxin_actors::county::County;
use lianxin_client::v1::{Event, event};
use lianxin_client::{Client, ClientError, ConnectOptions, Wire};
use lianxin_server::config::Config;
use lianxin_server::server::Server;
use tokio::sync::oneshot;

/// Password of every demo account.
pub const PW: &str = lianxin_server::seed::DEMO_PASSWORD;

/// Where the manual clock of a test server starts.
pub const START_MS: i64 = 1_795_000_000_000;

/// A server running in this process.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    pub county: County,
    pub clock: ManualClock,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Tests drive supervision with a manual clock and `County::supervise_now`.
        supervision_tick_ms: 0,
        ..Config::default()
    };
    // Test clients send as fast as they can; the request rate limit has its own tests
    // (hostile.rs, which sets its limits explicitly).
    config.limits.requests_per_sec = 1_000_000;
    config.limits.request_burst = 1_000_000;
    // Tests sign the seeded accounts in many times over.
    config.limits.sign_ins_per_account = 0;
    config
}

impl TestServer {
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with(test_config(dir)).await
    }

    /// Starts with idle petition actors stopped after `secs` seconds.
    pub async fn start_with_petition_idle(dir: &Path, secs: u64) -> TestServer {
        Self::start_with(Config {
            petition_idle_secs: secs,
            ..test_config(dir)
        })
        .await
    }

    pub async fn start_with(config: Config) -> TestServer {
        Self::start_at(config, START_MS).await
    }

    /// Starts with the manual clock at `now_ms`.
    pub async fn start_at(config: Config, now_ms: i64) -> TestServer {
        let clock = ManualClock::new(now_ms);
        let server = Server::start(config, Arc::new(clock.clone()), None)
            .await
            .expect("server starts");
        let county = server.county().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("server stops cleanly");
        });
        TestServer {
            url: format!("ws://{addr}/ws"),
            addr,
            county,
            clock,
            stop: Some(stop),
            task,
        }
    }

    /// Graceful shutdown: sessions closed, actors stopped, storage flushed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }

    pub fn account_id(&self, login: &str) -> u64 {
        self.county
            .store()
            .account_by_login(login)
            .unwrap()
            .expect("demo account exists")
            .id
    }

    pub async fn connect(&self, wire: Wire) -> Client {
        connect(&self.url, wire).await
    }

    pub async fn sign_in(&self, login: &str, wire: Wire) -> Client {
        sign_in(&self.url, login, wire).await
    }
}

pub async fn connect(url: &str, wire: Wire) -> Client {
    Client::connect(url, ConnectOptions::with_wire(wire))
        .await
        .expect("connects")
}

pub async fn sign_in(url: &str, login: &str, wire: Wire) -> Client {
    let client = connect(url, wire).await;
    client.sign_in(login, PW).await.expect("signs in");
    client
}

/// A plain HTTP/1.1 GET on loopback; returns the whole response (status line, headers, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_get_with(addr, path, &[]).await
}

/// A plain HTTP/1.1 GET with extra header lines ("Name: value").
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

/// A complaint addressed to a worker.
pub fn complaint(worker_id: u64, text: &str) -> lianxin_client::v1::SubmitPetition {
    lianxin_client::v1::SubmitPetition {
        category: lianxin_client::v1::Category::Complaint as i32,
        title: text.chars().take(8).collect(),
        text: text.into(),
        worker_id,
        ..Default::default()
    }
}

/// Waits (at most 10 s) for the next event that `pred` accepts, skipping others.
pub async fn expect_event(client: &mut Client, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let wait = async {
        loop {
            match client.next_event().await {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("connection closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Collects events until none arrives for `quiet`.
pub async fn drain_events(client: &mut Client, quiet: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(quiet, client.next_event()).await {
        out.push(e);
    }
    out
}

pub fn entry_added(e: &Event) -> Option<&lianxin_client::v1::EntryAdded> {
    match &e.kind {
        Some(event::Kind::EntryAdded(a)) => Some(a),
        _ => None,
    }
}

pub fn notice(e: &Event) -> Option<&lianxin_client::v1::PetitionNotice> {
    match &e.kind {
        Some(event::Kind::PetitionNotice(n)) => Some(n),
        _ => None,
    }
}

pub fn code_of(r: Result<impl std::fmt::Debug, ClientError>) -> lianxin_client::v1::ErrorCode {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// The `lianxin` binary running as a child process (for tests that kill it).
pub struct ChildServer {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ChildServer {
    /// Spawns the binary on `listen` (port 0: the kernel picks one), logging its ready line.
    pub fn spawn_on(dir: &Path, listen: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_lianxin"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", listen])
            .env("RUST_LOG", "warn,lianxin=info")
            // Durability tests stream requests as fast as the server acknowledges them.
            .env("LIANXIN_LIMITS__REQUESTS_PER_SEC", "1000000")
            .env("LIANXIN_LIMITS__REQUEST_BURST", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns lianxin")
    }

    /// Spawns the binary on a given port.
    pub fn spawn(dir: &Path, port: u16) -> Child {
        Self::spawn_on(dir, &format!("127.0.0.1:{port}"))
    }

    /// Starts the binary on a port the kernel picks and waits for its "ready" line, which names
    /// the address: no other process can take the port between choosing and binding it.
    pub async fn start(dir: &Path) -> ChildServer {
        Self::wait_ready(Self::spawn_on(dir, "127.0.0.1:0")).await
    }

    /// Like [`ChildServer::start`], with the default limits and the given extra environment.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> ChildServer {
        let child = Command::new(env!("CARGO_BIN_EXE_lianxin"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,lianxin=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns lianxin");
        Self::wait_ready(child).await
    }

    async fn wait_ready(mut child: Child) -> ChildServer {
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Read the log until the ready line, then keep draining it so the child never blocks.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && let Some(at) = line.find("ws://") {
                    let url: String = line[at..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    sent = tx.send(url).is_ok();
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("waiting for the ready line")
            .expect("lianxin logged its ready line");
        let addr: SocketAddr = url
            .trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .parse()
            .expect("an address in the ready line");
        // Dropping the server kills and reaps the child, whatever happens below.
        ChildServer { child, url, addr }
    }

    /// SIGKILL: no graceful path, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
