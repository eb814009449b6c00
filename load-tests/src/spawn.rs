//! Starting and stopping the process under load: the `lianxin` server on a fresh data folder, or
//! the bare relay (`lianxin-load relay`), each on a free loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a started process may take to answer on its port.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `lianxin` binary next to this executable.
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()
        .context("locating this executable")?
        .with_file_name("lianxin"))
}

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it meanwhile).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The limits lifted on every server this tool starts (`LIANXIN_*` environment, which the
/// scenario's own setup may override): the load generator reuses accounts over many connections
/// and sends as fast as its scenario asks, which the per-connection, per-account and per-day
/// protections against hostile clients would refuse.
pub const LOAD_LIMITS: [(&str, &str); 5] = [
    ("LIANXIN_LIMITS__REQUESTS_PER_SEC", "1000000"),
    ("LIANXIN_LIMITS__REQUEST_BURST", "1000000"),
    ("LIANXIN_LIMITS__MAX_CONNECTIONS_PER_ACCOUNT", "0"),
    ("LIANXIN_LIMITS__MAX_PETITIONS_PER_DAY", "0"),
    ("LIANXIN_LIMITS__SIGN_INS_PER_ACCOUNT", "0"),
];

/// Fails with a hint when the server binary is missing.
fn check_bin(bin: &Path) -> anyhow::Result<()> {
    if !bin.is_file() {
        bail!(
            "server binary {} not found: build it (cargo build --release -p lianxin-server) \
             or pass --server-bin",
            bin.display()
        );
    }
    Ok(())
}

/// What a scenario asks of the server it starts beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSetup {
    /// A configuration file (TOML) to start it with.
    pub config: Option<String>,
    /// Environment variables to set for it.
    pub env: Vec<(String, String)>,
    /// An existing data folder to serve (kept afterwards) instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
}

/// A child process serving WebSockets on a loopback port; killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its WebSocket URL.
    pub url: String,
    /// Where its standard output and error go.
    pub log_path: PathBuf,
    /// How long it took from starting the process until it answered (`/readyz` 200 for the
    /// server, an accepted connection for the relay).
    pub ready_after: Duration,
    /// The data folder (and log), removed when dropped; `None` when the caller owns the folder.
    _dir: Option<tempfile::TempDir>,
}

impl Spawned {
    /// Starts `lianxin serve --data-dir <temp> --listen 127.0.0.1:<free port>` (with
    /// `--config <temp>/lianxin.toml`, the environment and the data folder `setup` asks for) and
    /// waits until `/readyz` answers 200.
    pub async fn server(
        bin: &Path,
        log_filter: &str,
        setup: &ServerSetup,
    ) -> anyhow::Result<Spawned> {
        check_bin(bin)?;
        let dir = tempfile::Builder::new()
            .prefix("lianxin-load-")
            .tempdir()
            .context("creating a data folder")?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data = setup
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .current_dir(dir.path())
            .env("RUST_LOG", log_filter);
        if let Some(toml) = &setup.config {
            let path = dir.path().join("lianxin.toml");
            std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
            cmd.arg("--config").arg(&path);
        }
        cmd.envs(LOAD_LIMITS);
        cmd.envs(setup.env.iter().map(|(k, v)| (k, v)));
        let log_path = dir.path().join("process.log");
        let mut spawned = Self::spawn(cmd, Some(dir), log_path, addr).await?;
        spawned.wait_ready(true).await?;
        Ok(spawned)
    }

    /// Starts `lianxin serve --data-dir <data> --listen <addr>` on a folder the caller keeps (the
    /// crash loop restarts the server on it), appending its output to `log_path`, and waits until
    /// `/readyz` answers 200.
    pub async fn server_on(
        bin: &Path,
        log_filter: &str,
        data: &Path,
        log_path: &Path,
        addr: SocketAddr,
    ) -> anyhow::Result<Spawned> {
        check_bin(bin)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(addr.to_string())
            .env("RUST_LOG", log_filter)
            .envs(LOAD_LIMITS);
        if let Some(parent) = data.parent() {
            cmd.current_dir(parent);
        }
        let mut spawned = Self::spawn(cmd, None, log_path.to_path_buf(), addr).await?;
        spawned.wait_ready(true).await?;
        Ok(spawned)
    }

