//! Durability across a crash: the server binary is killed with SIGKILL mid-stream (no graceful
//! path, no final flush), started again on the same folder, and every acknowledged message is
//! there exactly once; a client resuming from its cursor gets exactly the events it missed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use lianxin_client::Wire;
use lianxin_client::v1::{Category, SubmitPetition};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_and_feeds_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;

    // The worker follows its feed live.
    let mut worker = sign_in(&server.url, "worker-01-1a", Wire::Binary).await;
    worker.subscribe(0).await.unwrap();
    let resident = sign_in(&server.url, "resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(SubmitPetition {
            category: Category::SituationReport as i32,
            text: "消防通道被占".into(),
            worker_id: 0,
            client_msg_id: "crash-p".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The resident streams messages; the server is killed while they are in flight.
    let acked_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = acked_count.clone();
    let sender = tokio::spawn(async move {
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..2000 {
            let cmid = format!("m-{i}");
            match resident
                .send_message(p.id, format!("第{i}条"), cmid.clone())
                .await
            {
                Ok(ack) => {
                    acked.insert(cmid, ack.seq);
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(_) => break,
            }
        }
        acked
    });
    // The worker reads part of its feed live, then its connection drops.
    let mut seen_cursor = 0;
    while seen_cursor < 30 {
        let e = tokio::time::timeout(Duration::from_secs(10), worker.next_event())
            .await
            .expect("events flow")
            .expect("connected");
        assert_eq!(
            e.cursor,
            seen_cursor + 1,
            "live events arrive in order without gaps"
        );
        seen_cursor = e.cursor;
    }
    drop(worker);
    // Messages keep coming; the server is killed in the middle of them.
    while acked_count.load(std::sync::atomic::Ordering::SeqCst) < 150 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let acked = sender.await.unwrap();
    assert!(
        acked.len() >= 150 && acked.len() < 2000,
        "the kill came mid-stream"
    );

    // Start again on the same folder.
    let server = ChildServer::start(dir.path()).await;
    let reader = sign_in(&server.url, "resident-01-1a", Wire::Json).await;
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = reader.get_history(p.id, after, 200).await.unwrap();
        entries.extend(page.entries);
        if page.next_after_seq == 0 {
            break;
        }
        after = page.next_after_seq;
    }
    let mut by_cmid: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &entries {
        if !e.client_msg_id.is_empty() {
            by_cmid.entry(&e.client_msg_id).or_default().push(e.seq);
        }
    }
    for (cmid, seq) in &acked {
        assert_eq!(
            by_cmid.get(cmid.as_str()),
            Some(&vec![*seq]),
            "acknowledged message {cmid} is stored exactly once, under its acknowledged number"
        );
    }
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no holes in the timeline"
    );

    // A resend of an acknowledged message after the restart is recognised.
    let (cmid, seq) = acked.iter().next_back().unwrap();
    let again = reader
        .send_message(p.id, "重发", cmid.clone())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, *seq);

    // The worker resumes from the last cursor it saw: exactly the missed events, once, in order.
    let mut worker = sign_in(&server.url, "worker-01-1a", Wire::Json).await;
    let sub = worker.subscribe(seen_cursor).await.unwrap();
    assert!(sub.head_cursor > seen_cursor);
    let mut got = Vec::new();
    while got.last().copied().unwrap_or(seen_cursor) < sub.head_cursor {
        let e = tokio::time::timeout(Duration::from_secs(10), worker.next_event())
            .await
            .expect("backlog arrives")
            .expect("connected");
        got.push(e.cursor);
    }
    assert_eq!(
        got,
        ((seen_cursor + 1)..=sub.head_cursor).collect::<Vec<_>>()
    );
    // Nothing more is pending: a quiet feed.
    let extra = drain_events(&mut worker, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no event is delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_folder_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ChildServer::start(dir.path()).await;
    let second = ChildServer::spawn(dir.path(), free_port());
    let out = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another process"),
        "clear message, got: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_sessions_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(SubmitPetition {
            category: Category::Suggestion as i32,
            text: "建议增加健身器材".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), resident.next_event()).await;
    assert_eq!(resident.close_reason().map(|c| c.0), Some(1001));
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    assert_eq!(
        resident
            .get_petition(p.id)
            .await
            .unwrap()
            .petition
            .unwrap()
            .id,
        p.id
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_share_the_websocket_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let client = sign_in(&server.url, "resident-01-1a", Wire::Binary).await;
    client.ping().await.unwrap();
    assert!(
        http_get(server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(server.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let metrics = http_get(server.addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("lianxin_request_seconds"), "{metrics}");
    assert!(metrics.contains("lianxin_sessions"), "{metrics}");
    // Counted from storage at each scrape: no petition yet, so no pending step.
    assert!(metrics.contains("lianxin_pending_steps 0"), "{metrics}");
}
