//! Drives N text messages through the real message path, in process: [`County::petition`] → the
//! petition actor (through its grid actor only for the request that starts it) → the storage
//! writer (group commit and flush, on a store in a temporary folder) → the hub, which queues each event for a live session of every recipient (drained by
//! one task per session, as the server's sessions do). No sockets and no frames: what is left is
//! the domain's and storage's CPU per durable message.
//!
//! Meant for instruction counts, which the noise of a shared machine does not move:
//!
//! ```sh
//! cargo build --release -p lianxin-actors --example message_path
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
//!     $CARGO_TARGET_DIR/release/examples/message_path 1000
//! ```
//!
//! Run it for two message counts and divide the difference of the instruction totals by the
//! difference of the counts: that is the cost of one more message, without the set-up.
//! Arguments: messages (default 2000), concurrent senders (default 64), petitions (default 200).

#![allow(clippy::expect_used)] // a benchmark driver: any failure is the end of the run

use std::sync::Arc;
use std::time::Instant;

use lianxin_actors::clock::{SharedClock, SystemClock};
use lianxin_actors::county::{County, DomainSettings, caller_of};
use lianxin_actors::hub::Push;
use lianxin_actors::petition::{PetitionReply, PetitionRequest};
use lianxin_protocol::v1::{Category, Community, Grid, Role, SubmitPetition};
use lianxin_storage::{AccountRecord, Store, StoreConfig};

const GRIDS: u64 = 4;
const RESIDENTS_PER_GRID: u64 = 64;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn account(store: &Store, role: Role, community: u64, grid: u64, name: &str) -> AccountRecord {
    let a = AccountRecord {
        id: store.next_id().expect("id"),
        login: name.into(),
        display_name: name.into(),
        role: role as i32,
        community_id: community,
        grid_id: grid,
        on_duty: matches!(role, Role::Worker | Role::GridHead),
        ..Default::default()
    };
    store.create_account(&a).expect("account");
    a
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages = arg(1, 2000);
    let senders = arg(2, 64).max(1);
    let petitions = arg(3, 200).max(senders);
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = Store::open(&StoreConfig::new(dir.path())).expect("store");

    // The directory: one community, GRIDS grids, each with a head, a worker and residents.
    store
        .put_community(&Community {
            id: 1,
            name: "c".into(),
        })
        .expect("community");
    let mut residents = Vec::new();
    let mut staff = Vec::new();
    for g in 1..=GRIDS {
        let mut grid = Grid {
            id: 100 + g,
            community_id: 1,
            name: format!("g{g}"),
            ..Default::default()
        };
        store.put_grid(&grid).expect("grid");
        let head = account(&store, Role::GridHead, 1, grid.id, &format!("h{g}"));
        grid.head_id = head.id;
        store.put_grid(&grid).expect("grid");
        staff.push(head);
        staff.push(account(&store, Role::Worker, 1, grid.id, &format!("w{g}")));
        for r in 0..RESIDENTS_PER_GRID {
            residents.push(account(
                &store,
                Role::Resident,
                1,
                grid.id,
                &format!("r{g}-{r}"),
            ));
        }
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let settings = DomainSettings {
        supervision_tick: None,
        ..Default::default()
    };
    let county = County::start(store, clock, settings).await.expect("county");

    // A live session for every account, drained as the server's sessions drain theirs.
    let mut drains = Vec::new();
    for a in residents.iter().chain(&staff) {
        let mut reg = county.hub().register(a.id, 256);
        drains.push(tokio::spawn(async move {
            let mut events = 0u64;
            while let Some(push) = reg.rx.recv().await {
                events += u64::from(matches!(push, Push::Event(_)));
            }
            events
        }));
    }

    // Petitions, each raised by its own resident (round robin).
    let mut open = Vec::with_capacity(petitions);
    for i in 0..petitions {
        let resident = &residents[i % residents.len()];
        let p = county
            .submit(
                &caller_of(resident),
                SubmitPetition {
                    category: Category::SituationReport as i32,
                    title: "路灯".into(),
                    text: "楼下路灯坏了".into(),
                    ..Default::default()
                },
            )
            .await
            .expect("submit");
        open.push((p.id, caller_of(resident)));
    }

    // The measured part: `messages` messages from `senders` concurrent senders, each sending
    // one after the other to its own petitions.
    let text: String = "路".repeat(66) + "ab";
    let started = Instant::now();
    let open = Arc::new(open);
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (county, open, text) = (county.clone(), open.clone(), text.clone());
        let count = messages / senders + usize::from(s < messages % senders);
        tasks.push(tokio::spawn(async move {
            for m in 0..count {
                let (pid, who) = &open[(s + m * senders) % open.len()];
                let request = PetitionRequest::Message {
                    text: text.clone(),
                    client_msg_id: format!("s{s}-m{m}"),
                    media_ids: Vec::new(),
                };
                match county.petition(*pid, who, request).await {
                    Ok(PetitionReply::Ack(a)) if !a.duplicate => {}
                    other => panic!("message not acknowledged: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let elapsed = started.elapsed();
    county.shutdown().await.expect("shutdown");
    for d in drains {
        d.abort();
    }
    eprintln!(
        "{messages} messages from {senders} senders over {petitions} petitions in {:.3} s ({:.1} µs each, wall)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / messages.max(1) as f64,
    );
}
