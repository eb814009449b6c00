//! The bad-review webhook: every dissatisfied rating (差评) is POSTed as JSON to a configured URL,
//! so that a community can act on it. Deliveries are kept in storage until the receiver answers
//! 2xx, retried with doubling waits up to a bounded number of attempts, and survive restarts. A
//! slow or dead receiver only delays its own deliveries: each runs in its own task with a timeout.

use std::sync::Arc;
use std::time::Duration;

use lianxin_actors::county::{BadReview, County};
use lianxin_storage::Store;
use lianxin_storage::audit::PendingDelivery;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where bad reviews are POSTed (empty: no webhook).
    pub bad_review_url: String,
    /// Milliseconds one attempt may take.
    pub timeout_ms: u64,
    /// Attempts per delivery before it is given up (and logged).
    pub max_attempts: u32,
    /// Milliseconds before the first retry; each later wait doubles.
    pub first_retry_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    pub max_retry_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            bad_review_url: String::new(),
            timeout_ms: 5_000,
            max_attempts: 10,
            first_retry_ms: 1_000,
            max_retry_ms: 300_000,
        }
    }
}

/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;

/// The JSON body of a bad review (see docs/appraisal.md, "Bad-review webhook").
pub fn payload(review: &BadReview) -> serde_json::Value {
    let p = &review.petition;
    let r = &review.rating;
    serde_json::json!({
        "event": "bad_review",
        "deliveryId": review.delivery_id.to_string(),
        "petitionId": p.id.to_string(),
        "title": p.title,
        "communityId": p.community_id.to_string(),
        "gridId": p.grid_id.to_string(),
        "residentId": p.resident_id.to_string(),
        "round": r.round,
        "level": r.level().as_str_name(),
        "comment": r.comment,
        "handlerIds": r.handler_ids.iter().map(u64::to_string).collect::<Vec<_>>(),
        "recordedBy": r.recorded_by.to_string(),
        "ratedAtMs": r.at_ms.to_string(),
    })
}

/// Starts the webhook: delivers what a previous run left pending, then every new bad review.
/// Returns None when no URL is configured.
pub fn spawn(county: &County, config: WebhookConfig) -> Option<JoinHandle<()>> {
    if config.bad_review_url.trim().is_empty() {
        return None;
    }
    let mut reviews = county.bad_reviews();
    let store = county.store().clone();
    let config = Arc::new(config);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the webhook's HTTP client could not start");
            return None;
        }
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    Some(tokio::spawn(async move {
        // Deliveries belong to this task: aborting it (at shutdown) aborts them too; what is
        // unfinished stays in storage for the next start.
        let mut tasks = JoinSet::new();
        // A review rated while this task starts is both stored and on its way here: once is
        // enough.
        let mut from_storage = std::collections::HashSet::new();
        match store.webhook_pending() {
            Ok(pending) => {
                for delivery in pending {
                    from_storage.insert(delivery.id());
                    let (id, body) = match delivery {
                        PendingDelivery::Body { id, body } => (id, body),
                        PendingDelivery::Review {
                            id,
                            petition,
                            rating,
                        } => {
                            let review = BadReview {
                                delivery_id: id,
                                petition: *petition,
                                rating,
                            };
                            (id, payload(&review).to_string())
                        }
                    };
                    deliver_later(&mut tasks, &store, &client, &config, &slots, id, body);
                }
            }
            Err(e) => tracing::error!(error = %e, "reading pending webhook deliveries failed"),
        }
        loop {
            let review = tokio::select! {
                review = reviews.recv() => match review {
                    Some(r) => r,
                    None => break,
                },
                Some(_) = tasks.join_next() => continue,
            };
            // Already stored, with the rating.
            if from_storage.remove(&review.delivery_id) {
                continue;
            }
            let body = payload(&review).to_string();
            deliver_later(
                &mut tasks,
                &store,
                &client,
                &config,
                &slots,
                review.delivery_id,
                body,
            );
        }
        while tasks.join_next().await.is_some() {}
    }))
}

fn deliver_later(
    tasks: &mut JoinSet<()>,
    store: &Store,
    client: &reqwest::Client,
    config: &Arc<WebhookConfig>,
    slots: &Arc<Semaphore>,
    id: u64,
    body: String,
) {
    let (store, client, config, slots) =
        (store.clone(), client.clone(), config.clone(), slots.clone());
    tasks.spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        let delivered = deliver(&client, &config, id, &body).await;
        if delivered {
            metrics::counter!("lianxin_webhook_delivered_total").increment(1);
        } else {
            metrics::counter!("lianxin_webhook_given_up_total").increment(1);
            tracing::error!(
                delivery = id,
                "webhook delivery given up after every attempt"
            );
        }
        if let Err(e) = store.webhook_done(id).await {
            tracing::warn!(delivery = id, error = %e, "removing a finished webhook delivery failed");
        }
    });
}

/// Tries a delivery until the receiver answers 2xx or the attempts run out.
async fn deliver(client: &reqwest::Client, config: &WebhookConfig, id: u64, body: &str) -> bool {
    let mut wait = Duration::from_millis(config.first_retry_ms);
    let max_wait = Duration::from_millis(config.max_retry_ms.max(config.first_retry_ms));
    for attempt in 1..=config.max_attempts.max(1) {
        metrics::counter!("lianxin_webhook_attempts_total").increment(1);
        let sent = client
            .post(&config.bad_review_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", id.to_string())
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                tracing::warn!(delivery = id, attempt, status = %r.status(), "webhook refused")
            }
            Err(e) => tracing::warn!(delivery = id, attempt, error = %e, "webhook failed"),
        }
        if attempt < config.max_attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(max_wait);
        }
    }
    false
}
