//! Storage benchmarks: the message append with its real flush policy, and the two hot reads.
//!
//! - `storage/append/commit_durable/N`: N committers (tokio tasks, one per petition, as the
//!   petition actors are) each append messages one after the other with
//!   [`Store::commit_durable`]: the same [`Commit`] a message makes in `actors/src/petition.rs`
//!   (petition record update, one text entry, an `EntryAdded` feed event for each of the 3
//!   participants, the idempotency key), applied by the single writer with whatever else is queued
//!   and answered after the group's flush. One iteration is one message per committer, so the
//!   throughput is messages per second and the time per iteration is the time for N messages.
//! - `storage/append_tmpfs/commit_durable/N`: the same on a store in `/dev/shm` (sled's temporary
//!   mode), where a flush costs no disk wait: what the write path costs in CPU and hand-offs.
//! - `storage/read/feed_after_1000`: one account's 1,000 stored events, as a reconnecting client
//!   catches up from cursor 0.
//! - `storage/read/history_page_50`: the first page of a petition's timeline (the default
//!   `GetHistory` page) out of 1,000 entries.
//!
//! The database of `append` and `read` lives in a temporary folder on the same disk as `/tmp`, so
//! flushes really reach the disk.
//!
//! ```sh
//! cargo bench -p lianxin-storage --bench storage
//! ```

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lianxin_protocol::v1::{
    Entry, EntryAdded, Petition, PetitionState, Role, TextBody, entry, event,
};
use lianxin_storage::petitions::{IdScope, IdempotencyKey};
use lianxin_storage::{Commit, CommitResult, Store, StoreConfig};

/// Start of the simulated clock (2026-01-01).
const T0: i64 = 1_767_225_600_000;
/// Events in the feed scanned, and entries in the petition whose history is read.
const STORED: u64 = 1_000;
/// The default `GetHistory` page size.
const HISTORY_PAGE: usize = 50;

/// A message text of exactly 200 bytes of UTF-8 (storage only sees its bytes).
fn text_200() -> String {
    let text = "路灯".repeat(33) + "ok";
    assert_eq!(text.len(), 200);
    text
}

/// One petition's conversation, appended to as its petition actor would.
struct Conversation {
    store: Store,
    petition: Petition,
    text: String,
    sent: u64,
}

impl Conversation {
    /// A new Responded petition between a new resident, worker and grid head, stored (without
    /// feed events, so that every later event of its participants is a message's).
    fn start(store: &Store) -> Conversation {
        let id = || store.next_id().expect("id");
        let mut petition = Petition {
            id: id(),
            resident_id: id(),
            resident_name: "张晓梅".into(),
            community_id: 1,
            grid_id: 11,
            assignee_id: id(),
            title: "路灯不亮".into(),
            channel: 1,
            created_at_ms: T0,
            first_response_at_ms: T0 + 60_000,
            updated_at_ms: T0 + 60_000,
            grid_head_id: id(),
            response_due_at_ms: T0 + 43_200_000,
            completion_due_at_ms: T0 + 604_800_000,
            response_steps_done: 0,
            next_step_at_ms: T0 + 518_400_000,
            ..Default::default()
        };
        petition.set_state(PetitionState::Responded);
        let created = Commit {
            add_participants: vec![petition.resident_id, petition.assignee_id],
            petition: petition.clone(),
            at_ms: T0,
            ..Default::default()
        };
        store.commit(&created).expect("create petition");
        Conversation {
            store: store.clone(),
            petition,
            text: text_200(),
            sent: 0,
        }
    }

