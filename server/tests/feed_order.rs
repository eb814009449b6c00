//! Live events reach a session in cursor order whatever order the hub hands them over in: two
//! petitions' events stored in one group are published by two actors, either first. An event
//! that arrives ahead of a missing one waits for it; one that never arrives live is read from
//! storage.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use lianxin_client::Wire;
use lianxin_client::v1::{ReadMark, ReadReceipt, event};
use lianxin_storage::{Commit, CommitResult, FeedItem};

/// Stores `n` read receipts in the worker's feed (without pushing them live) and returns them.
fn store_events(server: &TestServer, worker: u64, petition_id: u64, n: usize) -> Vec<FeedItem> {
    let store = server.county.store();
    let petition = store.petition(petition_id).unwrap().unwrap();
    let receipt = event::Kind::ReadReceipt(ReadReceipt {
        mark: Some(ReadMark {
            petition_id,
            reader_id: worker,
            ..Default::default()
        }),
    });
    let commit = Commit {
        petition,
        feed: vec![(worker, receipt); n],
        at_ms: START_MS,
        ..Default::default()
    };
    match store.commit(&commit).unwrap() {
        CommitResult::Done(items) => items,
        CommitResult::Duplicate(_) => panic!("not a resend"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_handed_over_out_of_order_arrive_in_cursor_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(complaint(worker_id, "楼道灯坏了"))
        .await
        .unwrap();
    let mut worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let head = worker.subscribe(0).await.unwrap().head_cursor;
    let seen = drain_events(&mut worker, Duration::from_millis(300)).await;
    assert_eq!(seen.last().map(|e| e.cursor), Some(head));

    // Four events; the hub hands over the last three first, then the first.
    let items = store_events(&server, worker_id, p.id, 4);
    let hub = server.county.hub();
    hub.deliver(&[items[3].clone(), items[1].clone(), items[2].clone()]);
    hub.deliver(&[items[0].clone()]);
    let got = drain_events(&mut worker, Duration::from_millis(300)).await;
    let cursors: Vec<u64> = got.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, (head + 1..=head + 4).collect::<Vec<_>>());

    // Two more, of which only the second is handed over live: the first is read from storage
    // once it has been waited for, and both arrive in order, once.
    let items = store_events(&server, worker_id, p.id, 2);
    hub.deliver(&[items[1].clone()]);
    let got = drain_events(&mut worker, Duration::from_millis(500)).await;
    let cursors: Vec<u64> = got.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, [head + 5, head + 6]);
    assert!(
        got.iter()
            .all(|e| matches!(e.kind, Some(event::Kind::ReadReceipt(_)))),
        "{got:?}"
    );

    // Handed over again after they were sent: nothing is sent twice.
    hub.deliver(&items);
    assert!(
        drain_events(&mut worker, Duration::from_millis(200))
            .await
            .is_empty()
    );

    // More events waiting than a session keeps (64) behind one that is missing: the gap is
    // read from storage at once, and everything arrives in order, once.
    let items = store_events(&server, worker_id, p.id, 80);
    hub.deliver(&items[1..]);
    let got = drain_events(&mut worker, Duration::from_millis(300)).await;
    let cursors: Vec<u64> = got.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, (head + 7..=head + 86).collect::<Vec<_>>());
    server.stop().await;
}
