//! The accept loop on the listening port: optional TLS (rustls, TLS 1.2 and 1.3 only), a
//! handshake deadline, HTTP/1.1 with upgrades, and the `Origin` check of WebSocket upgrades.
//!
//! A new TCP connection has `limits.handshake_timeout_secs` to finish its TLS handshake and send
//! its whole HTTP request head (for `/ws`: the upgrade request); a connection that dribbles or
//! sends nothing is dropped then, so a slowloris holds nothing for long. A head that arrives in
//! pieces is read at most once every [`HEAD_READ_PACE`] (the first piece at once), so that a
//! dribbling client costs the server a read a second, not one per byte. Each connection carries
//! one request (no keep-alive), so no connection can idle between requests either.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two paths is set.
    #[error("tls: set both tls.cert_path and tls.key_path, or neither")]
    Incomplete,
    /// A PEM file could not be read or holds nothing usable.
    #[error("tls: reading {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the TLS acceptor the configuration asks for (None: plain TCP).
pub fn tls_acceptor(config: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_path, key_path) = match (&config.cert_path, &config.key_path) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let pem_error = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pem_error(cert_path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(cert_path, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1 only: WebSocket upgrades travel over it.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// How the accept loop treats new connections.
#[derive(Clone)]
pub struct Transport {
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Time for the TLS handshake plus the first request head.
    pub handshake_timeout: Duration,
}

/// Accepts connections on `listener` until `stop` turns true, serving `router` on each; then
/// asks every open HTTP connection to finish (upgraded WebSocket sessions end on their own
/// signal) and waits for them, at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    // Each connection task holds a clone; the loop waits until all are dropped.
    let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        if *stop.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small frames must not wait for Nagle's algorithm (it adds ~40 ms to deliveries).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let transport = transport.clone();
        let stop = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            connection(tcp, peer, router, transport, stop).await;
            drop(alive);
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(drain, async { while all_gone.recv().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections did not finish in time");
    }
}

/// Serves one TCP connection: TLS first if configured, then HTTP/1.1.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    transport: Transport,
    stop: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + transport.handshake_timeout;
    match &transport.tls {
        None => http(tcp, peer, router, deadline, stop).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => http(tls, peer, router, deadline, stop).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

/// HTTP/1.1 with upgrades on an established stream, for one request whose head must have
/// arrived by `deadline`.
async fn http<S>(
    io: S,
    peer: SocketAddr,
    router: Router,
    deadline: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_read = Arc::new(AtomicBool::new(false));
    let seen = head_read.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        seen.store(true, Ordering::Release);
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let mut response = response.await?;
            // One request per connection: nothing may idle between requests. (An upgrade keeps
            // its own `Connection: upgrade`.)
            if response.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
                response.headers_mut().insert(
                    header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head's deadline is the `select!` below; hyper's own header timeout (30 s by default)
    // is off.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(64 * 1024);
    let paced = PacedHead {
        inner: io,
        head_read: head_read.clone(),
        wait: None,
    };
    let conn = builder
        .serve_connection(TokioIo::new(paced), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline), if !head_read.load(Ordering::Acquire) => {
                // (The condition was read when this `select!` began: the head may have come
                // since, and its answer may take longer than the deadline.)
                if head_read.load(Ordering::Acquire) {
                    continue;
                }
                tracing::debug!(%peer, "no request head within the handshake deadline: dropped");
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How often a request head that arrives in pieces is read.
pub const HEAD_READ_PACE: Duration = Duration::from_secs(1);

/// A stream whose reads, until its request head has been read, wait [`HEAD_READ_PACE`] after
/// each one that brought data; afterwards (and for writes) it is the stream itself.
struct PacedHead<S> {
    inner: S,
    head_read: Arc<AtomicBool>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for PacedHead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.head_read.load(Ordering::Acquire) {
            self.wait = None;
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.wait = Some(Box::pin(tokio::time::sleep(HEAD_READ_PACE)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacedHead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether a WebSocket upgrade's `Origin` may open a session: no `Origin` (not a browser), the
/// server's own origin (same host and port as the `Host` header), or one of `allowed` (compared
/// without case, ignoring a trailing slash).
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // Same origin: the authority after the scheme equals the Host the browser connected to.
    let authority = match origin.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => return false, // "null", file://, or garbage
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let default_port = |s: &str| {
        if origin.starts_with("https://") {
            s.strip_suffix(":443").unwrap_or(s).to_owned()
        } else {
            s.strip_suffix(":80").unwrap_or(s).to_owned()
        }
    };
    default_port(authority).eq_ignore_ascii_case(&default_port(host.trim()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_without_header_same_host_or_listed_are_allowed() {
        let allowed = vec!["https://app.example.cn".to_owned()];
        assert!(origin_allowed(&headers(None, "x:1"), &allowed));
        assert!(origin_allowed(
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://Lianxin.example.cn"), "lianxin.example.cn:443"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://app.example.cn/"), "lianxin.example.cn"),
            &allowed
        ));
    }

    #[test]
    fn foreign_null_and_other_port_origins_are_refused() {
        let allowed = vec!["https://app.example.cn".to_owned()];
        for o in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080.evil.example",
            "file://",
            "http://app.example.cn",
        ] {
            assert!(
                !origin_allowed(&headers(Some(o), "127.0.0.1:8080"), &allowed),
                "{o}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_in_pieces_is_read_once_per_pace_and_then_freely() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(256);
        let head_read = Arc::new(AtomicBool::new(false));
        let mut paced = PacedHead {
            inner: server,
            head_read: head_read.clone(),
            wait: None,
        };
        let mut buf = [0u8; 64];
        let start = tokio::time::Instant::now();
        client.write_all(b"GET").await.unwrap();
        assert_eq!(paced.read(&mut buf).await.unwrap(), 3);
        assert_eq!(start.elapsed(), Duration::ZERO, "the first piece at once");
        // The next pieces wait for the pace, and come together.
        client.write_all(b" /ws").await.unwrap();
        client.write_all(b" HTTP/1.1").await.unwrap();
        assert_eq!(paced.read(&mut buf).await.unwrap(), 13);
        assert_eq!(start.elapsed(), HEAD_READ_PACE);
        // Once the head is in, reads are the stream's own.
        head_read.store(true, Ordering::Release);
        client.write_all(b"frame").await.unwrap();
        assert_eq!(paced.read(&mut buf).await.unwrap(), 5);
        assert_eq!(start.elapsed(), HEAD_READ_PACE);
        paced.write_all(b"reply").await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_may_take_longer_than_the_head_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let router = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "done"
            }),
        );
        let (mut client, server) = tokio::io::duplex(4096);
        let (_stop_tx, stop) = watch::channel(false);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let served = tokio::spawn(http(server, peer, router, deadline, stop));
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        served.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_not_in_by_the_deadline_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let (mut client, server) = tokio::io::duplex(4096);
        let (_stop_tx, stop) = watch::channel(false);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let served = tokio::spawn(http(server, peer, router, deadline, stop));
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        served.await.unwrap();
    }
}
