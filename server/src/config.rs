//! Server configuration: built-in defaults, then a TOML file, then `LIANXIN_*` environment
//! variables, then command-line flags, each overriding the one before (figment).
//!
//! Every key, its default and its meaning is listed in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use lianxin_actors::domain::appraisal::AppraisalConfig;
use lianxin_actors::domain::supervision::SupervisionConfig;
use serde::{Deserialize, Serialize};

use crate::webhook::WebhookConfig;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on (WebSocket at `/ws`, plus `/healthz`, `/readyz`, `/metrics`).
    pub listen: SocketAddr,
    /// Folder holding the database.
    pub data_dir: PathBuf,
    /// Length of the queue of connections waiting to be accepted (capped by the kernel's
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Seed the demo county into an empty database on start.
    pub seed_demo: bool,
    /// Node number in the top bits of every id (for several nodes later; 0 for one).
    pub node_id: u16,
    /// sled page-cache size in MiB (sled may use several times this; see docs/durability.md).
    pub cache_capacity_mb: u64,
    /// Milliseconds a timeline or feed chunk stays, on average, in the writer's memory behind
    /// its journal before it is written (0: with its group; at most 60,000; see docs/durability.md).
    pub write_behind_ms: u64,
    /// Limits.
    pub limits: Limits,
    /// Deadlines, reminders and escalation (see docs/supervision.md).
    pub supervision: SupervisionConfig,
    /// Milliseconds between the supervisor's looks for due steps.
    pub supervision_tick_ms: u64,
    /// Seconds without a request after which an open petition's actor is stopped (0: never).
    pub petition_idle_secs: u64,
    /// The supervisors' live response boards.
    pub board: BoardConfig,
    /// How workers are appraised (see docs/appraisal.md).
    pub appraisal: AppraisalConfig,
    /// The bad-review webhook.
    pub webhook: WebhookConfig,
    /// Photos and voice clips (see docs/media.md).
    pub media: MediaConfig,
    /// Logging.
    pub log: LogConfig,
    /// Browser origins (`scheme://host[:port]`) allowed to open `/ws` besides the server's own;
    /// requests without an `Origin` header (apps, scripts) are always allowed.
    pub allowed_origins: Vec<String>,
    /// TLS; off unless both paths are set.
    pub tls: TlsConfig,
}

/// TLS settings (rustls, TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_path: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

/// Limits on clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame or message a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Longest message text, in characters.
    pub max_text_chars: usize,
    /// Longest petition title, in characters.
    pub max_title_chars: usize,
    /// Feed events queued for one session before it falls back to reading storage.
    pub outbound_queue: usize,
    /// How long a session token stays valid, in hours.
    pub session_ttl_hours: u64,
    /// Seconds a connection may stay open without signing in.
    pub auth_timeout_secs: u64,
    /// Seconds between WebSocket pings from the server.
    pub ping_interval_secs: u64,
    /// Seconds without any frame from the client before the server closes the connection.
    pub idle_timeout_secs: u64,
    /// Seconds a write to a client may take before it counts as a slow consumer and is closed.
    pub send_timeout_secs: u64,
    /// Seconds a request may wait for the domain actors.
    pub call_timeout_secs: u64,
    /// Seconds a new TCP connection has to finish its TLS handshake and send its whole HTTP
    /// request head (the WebSocket upgrade); slower ones are dropped.
    pub handshake_timeout_secs: u64,
    /// Requests per second one connection may make on average (token bucket refill rate).
    pub requests_per_sec: u32,
    /// Requests one connection may make in a burst (token bucket size).
    pub request_burst: u32,
    /// Requests refused for rate in a row (no second without a refusal between them) after
    /// which the connection is closed with 4009 (0: never close).
    pub flood_close_after: u32,
    /// Connections one account may have signed in at once (0: no limit).
    pub max_connections_per_account: u32,
    /// Failed sign-ins per account allowed in `sign_in_window_secs` (0: no limit).
    pub sign_in_failures_per_account: u32,
    /// Password sign-ins per account, successful or not, allowed in `sign_in_window_secs`, so
    /// that one account's owner cannot keep the password hasher busy (0: no limit).
    pub sign_ins_per_account: u32,
    /// Failed sign-ins plus registrations per source address allowed in `sign_in_window_secs`
    /// (0: no limit).
    pub sign_in_failures_per_address: u32,
    /// The window of the sign-in limits, in seconds; allowance comes back evenly over it.
    pub sign_in_window_secs: u64,
    /// Petitions a resident may raise themselves in any 24 hours (0: no limit).
    pub max_petitions_per_day: u32,
}

