//! The bad-review webhook against real HTTP receivers on loopback: one that fails at first (the
//! delivery is retried until it is accepted, with the same idempotency key), and one that never
//! answers (the server goes on serving everyone; the delivery waits in storage and goes out after
//! a restart to a receiver that answers).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use lianxin_client::v1::RatingLevel;
use lianxin_client::{Client, Wire};
use lianxin_server::config::Config;
use lianxin_storage::audit::PendingDelivery;
use parking_lot::Mutex;

/// What a receiver saw: (idempotency key, body) per request.
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP receiver that answers 500 to its first `failures` requests, then 200.
async fn receiver(failures: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((seen, failures)): State<(Seen, usize)>,
                 headers: HeaderMap,
                 body: String| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut seen = seen.lock();
                    seen.push((key, serde_json::from_str(&body).unwrap()));
                    if seen.len() <= failures {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state((seen.clone(), failures));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A receiver that accepts connections and never answers; returns its URL and connection count.
async fn silent_receiver() -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            *c.lock() += 1;
            held.push(socket);
        }
    });
    (url, count)
}

fn config_with(dir: &std::path::Path, url: &str, attempts: u32) -> Config {
    let mut config = test_config(dir);
    config.webhook.bad_review_url = url.to_owned();
    config.webhook.first_retry_ms = 20;
    config.webhook.max_retry_ms = 100;
    config.webhook.timeout_ms = 300;
    config.webhook.max_attempts = attempts;
    config
}

/// Raises, handles and rates a petition; returns its id.
async fn rated(server: &TestServer, resident: &Client, level: RatingLevel, comment: &str) -> u64 {
    let worker_id = server.account_id("worker-01-1a");
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(complaint(worker_id, "夜间施工噪音"))
        .await
        .unwrap();
    worker
        .send_message(p.id, "我去现场看看", format!("w-{}", p.id))
        .await
        .unwrap();
    worker.resolve(p.id, "已要求停工").await.unwrap();
    resident.rate(p.id, level, comment).await.unwrap();
    p.id
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_review_reaches_a_receiver_that_fails_at_first() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver(2).await;
    let server = TestServer::start_with(config_with(dir.path(), &url, 10)).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;

    // A satisfied rating is no bad review; the dissatisfied one is.
    rated(&server, &resident, RatingLevel::Satisfied, "").await;
    let id = rated(
        &server,
        &resident,
        RatingLevel::Dissatisfied,
        "半夜还在施工",
    )
    .await;
    wait_for("three attempts", || seen.lock().len() >= 3).await;
    wait_for("the outbox to empty", || {
        server.county.store().webhook_pending().unwrap().is_empty()
    })
    .await;
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 3, "two failures, then accepted; nothing more");
    assert!(
        seen.iter().all(|(key, _)| *key == seen[0].0),
        "one idempotency key"
    );
    let body = &seen[2].1;
    assert_eq!(body["event"], "bad_review");
    assert_eq!(body["petitionId"], id.to_string());
    assert_eq!(body["level"], "RATING_LEVEL_DISSATISFIED");
    assert_eq!(body["comment"], "半夜还在施工");
    assert_eq!(
        body["handlerIds"],
        serde_json::json!([server.account_id("worker-01-1a").to_string()])
    );
    assert_eq!(body["deliveryId"], seen[0].0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_harms_nobody_and_the_delivery_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (silent, connections) = silent_receiver().await;
    let server = TestServer::start_with(config_with(dir.path(), &silent, 1_000)).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let id = rated(&server, &resident, RatingLevel::Dissatisfied, "没人管").await;
    // Stored with the rating itself: there when the rating is acknowledged, before any attempt.
    let stored = server.county.store().webhook_pending().unwrap();
    assert_eq!(stored.len(), 1);
    assert!(matches!(&stored[0], PendingDelivery::Review { petition, .. } if petition.id == id));
    wait_for("the silent receiver to be tried twice", || {
        *connections.lock() >= 2
    })
    .await;
    // Meanwhile everyone is served as usual.
    for _ in 0..3 {
        rated(&server, &resident, RatingLevel::Satisfied, "").await;
    }
    let other = server.sign_in("resident-02-1a", Wire::Json).await;
    for _ in 0..20 {
        other.ping().await.unwrap();
    }
    let pending = server.county.store().webhook_pending().unwrap();
    assert_eq!(pending.len(), 1, "the delivery waits in storage");
    server.stop().await;

    // After a restart, a receiver that answers gets it, with the same delivery id.
    let (url, seen) = receiver(0).await;
    let server = TestServer::start_with(config_with(dir.path(), &url, 10)).await;
    wait_for("the delivery after the restart", || !seen.lock().is_empty()).await;
    let (key, body) = seen.lock()[0].clone();
    assert_eq!(body["petitionId"], id.to_string());
    assert_eq!(key, pending[0].id().to_string());
    wait_for("the outbox to empty", || {
        server.county.store().webhook_pending().unwrap().is_empty()
    })
    .await;
    server.stop().await;
}
