//! Sockets at scale: the open-file limit, source addresses to spread client sockets over, client
//! options with small buffers, and a raw WebSocket connection for the open-loop scenarios.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use lianxin_client::tungstenite::{
    self,
    client::IntoClientRequest,
    http::{HeaderValue, header},
    protocol::WebSocketConfig,
};
use lianxin_client::{ConnectOptions, Wire};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

/// Open files kept free for everything that is not a client socket (logs, /proc reads, the
/// runtime, the sign-in connections).
pub const FD_RESERVE: u64 = 500;

/// Client connections per source address by default (about 28,000 ephemeral ports exist per
/// source address; bound sockets take one each whatever their destination).
pub const CONNECTIONS_PER_SOURCE_IP: usize = 20_000;

/// The WebSocket read buffer of every load connection, as the server's.
pub const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket write buffer of every load connection.
pub const WRITE_BUFFER: usize = 4 * 1024;

/// The largest frame accepted from the server.
pub const MAX_FRAME: usize = 1 << 20;

/// Raises this process's open-file soft limit to its hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
    }
}

/// How many client connections one process can hold with `nofile` open files.
pub fn connection_cap(nofile: u64) -> u64 {
    nofile.saturating_sub(FD_RESERVE).max(1)
}

/// Caps a requested connection count; returns the count to use and a note when it was capped.
pub fn cap_connections(requested: u64, nofile: u64) -> (u64, Option<String>) {
    let cap = connection_cap(nofile);
    if requested <= cap {
        (requested, None)
    } else {
        (
            cap,
            Some(format!(
                "{requested} connections requested but one process may hold only {cap} here \
                 ({nofile} open files, {FD_RESERVE} kept free); capped at {cap}. More need several \
                 load-generator processes (and a server host with a higher `ulimit -n`)"
            )),
        )
    }
}

/// The source addresses client sockets are bound to, in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps {
    ips: Vec<IpAddr>,
}

impl SourceIps {
    /// For a target URL: `count` addresses 127.0.0.2, 127.0.0.3, ... when the target is an IPv4
    /// loopback address (or `localhost`), none otherwise (the kernel picks). `count` 0 means one
    /// per [`CONNECTIONS_PER_SOURCE_IP`] of `connections`.
    pub fn for_target(url: &str, count: usize, connections: u64) -> SourceIps {
        Self::for_target_from(url, count, connections, 0)
    }

    /// As [`SourceIps::for_target`], starting `offset` addresses further (127.0.0.2 + offset,
    /// wrapping within 127.0.0.2 ..= 127.0.0.251), so that a later run does not meet the
    /// TIME_WAIT ports an earlier run left on its addresses.
    pub fn for_target_from(url: &str, count: usize, connections: u64, offset: usize) -> SourceIps {
        let loopback_v4 = host_of(url).is_some_and(|h| {
            h == "localhost" || h.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        });
        if !loopback_v4 {
            return SourceIps { ips: Vec::new() };
        }
        let count = if count == 0 {
            auto_source_ips(connections)
        } else {
            count.min(250)
        };
        let ips = (0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + ((offset + i) % 250) as u8)))
            .collect();
        SourceIps { ips }
    }

    /// The address for the `i`-th connection.
    pub fn pick(&self, i: usize) -> Option<IpAddr> {
        (!self.ips.is_empty()).then(|| self.ips[i % self.ips.len()])
    }

    /// How many addresses are used.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether the kernel picks the source address.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
}

/// One source address per [`CONNECTIONS_PER_SOURCE_IP`] connections, at least one, at most 250.
pub fn auto_source_ips(connections: u64) -> usize {
    (connections as usize)
        .div_ceil(CONNECTIONS_PER_SOURCE_IP)
        .clamp(1, 250)
}

/// The host of a `ws://host:port/path` URL.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// Client options for a load connection: small buffers, a source address, a bearer token.
pub fn client_options(local: Option<IpAddr>, bearer: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        wire: Wire::Binary,
        bearer_token: bearer.map(str::to_owned),
        read_buffer_size: READ_BUFFER,
        write_buffer_size: WRITE_BUFFER,
        max_frame: MAX_FRAME,
        local_addr: local,
        connect_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        event_capacity: 4096,
    }
}

/// A raw WebSocket to the server.
pub type RawWs = WebSocketStream<TcpStream>;

/// Opens a raw WebSocket (`lianxin.v1` subprotocol, binary frames, small buffers) from `local`,
/// signed in by `bearer` when given.
pub async fn connect_raw(
    url: &str,
    local: Option<IpAddr>,
    bearer: Option<&str>,
) -> anyhow::Result<RawWs> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("bad URL {url}"))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(lianxin_protocol::SUBPROTOCOL),
    );
    if let Some(token) = bearer {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).context("token as a header")?,
        );
    }
    let host = host_of(url).context("no host in the URL")?;
    let port = request.uri().port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .find(|a| local.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
        .with_context(|| format!("cannot resolve {host}"))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding to {ip}"))?;
    }
    let tcp = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(r) => anyhow::anyhow!("upgrade refused: {}", r.status()),
            other => anyhow::anyhow!("websocket handshake: {other}"),
        })?;
    let accepted = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if accepted != Some(lianxin_protocol::SUBPROTOCOL) {
        bail!("the server did not accept the lianxin.v1 subprotocol");
    }
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_only_for_loopback_v4() {
        let s = SourceIps::for_target("ws://127.0.0.1:8080/ws", 3, 0);
        assert_eq!(s.len(), 3);
        assert_eq!(s.pick(0), Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(s.pick(4), Some(IpAddr::from([127, 0, 0, 3])));
        let auto = SourceIps::for_target("ws://localhost:1/ws", 0, 45_000);
        assert_eq!(auto.len(), 3);
        assert!(SourceIps::for_target("ws://[::1]:1/ws", 2, 0).is_empty());
        assert!(
            SourceIps::for_target("ws://10.0.0.1:1/ws", 2, 0)
                .pick(0)
                .is_none()
        );
        let later = SourceIps::for_target_from("ws://127.0.0.1:1/ws", 2, 0, 249);
        assert_eq!(later.pick(0), Some(IpAddr::from([127, 0, 0, 251])));
        assert_eq!(later.pick(1), Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!(auto_source_ips(0), 1);
        assert_eq!(auto_source_ips(20_000), 1);
        assert_eq!(auto_source_ips(20_001), 2);
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("ws://127.0.0.1:80/ws").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("ws://[::1]:80/ws").as_deref(), Some("::1"));
        assert_eq!(host_of("ws://example/ws").as_deref(), Some("example"));
    }

    #[test]
    fn connection_counts_are_capped_by_open_files() {
        assert_eq!(cap_connections(1000, 20_000), (1000, None));
        let (n, note) = cap_connections(50_000, 20_000);
        assert_eq!(n, 19_500);
        assert!(note.is_some_and(|n| n.contains("several")));
    }
}
