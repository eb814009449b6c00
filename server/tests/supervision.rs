//! Reminders and escalation with a manual clock: no reminder at 11 h 59 min, one at 12 h; the
//! ladder in order; it stops once the worker responds; a restart in the middle neither loses nor
//! repeats a step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use lianxin_client::Wire;
use lianxin_client::v1::{
    Category, Entry, StepKind, SubmitPetition, SupervisionLevel, SupervisionNotice, entry,
};

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn supervision(e: &Entry) -> Option<&SupervisionNotice> {
    match &e.body {
        Some(entry::Body::Supervision(s)) => Some(s),
        _ => None,
    }
}

fn complaint() -> SubmitPetition {
    SubmitPetition {
        category: Category::Complaint as i32,
        text: "小区门口垃圾三天没人清运".into(),
        ..Default::default()
    }
}

/// Advances the manual clock to `at` after `start` and fires what is due; returns the steps fired.
async fn at(server: &TestServer, start: i64, at: Duration) -> usize {
    server.clock.set(start + at.as_millis() as i64);
    server.county.supervise_now().await.unwrap().steps
}

async fn steps_in_history(
    c: &lianxin_client::Client,
    id: u64,
) -> Vec<(StepKind, SupervisionLevel)> {
    let h = c.get_history(id, 0, 200).await.unwrap();
    h.entries
        .iter()
        .filter_map(supervision)
        .map(|s| (s.step(), s.level()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_day_brings_a_reminder_then_the_ladder_until_the_worker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let t0 = START_MS;
    let mut worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    worker.subscribe(0).await.unwrap();
    let mut head = server.sign_in("head-01-1", Wire::Binary).await;
    head.subscribe(0).await.unwrap();
    let mut sup = server.sign_in("sup-01", Wire::Json).await;
    sup.subscribe(0).await.unwrap();
    let mut resident = server.sign_in("resident-01-1a", Wire::Json).await;
    resident.subscribe(0).await.unwrap();
    let p = resident.submit_petition(complaint()).await.unwrap();
    assert_eq!(p.response_due_at_ms, t0 + 12 * 3_600_000);
    assert_eq!(p.assignee_id, server.account_id("worker-01-1a"));
    drain_events(&mut worker, Duration::from_millis(100)).await;

    assert_eq!(at(&server, t0, 10 * HOUR + 59 * MIN).await, 0);
    assert_eq!(
        at(&server, t0, 11 * HOUR).await,
        1,
        "warning an hour before"
    );
    let e = expect_event(&mut worker, "warning", |e| entry_added(e).is_some()).await;
    let notice = supervision(entry_added(&e).unwrap().entry.as_ref().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(notice.step(), StepKind::Warning);
    assert_eq!(
        at(&server, t0, 11 * HOUR + 59 * MIN).await,
        0,
        "no reminder at 11 h 59 min"
    );
    assert_eq!(at(&server, t0, 12 * HOUR).await, 1, "the reminder at 12 h");
    let e = expect_event(&mut worker, "reminder", |e| entry_added(e).is_some()).await;
    let notice = supervision(entry_added(&e).unwrap().entry.as_ref().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(
        (notice.step(), notice.level()),
        (StepKind::Reminder, SupervisionLevel::Worker)
    );
    assert_eq!(notice.due_at_ms, p.response_due_at_ms);
    // The resident sees that the system reminded the worker.
    expect_event(&mut resident, "reminder seen by the resident", |e| {
        entry_added(e)
            .and_then(|a| a.entry.as_ref())
            .and_then(supervision)
            .is_some()
    })
    .await;

    assert_eq!(at(&server, t0, 14 * HOUR).await, 1);
    let e = expect_event(&mut head, "escalation to the grid head", |e| {
        entry_added(e)
            .and_then(|a| a.entry.as_ref())
            .and_then(supervision)
            .is_some_and(|s| s.step() == StepKind::Escalation)
    })
    .await;
    let notice = supervision(entry_added(&e).unwrap().entry.as_ref().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(notice.level(), SupervisionLevel::GridHead);
    assert_eq!(at(&server, t0, 18 * HOUR).await, 1);
    let e = expect_event(&mut sup, "escalation to the community", |e| {
        entry_added(e)
            .and_then(|a| a.entry.as_ref())
            .and_then(supervision)
            .is_some()
    })
    .await;
    let notice = supervision(entry_added(&e).unwrap().entry.as_ref().unwrap())
        .cloned()
        .unwrap();
    assert_eq!(notice.level(), SupervisionLevel::Community);
    assert!(notice.notified_ids.contains(&server.account_id("sup-01")));
    let detail = sup.get_petition(p.id).await.unwrap();
    assert_eq!(
        detail.petition.as_ref().unwrap().escalation_level(),
        SupervisionLevel::Community
    );

    // The worker answers: the response ladder stops; the township is never bothered.
    worker.send_message(p.id, "马上安排清运", "").await.unwrap();
    assert_eq!(at(&server, t0, 40 * HOUR).await, 0);
    assert_eq!(
        steps_in_history(&resident, p.id).await,
        vec![
            (StepKind::Warning, SupervisionLevel::Worker),
            (StepKind::Reminder, SupervisionLevel::Worker),
            (StepKind::Escalation, SupervisionLevel::GridHead),
            (StepKind::Escalation, SupervisionLevel::Community),
        ]
    );
    // The completion ladder goes on: a warning a day before the five days of a complaint.
    assert_eq!(at(&server, t0, 4 * 24 * HOUR).await, 1);
    worker.send_message(p.id, "已清运完毕", "").await.unwrap();
    worker
        .resolve(p.id, "垃圾已清运，已联系物业每日清运")
        .await
        .unwrap();
    // Resolved: the ladders stop; only the unrated close (7 days after resolving) is left.
    assert_eq!(
        at(&server, t0, 30 * 24 * HOUR).await,
        1,
        "resolved: no more ladder, only the closing of the unrated petition after 7 days"
    );
    assert_eq!(
        at(&server, t0, 60 * 24 * HOUR).await,
        0,
        "closed: nothing more"
    );
    // (Read from storage: 30 days on, the resident's session token has expired.)
    let closed = server.county.store().petition(p.id).unwrap().unwrap();
    assert_eq!(closed.state(), lianxin_client::v1::PetitionState::Closed);
    assert!(closed.ratings.is_empty());
    assert_eq!(server.county.store().pending_step_count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_the_ladder_neither_loses_nor_repeats_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = START_MS;
    let server = TestServer::start_at(test_config(dir.path()), t0).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident.submit_petition(complaint()).await.unwrap();
    assert_eq!(at(&server, t0, 12 * HOUR).await, 2, "warning and reminder");
    server.stop().await;

    // Down from 12 h to 20 h: the grid head (14 h) and community (18 h) steps passed meanwhile.
    let server = TestServer::start_at(test_config(dir.path()), t0 + 20 * 3_600_000).await;
    let report = server.county.supervise_now().await.unwrap();
    assert_eq!((report.petitions, report.steps), (1, 2));
    assert_eq!(
        server.county.supervise_now().await.unwrap().steps,
        0,
        "no step twice"
    );
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    assert_eq!(
        steps_in_history(&resident, p.id).await,
        vec![
            (StepKind::Warning, SupervisionLevel::Worker),
            (StepKind::Reminder, SupervisionLevel::Worker),
            (StepKind::Escalation, SupervisionLevel::GridHead),
            (StepKind::Escalation, SupervisionLevel::Community),
        ]
    );
    server.stop().await;

    // Again, restarting exactly when the township step is due.
    let server = TestServer::start_at(test_config(dir.path()), t0 + 36 * 3_600_000).await;
    assert_eq!(server.county.supervise_now().await.unwrap().steps, 1);
    assert_eq!(server.county.supervise_now().await.unwrap().steps, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_petition_is_reassigned_to_another_on_duty_worker_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.supervision.default.response_ladder.reassign_after = Some(HOUR);
    let server = TestServer::start_with(config).await;
    let t0 = START_MS;
    let a = server.account_id("worker-01-1a");
    let b = server.account_id("worker-01-1b");
    let mut worker_b = server.sign_in("worker-01-1b", Wire::Binary).await;
    worker_b.subscribe(0).await.unwrap();
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(SubmitPetition {
            worker_id: a,
            ..complaint()
        })
        .await
        .unwrap();
    assert_eq!(p.assignee_id, a);
    assert_eq!(
        at(&server, t0, 13 * HOUR).await,
        3,
        "warning, reminder, reassignment"
    );
    let n = expect_event(&mut worker_b, "transferred in", |e| notice(e).is_some()).await;
    assert_eq!(notice(&n).unwrap().petition.as_ref().unwrap().id, p.id);
    let now = resident.get_petition(p.id).await.unwrap().petition.unwrap();
    assert_eq!(now.assignee_id, b);
    assert_eq!(
        now.response_due_at_ms, p.response_due_at_ms,
        "the resident's clock is not reset"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_started_only_to_fire_a_step_stops_right_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // A long idle time: only the supervision rule can stop the actor within the test.
    let server = TestServer::start_with_petition_idle(dir.path(), 3600).await;
    let t0 = START_MS;
    let resident = server.sign_in("resident-01-1a", Wire::Json).await;
    let p = resident.submit_petition(complaint()).await.unwrap();
    let q = resident.submit_petition(complaint()).await.unwrap();
    // q is in use: its actor stays after the step.
    resident.send_message(q.id, "还在吗", "").await.unwrap();
    assert_eq!(at(&server, t0, 11 * HOUR).await, 2, "two warnings");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut count = usize::MAX;
    while std::time::Instant::now() < deadline {
        count = server.county.petition_actor_count().await.unwrap();
        if count == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, 1, "only the actor of the petition in use is left");
    // The stopped one fires its next step from a fresh actor, in order, once.
    assert_eq!(at(&server, t0, 12 * HOUR).await, 2, "two reminders");
    assert_eq!(
        steps_in_history(&resident, p.id).await,
        vec![
            (StepKind::Warning, SupervisionLevel::Worker),
            (StepKind::Reminder, SupervisionLevel::Worker)
        ]
    );
    server.stop().await;
}
