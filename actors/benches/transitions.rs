//! Petition state machine benchmarks, through the pure domain functions the petition actor calls.
//!
//! - `domain/lifecycle/<policy>`: a whole petition life on an in-memory [`Petition`]: submit
//!   ([`Policy::start`] sets its deadlines), respond (the assignee's first message), transfer to
//!   another grid, respond (the new assignee), resolve, close. Every command goes through
//!   [`decide`], then [`Policy::next_step_at`] as the actor's `refresh_next_step` does. One
//!   iteration is the six steps. `wall_clock` is the default policy; `office_hours` the typical
//!   office calendar, where deadline time runs only while the office is open.
//! - `domain/decide/<command>`: one [`decide`] call per iteration for the commands a busy
//!   petition sees most: a plain message (no transition) and each transition.
//! - `domain/access/<who>`: [`can_view`], checked before every petition request, for the resident,
//!   a worker of the grid who is not the assignee, and a stranger (the longest path).
//!
//! ```sh
//! cargo bench -p lianxin-actors --bench transitions
//! ```

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lianxin_actors::domain::access::{Caller, can_view};
use lianxin_actors::domain::calendar::OfficeCalendar;
use lianxin_actors::domain::petition::{Command, Outcome, TransferTarget, decide};
use lianxin_actors::domain::supervision::{Policy, PolicyConfig};
use lianxin_protocol::v1::{Category, Channel, Petition, PetitionState, Role};

/// Monday 2026-01-05 09:00 in UTC+8: inside office hours.
const T0: i64 = 1_767_574_800_000;
const MINUTE: i64 = 60_000;

const COMMUNITY: u64 = 1;
const GRID: u64 = 11;
const OTHER_GRID: u64 = 12;

fn caller(account_id: u64, role: Role, grid_id: u64) -> Caller {
    Caller {
        account_id,
        role,
        community_id: COMMUNITY,
        grid_id,
    }
}

fn resident() -> Caller {
    caller(1, Role::Resident, GRID)
}

fn worker() -> Caller {
    caller(2, Role::Worker, GRID)
}

fn colleague() -> Caller {
    caller(3, Role::Worker, GRID)
}

fn other_worker() -> Caller {
    caller(4, Role::Worker, OTHER_GRID)
}

fn stranger() -> Caller {
    caller(99, Role::Worker, 77)
}

/// A petition just raised by [`resident`] and addressed to [`worker`], with its deadlines set.
fn submitted(policy: &Policy, now: i64) -> Petition {
    let mut p = Petition {
        id: 281_474_976_710_700,
        resident_id: resident().account_id,
        resident_name: "张晓梅".into(),
        community_id: COMMUNITY,
        grid_id: GRID,
        assignee_id: worker().account_id,
        category: Category::SituationReport as i32,
        title: "路灯不亮".into(),
        channel: Channel::Online as i32,
        created_at_ms: now,
        updated_at_ms: now,
        last_seq: 2,
        grid_head_id: 5,
        ..Default::default()
    };
    p.set_state(PetitionState::Submitted);
    policy.start(&mut p);
    p
}

fn transfer() -> Command {
    Command::Transfer {
        to: TransferTarget {
            worker_id: other_worker().account_id,
            grid_id: OTHER_GRID,
            community_id: COMMUNITY,
        },
        reason: "地址属于相邻网格".into(),
    }
}

fn resolve() -> Command {
    Command::Resolve {
        summary: "路灯已更换，恢复照明".into(),
    }
}

/// Runs `cmd` as the petition actor does: decide, then move the supervision index on.
fn step(policy: &Policy, p: &Petition, who: &Caller, cmd: &Command, now: i64) -> Petition {
    let Outcome {
        petition: mut next,
        transition,
    } = decide(p, who, cmd, now).expect("allowed");
    if transition.is_some() {
        next.last_seq += 1;
    }
    next.next_step_at_ms = policy.next_step_at(&next);
    next
}

/// Submit, respond, transfer, respond, resolve, close.
fn lifecycle(policy: &Policy) -> Petition {
    let p = submitted(policy, T0);
    let p = step(policy, &p, &worker(), &Command::Message, T0 + 10 * MINUTE);
    let p = step(policy, &p, &worker(), &transfer(), T0 + 20 * MINUTE);
    let p = step(
        policy,
        &p,
        &other_worker(),
        &Command::Message,
        T0 + 30 * MINUTE,
    );
    let p = step(policy, &p, &other_worker(), &resolve(), T0 + 90 * MINUTE);
    step(policy, &p, &resident(), &Command::Close, T0 + 120 * MINUTE)
}

fn lifecycle_benches(c: &mut Criterion) {
    let wall_clock = Policy::new(PolicyConfig::default()).expect("default policy");
    let office_hours = Policy::new(PolicyConfig {
        office_hours: Some(OfficeCalendar::typical()),
        ..PolicyConfig::default()
    })
    .expect("typical calendar");
    let mut group = c.benchmark_group("domain/lifecycle");
    group.throughput(Throughput::Elements(6));
    for (name, policy) in [("wall_clock", &wall_clock), ("office_hours", &office_hours)] {
        let end = lifecycle(policy);
        assert_eq!(end.state(), PetitionState::Closed);
        assert_eq!(end.next_step_at_ms, 0);
        group.bench_function(name, |b| b.iter(|| lifecycle(black_box(policy))));
    }
    group.finish();
}

fn decide_benches(c: &mut Criterion) {
    let policy = Policy::new(PolicyConfig::default()).expect("default policy");
    let now = T0 + 30 * MINUTE;
    let submitted = submitted(&policy, T0);
    let responded = step(&policy, &submitted, &worker(), &Command::Message, now);
    let resolved = step(&policy, &responded, &worker(), &resolve(), now);
    let cases = [
        ("message", &responded, resident(), Command::Message),
        ("respond", &submitted, worker(), Command::Message),
        ("transfer", &responded, worker(), transfer()),
        ("resolve", &responded, worker(), resolve()),
        ("close", &resolved, resident(), Command::Close),
    ];
    let mut group = c.benchmark_group("domain/decide");
    group.throughput(Throughput::Elements(1));
    for (name, p, who, cmd) in &cases {
        decide(p, who, cmd, now).expect("allowed");
        group.bench_function(*name, |b| {
            b.iter(|| decide(black_box(p), black_box(who), black_box(cmd), now))
        });
    }
    group.finish();
}

fn access_benches(c: &mut Criterion) {
    let policy = Policy::new(PolicyConfig::default()).expect("default policy");
    let p = submitted(&policy, T0);
    let mut group = c.benchmark_group("domain/access");
    group.throughput(Throughput::Elements(1));
    for (name, who, visible) in [
        ("resident", resident(), true),
        ("grid_colleague", colleague(), true),
        ("stranger", stranger(), false),
    ] {
        assert_eq!(can_view(&p, &who), visible);
        group.bench_function(name, |b| {
            b.iter(|| can_view(black_box(&p), black_box(&who)))
        });
    }
    group.finish();
}

criterion_group!(
    transition_benches,
    lifecycle_benches,
    decide_benches,
    access_benches
);
criterion_main!(transition_benches);