/// Settings of the live response boards (see docs/metrics.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BoardConfig {
    /// The time zone "today" is counted in, in minutes east of UTC (480: China Standard Time).
    pub utc_offset_minutes: i32,
    /// Milliseconds between pushes of changed boards to their watchers.
    pub interval_ms: u64,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            utc_offset_minutes: 480,
            interval_ms: 500,
        }
    }
}

/// Limits and housekeeping of uploaded media (see docs/media.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest image upload, in bytes.
    pub max_image_bytes: u64,
    /// Largest voice clip, in bytes.
    pub max_voice_bytes: u64,
    /// Longest voice clip, in seconds.
    pub max_voice_secs: u32,
    /// Hours after which an upload no message references is deleted.
    pub unreferenced_ttl_hours: u64,
    /// Seconds between collections of unreferenced and abandoned uploads (0: never).
    pub collect_interval_secs: u64,
    /// Uploads decoded and stored at once; the others wait, their bytes on disk.
    pub processing_slots: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_image_bytes: 10 * 1024 * 1024,
            max_voice_bytes: 2 * 1024 * 1024,
            max_voice_secs: 120,
            unreferenced_ttl_hours: 24,
            collect_interval_secs: 3_600,
            processing_slots: 2,
        }
    }
}

impl MediaConfig {
    /// The limits the media checks apply.
    pub fn limits(&self) -> lianxin_media::Limits {
        lianxin_media::Limits {
            max_image_bytes: self.max_image_bytes,
            max_voice_bytes: self.max_voice_bytes,
            max_voice_ms: self.max_voice_secs.saturating_mul(1000),
        }
    }

    /// The largest upload of either kind, in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_image_bytes.max(self.max_voice_bytes)
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: String,
    /// A `tracing` filter such as `info` or `lianxin=debug,info` (`RUST_LOG` overrides it).
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            listen_backlog: 4096,
            seed_demo: true,
            node_id: 0,
            cache_capacity_mb: 256,
            write_behind_ms: 1000,
            limits: Limits::default(),
            supervision: SupervisionConfig::default(),
            supervision_tick_ms: 250,
            petition_idle_secs: 30,
            board: BoardConfig::default(),
            appraisal: AppraisalConfig::default(),
            webhook: WebhookConfig::default(),
            media: MediaConfig::default(),
            log: LogConfig::default(),
            allowed_origins: Vec::new(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_text_chars: 4000,
            max_title_chars: 100,
            outbound_queue: 256,
            session_ttl_hours: 24 * 30,
            auth_timeout_secs: 30,
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
            send_timeout_secs: 10,
            call_timeout_secs: 10,
            handshake_timeout_secs: 10,
            requests_per_sec: 50,
            request_burst: 100,
            flood_close_after: 200,
            max_connections_per_account: 16,
            sign_in_failures_per_account: 10,
            sign_ins_per_account: 30,
            sign_in_failures_per_address: 30,
            sign_in_window_secs: 900,
            max_petitions_per_day: 20,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "pretty".into(),
            filter: "info".into(),
        }
    }
}

impl Limits {
    /// The session token lifetime.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_hours.saturating_mul(3600))
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Loads defaults, then `file` (if given, or `lianxin.toml` if present), then `LIANXIN_*`
    /// variables (`LIANXIN_LIMITS__MAX_FRAME_BYTES` for nested keys), then `overrides`.
    pub fn load(file: Option<&std::path::Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("lianxin.toml")),
        }
        figment
            .merge(Env::prefixed("LIANXIN_").split("__"))
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_then_flags_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "my.toml",
                "listen = \"127.0.0.1:9000\"\n[limits]\nmax_frame_bytes = 1000\n",
            )?;
            jail.set_env("LIANXIN_LIMITS__MAX_TEXT_CHARS", "77");
            jail.set_env("LIANXIN_DATA_DIR", "/tmp/x");
            let flags = Figment::new().merge(Serialized::default("data_dir", "/tmp/y"));
            let c = Config::load(Some(std::path::Path::new("my.toml")), flags).unwrap();
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.limits.max_frame_bytes, 1000);
            assert_eq!(c.limits.max_text_chars, 77);
            assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
            assert_eq!(c.limits.outbound_queue, Limits::default().outbound_queue);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            assert!(Config::load(Some(std::path::Path::new("bad.toml")), Figment::new()).is_err());
            Ok(())
        });
    }
}
