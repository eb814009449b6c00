//! Collection of uploads: media no message referenced within `media.unreferenced_ttl_hours` is
//! deleted (metadata, owners, files), and so are partial uploads begun before then. Times come
//! from the county clock, so a test with the manual clock drives it through [`collect_now`].

use std::time::Duration;

use lianxin_actors::county::County;
use lianxin_storage::media::parse_sha;
use tokio::task::JoinHandle;

use crate::config::MediaConfig;
use crate::upload::{self, UploadError};

/// What one collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Stored items deleted.
    pub media: usize,
    /// Partial uploads deleted.
    pub partials: usize,
}

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] lianxin_storage::StoreError),
    /// The partial-upload folder could not be read.
    #[error(transparent)]
    Partial(#[from] UploadError),
}

/// Deletes, now (by the county clock), what has gone unreferenced or unfinished for longer than
/// the TTL. Blocking: file and tree I/O.
pub fn collect_now(county: &County, config: &MediaConfig) -> Result<Collected, CollectError> {
    let ttl_ms =
        i64::try_from(config.unreferenced_ttl_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    let before = county.clock().now_ms().saturating_sub(ttl_ms);
    let store = county.store();
    let mut collected = Collected::default();
    let candidates: Vec<_> = store
        .media_unreferenced_before(before)?
        .iter()
        .filter_map(|info| info.media.as_ref().and_then(|m| parse_sha(&m.id)))
        .collect();
    collected.media = store.media_collect(&candidates)?;
    collected.partials = upload::collect_partials(&upload::partial_dir(store.media_dir()), before)?;
    Ok(collected)
}

/// Starts the periodic collection (every `media.collect_interval_secs`; 0 turns it off).
pub fn spawn(county: &County, config: MediaConfig) -> Option<JoinHandle<()>> {
    if config.collect_interval_secs == 0 {
        return None;
    }
    let county = county.clone();
    let period = Duration::from_secs(config.collect_interval_secs);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (c, cfg) = (county.clone(), config.clone());
            match tokio::task::spawn_blocking(move || collect_now(&c, &cfg)).await {
                Ok(Ok(done)) if done != Collected::default() => {
                    tracing::info!(
                        media = done.media,
                        partials = done.partials,
                        "uploads collected"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "collecting uploads failed"),
                Err(e) => tracing::warn!(error = %e, "the upload collection task failed"),
            }
        }
    }))
}
