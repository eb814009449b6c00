//! Start-up and graceful shutdown. [`Server::start`] opens storage, seeds the demo county when
//! asked, starts the actors; [`Server::serve`] runs the HTTP/WebSocket listener until the shutdown
//! future resolves, then closes every session, stops the actors and flushes storage.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lianxin_actors::clock::SharedClock;
use lianxin_actors::county::{BoardSettings, County, DomainSettings};
use lianxin_storage::{Store, StoreConfig, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::collect;
use crate::config::Config;
use crate::http::{self, HttpState};
use crate::seed;
use crate::session::AppState;
use crate::transport::{self, Transport};
use crate::webhook;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Storage refused to open or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain could not start.
    #[error(transparent)]
    Domain(#[from] lianxin_actors::error::DomainError),
    /// Network I/O failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// Seeding the demo county failed.
    #[error("seeding the demo county: {0}")]
    Seed(String),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::transport::TlsError),
}

/// A started server, ready to serve a listener.
pub struct Server {
    /// The running domain.
    county: County,
    /// The configuration.
    config: Arc<Config>,
    /// Metrics renderer, when this process installed the recorder.
    metrics: Option<PrometheusHandle>,
    /// Demo sign-ins, when the demo county was seeded by this start.
    seeded: Option<seed::DemoSummary>,
    /// The bad-review webhook's task, when one is configured.
    webhook: Option<tokio::task::JoinHandle<()>>,
    /// The periodic collection of unreferenced and abandoned uploads, unless turned off.
    collector: Option<tokio::task::JoinHandle<()>>,
    /// TLS, when configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Opens storage, seeds the demo county if configured and empty, and starts the actors.
    pub async fn start(
        config: Config,
        clock: SharedClock,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Server, ServerError> {
        // A bad certificate is found before storage is opened.
        let tls = crate::transport::tls_acceptor(&config.tls)?;
        let store = Store::open(&store_config(&config))?;
        let seeded = if config.seed_demo {
            seed::seed_if_empty(&store, clock.now_ms())
                .map_err(|e| ServerError::Seed(e.to_string()))?
        } else {
            None
        };
        let settings = DomainSettings {
            max_text_chars: config.limits.max_text_chars,
            max_title_chars: config.limits.max_title_chars,
            call_timeout: Duration::from_secs(config.limits.call_timeout_secs.max(1)),
            supervision: config.supervision.clone(),
            supervision_tick: (config.supervision_tick_ms > 0)
                .then(|| Duration::from_millis(config.supervision_tick_ms)),
            petition_idle: (config.petition_idle_secs > 0)
                .then(|| Duration::from_secs(config.petition_idle_secs)),
            board: BoardSettings {
                utc_offset_minutes: config.board.utc_offset_minutes,
                interval: Duration::from_millis(config.board.interval_ms.max(10)),
            },
            appraisal: config.appraisal.clone(),
            max_petitions_per_day: config.limits.max_petitions_per_day,
        };
        let county = County::start(store, clock, settings).await?;
        let webhook = webhook::spawn(&county, config.webhook.clone());
        let collector = collect::spawn(&county, config.media.clone());
        Ok(Server {
            county,
            config: Arc::new(config),
            metrics,
            seeded,
            webhook,
            collector,
            tls,
        })
    }

    /// The running domain (for tests and tools).
    pub fn county(&self) -> &County {
        &self.county
    }

    /// What the demo seeding created, if this start seeded it.
    pub fn seeded(&self) -> Option<&seed::DemoSummary> {
        self.seeded.as_ref()
    }

    /// Serves `listener` until `shutdown` resolves, then drains sessions, stops the actors and
    /// flushes storage.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_rx_loop = stop_rx.clone();
        let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
        let state = HttpState {
            app: AppState {
                county: self.county.clone(),
                config: self.config.clone(),
                shutdown: stop_rx,
                alive,
                sign_ins: Arc::new(crate::limits::SignInLimiter::new(&self.config.limits)),
                media_slots: Arc::new(tokio::sync::Semaphore::new(
                    self.config.media.processing_slots.max(1),
                )),
            },
            metrics: self.metrics.clone(),
        };
        let router = http::router(state);
        let local = listener.local_addr()?;
        tracing::info!(address = %local, tls = self.tls.is_some(), "listening");
        let transport = Transport {
            tls: self.tls.clone(),
            handshake_timeout: Duration::from_secs(
                self.config.limits.handshake_timeout_secs.max(1),
            ),
        };
        let accept = tokio::spawn(transport::serve(
            listener,
            router,
            transport,
            stop_rx_loop,
            Duration::from_secs(10),
        ));
        shutdown.await;
        tracing::info!("shutting down: closing sessions");
        let _ = stop_tx.send(true);
        // Sessions close on the shutdown signal; give them a bounded time to say goodbye.
        let drained = async {
            if let Err(e) = accept.await {
                tracing::warn!(error = %e, "accept loop failed");
            }
            // Upgraded WebSocket sessions outlive their HTTP connections; each holds a sender.
            while all_gone.recv().await.is_some() {}
        };
        if tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .is_err()
        {
            tracing::warn!("sessions did not close within 10 s");
        }
        if let Some(webhook) = self.webhook {
            // Unfinished deliveries stay in storage and go out after the next start.
            webhook.abort();
            let _ = webhook.await;
        }
        if let Some(collector) = self.collector {
            collector.abort();
            let _ = collector.await;
        }
        self.county.shutdown().await?;
        // A clean stop records a checkpoint: a database found older than it is refused later.
        self.county.store().checkpoint().await?;
        tracing::info!("storage flushed; bye");
        Ok(())
    }
}

/// The storage settings of a server configuration.
fn store_config(config: &Config) -> StoreConfig {
    let mut store = StoreConfig::new(&config.data_dir);
    store.cache_capacity = config.cache_capacity_mb.saturating_mul(1024 * 1024);
    store.node_id = config.node_id;
    store.write_behind = Duration::from_millis(config.write_behind_ms.min(MAX_WRITE_BEHIND_MS));
    store
}

/// The longest write-behind window a configuration may ask for; longer ones are taken as this.
const MAX_WRITE_BEHIND_MS: u64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_settings_follow_the_configuration() {
        let mut config = Config {
            cache_capacity_mb: 3,
            node_id: 9,
            write_behind_ms: 250,
            ..Config::default()
        };
        let store = store_config(&config);
        assert_eq!(store.cache_capacity, 3 * 1024 * 1024);
        assert_eq!(store.node_id, 9);
        assert_eq!(store.write_behind, Duration::from_millis(250));
        assert_eq!(store.path, config.data_dir);
        config.write_behind_ms = 0;
        assert_eq!(store_config(&config).write_behind, Duration::ZERO);
        config.write_behind_ms = u64::MAX;
        assert_eq!(store_config(&config).write_behind, Duration::from_secs(60));
        assert_eq!(
            store_config(&Config::default()).write_behind,
            lianxin_storage::behind::WINDOW
        );
    }
}