    /// SIGKILL: the process gets no chance to flush or close anything; waits for it to be gone.
    pub fn kill_now(&mut self) {
        self.kill();
    }

    /// Starts `<bin> relay --listen 127.0.0.1:<free port>` and waits until the port accepts.
    pub async fn relay(bin: &Path) -> anyhow::Result<Spawned> {
        let dir = tempfile::Builder::new()
            .prefix("lianxin-relay-")
            .tempdir()
            .context("creating a folder for the relay's log")?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(bin);
        cmd.arg("relay").arg("--listen").arg(addr.to_string());
        let log_path = dir.path().join("process.log");
        let mut spawned = Self::spawn(cmd, Some(dir), log_path, addr).await?;
        spawned.wait_ready(false).await?;
        Ok(spawned)
    }

    async fn spawn(
        mut cmd: Command,
        dir: Option<tempfile::TempDir>,
        log_path: PathBuf,
        addr: SocketAddr,
    ) -> anyhow::Result<Spawned> {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Spawned {
            pid: child.id(),
            child,
            addr,
            url: format!("ws://{addr}/ws"),
            log_path,
            ready_after: started.elapsed(),
            _dir: dir,
        })
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_ready(&mut self, http_ready: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let answered = if http_ready {
                matches!(http_status(self.addr, "/readyz").await, Ok(200))
            } else {
                tokio::net::TcpStream::connect(self.addr).await.is_ok()
            };
            if answered {
                self.ready_after += started.elapsed();
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before answering; its log ends with:\n{}",
                    self.url,
                    self.log_tail(20)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not answer within {:?}; its log ends with:\n{}",
                    self.url,
                    START_TIMEOUT,
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status code of a plain HTTP/1.0 GET.
pub async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    Ok(http_get(addr, path).await?.0)
}

/// A plain HTTP/1.0 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf))
        .await
        .context("read timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, b)| b.to_owned());
    Ok((status, body))
}

/// The quantiles of one request kind's latency from the server's Prometheus text
/// (`lianxin_request_seconds{request="<kind>",quantile="0.99"} 0.0012`), in seconds.
pub fn request_quantiles(metrics: &str, kind: &str) -> Vec<(String, f64)> {
    let prefix = format!("lianxin_request_seconds{{request=\"{kind}\",quantile=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (quantile, value) = rest.split_once("\"}")?;
            Some((quantile.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The value of an unlabelled gauge or counter in the server's Prometheus text
/// (`lianxin_petition_actors 12`).
pub fn plain_metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_metrics_from_prometheus_text() {
        let text = "# TYPE lianxin_petition_actors gauge\n\
            lianxin_petition_actors 1200\n\
            lianxin_petition_actors_total 3\n\
            lianxin_pending_steps 99\n";
        assert_eq!(plain_metric(text, "lianxin_petition_actors"), Some(1200.0));
        assert_eq!(plain_metric(text, "lianxin_pending_steps"), Some(99.0));
        assert_eq!(plain_metric(text, "lianxin_sessions"), None);
    }

    #[test]
    fn quantiles_from_prometheus_text() {
        let text = "# TYPE lianxin_request_seconds summary\n\
            lianxin_request_seconds{request=\"send_message\",quantile=\"0.5\"} 0.0005\n\
            lianxin_request_seconds{request=\"send_message\",quantile=\"0.99\"} 0.0012\n\
            lianxin_request_seconds{request=\"ping\",quantile=\"0.99\"} 0.00001\n\
            lianxin_request_seconds_sum{request=\"send_message\"} 1.5\n";
        let q = request_quantiles(text, "send_message");
        assert_eq!(
            q,
            vec![("0.5".to_owned(), 0.0005), ("0.99".to_owned(), 0.0012)]
        );
        assert!(request_quantiles(text, "subscribe").is_empty());
    }
}
