//! A panicking petition actor, through the real server: the test-only hook
//! `County::crash_petition` (feature `fault-injection` of `lianxin-actors`, on only for tests)
//! makes one petition's actor panic, several times, while residents stream messages into it and
//! into two other petitions and the worker follows their feed live. The crashed petition restarts
//! from storage: every message is stored exactly once, in order, with no hole; the other
//! petitions never see an error; the worker's live feed has no gap, no repeat, and one event per
//! stored entry; nobody's connection drops.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use lianxin_client::{Client, ClientError, Wire};

const MESSAGES: usize = 150;

/// Sends `MESSAGES` messages with client ids `<tag>-<i>`; a failed send is resent with the same
/// id. Returns the acknowledged sequence numbers by client id and the errors seen.
async fn stream(
    client: Client,
    petition: u64,
    tag: &'static str,
    acked: Arc<AtomicUsize>,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut seqs = BTreeMap::new();
    let mut errors = Vec::new();
    for i in 0..MESSAGES {
        let cmid = format!("{tag}-{i}");
        let mut tries = 0;
        loop {
            tries += 1;
            match client
                .send_message(petition, format!("{tag} 第{i}条"), cmid.clone())
                .await
            {
                Ok(ack) => {
                    seqs.insert(cmid.clone(), ack.seq);
                    acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(e @ ClientError::Server { .. }) if tries < 5 => errors.push(e.to_string()),
                Err(e) => panic!("{tag}: {cmid} failed for good: {e}"),
            }
        }
    }
    (seqs, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_petition_restarts_from_storage_and_nobody_loses_anything() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let mut worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    worker.subscribe(0).await.unwrap();
    let a = server.sign_in("resident-01-1a", Wire::Binary).await;
    let a2 = server.sign_in("resident-01-1a", Wire::Binary).await;
    let b = server.sign_in("resident-01-1b", Wire::Binary).await;
    let crashing = a
        .submit_petition(complaint(worker_id, "会崩溃的"))
        .await
        .unwrap();
    let sibling = a2
        .submit_petition(complaint(worker_id, "同一居民的另一件"))
        .await
        .unwrap();
    let other = b
        .submit_petition(complaint(worker_id, "别的居民的"))
        .await
        .unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let ta = tokio::spawn(stream(a, crashing.id, "crash", acked.clone()));
    let tb = tokio::spawn(stream(
        a2,
        sibling.id,
        "sibling",
        Arc::new(AtomicUsize::new(0)),
    ));
    let tc = tokio::spawn(stream(b, other.id, "other", Arc::new(AtomicUsize::new(0))));
    // Panic the actor three times while its messages stream in.
    for at in [20, 60, 100] {
        while acked.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.county.crash_petition(crashing.id).unwrap();
    }
    let (crash_seqs, _crash_errors) = ta.await.unwrap();
    let (sibling_seqs, sibling_errors) = tb.await.unwrap();
    let (other_seqs, other_errors) = tc.await.unwrap();
    assert!(sibling_errors.is_empty(), "{sibling_errors:?}");
    assert!(other_errors.is_empty(), "{other_errors:?}");

    // Every petition's timeline: submit, then each message exactly once, no hole.
    let reader = server.sign_in("worker-01-1a", Wire::Binary).await;
    let mut stored_entries = 0;
    for (p, seqs) in [
        (crashing.id, &crash_seqs),
        (sibling.id, &sibling_seqs),
        (other.id, &other_seqs),
    ] {
        assert_eq!(seqs.len(), MESSAGES);
        let history = reader.get_history(p, 0, 1000).await.unwrap();
        let stored: Vec<u64> = history.entries.iter().map(|e| e.seq).collect();
        assert_eq!(
            stored,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "no holes"
        );
        let mut ids = HashSet::new();
        for e in history
            .entries
            .iter()
            .filter(|e| seqs.contains_key(&e.client_msg_id))
        {
            assert!(
                ids.insert(e.client_msg_id.clone()),
                "{} twice",
                e.client_msg_id
            );
            assert_eq!(
                seqs.get(&e.client_msg_id),
                Some(&e.seq),
                "acknowledged as stored"
            );
        }
        assert_eq!(ids.len(), MESSAGES, "every acknowledged message is stored");
        // The submission is two entries (the transition and the text), announced as one notice.
        stored_entries += stored.len() - 2;
    }

    // The worker's live feed: contiguous cursors, one event per stored entry of each petition.
    let mut last = 0;
    let mut seen = HashSet::new();
    let want = stored_entries;
    while seen.len() < want {
        let e = tokio::time::timeout(Duration::from_secs(10), worker.next_event())
            .await
            .expect("the worker's events keep coming")
            .expect("the worker stays connected");
        assert_eq!(e.cursor, last + 1, "no gap, no repeat");
        last = e.cursor;
        if let Some(added) = entry_added(&e) {
            let entry = added.entry.as_ref().unwrap();
            if entry.seq > 2 {
                assert!(
                    seen.insert((entry.petition_id, entry.seq)),
                    "event repeated"
                );
            }
        }
    }
    assert_eq!(seen.len(), want);

    // The crashed petition still answers, numbering where storage left off.
    let a = server.sign_in("resident-01-1a", Wire::Binary).await;
    let ack = a.send_message(crashing.id, "之后", "after").await.unwrap();
    let last = reader
        .get_petition(crashing.id)
        .await
        .unwrap()
        .petition
        .unwrap()
        .last_seq;
    assert_eq!(ack.seq, last);
    server.stop().await;
}