    /// The commit of the next message, alternately from the resident and the worker, built as
    /// `message` in `actors/src/petition.rs` builds it.
    fn next_message(&mut self) -> Commit {
        self.sent += 1;
        let now = T0 + 120_000 + self.sent as i64;
        let mut p = self.petition.clone();
        let (author_id, author_name, author_role) = if self.sent % 2 == 1 {
            (p.resident_id, "张晓梅", Role::Resident)
        } else {
            (p.assignee_id, "李网格", Role::Worker)
        };
        p.updated_at_ms = now;
        let seq = p.last_seq + 1;
        p.last_seq = seq;
        let client_msg_id = format!("c-{}-{}", author_id, self.sent);
        let entry = Entry {
            petition_id: p.id,
            seq,
            author_id,
            author_name: author_name.into(),
            author_role: author_role as i32,
            at_ms: now,
            client_msg_id: client_msg_id.clone(),
            media: Vec::new(),
            body: Some(entry::Body::Text(TextBody {
                text: self.text.clone(),
            })),
        };
        let feed = [p.resident_id, p.assignee_id, p.grid_head_id]
            .into_iter()
            .map(|r| {
                let added = EntryAdded {
                    entry: Some(entry.clone()),
                    state: p.state,
                    assignee_id: p.assignee_id,
                };
                (r, event::Kind::EntryAdded(added))
            })
            .collect();
        self.petition = p.clone();
        Commit {
            add_participants: vec![author_id],
            idempotency: Some(IdempotencyKey {
                account_id: author_id,
                client_msg_id,
                scope: IdScope::Entry,
                ack: Vec::new(),
            }),
            petition: p,
            entries: vec![entry],
            feed,
            at_ms: now,
            read_mark: None,
            webhook: None,
        }
    }

    /// Commits the next message, blocking the thread until it is on disk.
    fn commit(&mut self) {
        let commit = self.next_message();
        let result = self.store.commit(&commit).expect("commit");
        assert!(matches!(result, CommitResult::Done(ref items) if items.len() == 3));
    }

    /// Commits the next message and waits until it is on disk, as the petition actor does before
    /// acknowledging it.
    async fn append(&mut self) {
        let commit = self.next_message();
        let result = self.store.commit_durable(commit).await.expect("commit");
        assert!(matches!(result, CommitResult::Done(ref items) if items.len() == 3));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&StoreConfig::new(dir.path())).expect("open store");
    (dir, store)
}

/// `committers` conversations, each appending `iters` messages in its own task; the wall time.
async fn appends(store: Store, committers: usize, iters: u64) -> Duration {
    let conversations: Vec<Conversation> = (0..committers)
        .map(|_| Conversation::start(&store))
        .collect();
    store.durable().await.expect("durable");
    let start = Instant::now();
    let tasks: Vec<_> = conversations
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for _ in 0..iters {
                    c.append().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("committer task");
    }
    start.elapsed()
}

fn append_benches(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, store) = open_store();
    let tmpfs = Store::temporary().expect("temporary store");
    for (name, store) in [("storage/append", &store), ("storage/append_tmpfs", &tmpfs)] {
        let mut group = c.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        for committers in [1usize, 16, 64] {
            group.throughput(Throughput::Elements(committers as u64));
            group.bench_function(BenchmarkId::new("commit_durable", committers), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| appends(store.clone(), committers, iters))
            });
        }
        group.finish();
    }
}

fn read_benches(c: &mut Criterion) {
    let (_dir, store) = open_store();
    let mut conversation = Conversation::start(&store);
    for _ in 0..STORED {
        conversation.commit();
    }
    store.flush_blocking().expect("flush");
    let account = conversation.petition.resident_id;
    let petition_id = conversation.petition.id;
    assert_eq!(store.feed_head(account).expect("head"), STORED);

    let mut group = c.benchmark_group("storage/read");
    group.throughput(Throughput::Elements(STORED));
    group.bench_function("feed_after_1000", |b| {
        b.iter(|| {
            let events = store
                .feed_after(black_box(account), 0, STORED as usize)
                .expect("feed");
            assert_eq!(events.len(), STORED as usize);
            events
        })
    });
    group.throughput(Throughput::Elements(HISTORY_PAGE as u64));
    group.bench_function("history_page_50", |b| {
        b.iter(|| {
            let page = store
                .entries(black_box(petition_id), 0, HISTORY_PAGE)
                .expect("history");
            assert_eq!(page.len(), HISTORY_PAGE);
            page
        })
    });
    group.finish();
}

criterion_group!(storage_benches, append_benches, read_benches);
criterion_main!(storage_benches);
