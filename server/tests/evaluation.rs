//! Evaluation through real WebSocket clients: only the petitioner rates, once per round; staff
//! cannot (except recording a telephone rating for a petition they filed for a resident); a
//! dissatisfied rating is a bad review of the round's handlers; reopening starts a new round with
//! new deadlines and moves the "second trip" figure; an unrated petition is closed as unrated
//! after the rating period (7 days) and stays unrated; every step is in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use lianxin_client::v1::{
    Action, BoardRange, Channel, ErrorCode, PetitionState, RatingLevel, SubmitPetition, WatchBoard,
    entry,
};
use lianxin_client::{Client, Wire};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// The worker answers and resolves a petition.
async fn handle(worker: &Client, id: u64, n: &str) {
    worker
        .send_message(id, "收到，马上处理", format!("answer-{n}"))
        .await
        .unwrap();
    worker.resolve(id, "已处理完毕").await.unwrap();
}

fn month() -> WatchBoard {
    WatchBoard {
        range: BoardRange::Last30Days as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_bad_reviews_reopening_and_unrated_closing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let t0 = START_MS;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Json).await;
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let head = server.sign_in("head-01-1", Wire::Binary).await;
    let sup = server.sign_in("sup-01", Wire::Binary).await;

    // Round 1: handled, then rated dissatisfied by the resident.
    let p = resident
        .submit_petition(complaint(worker_id, "楼下餐馆油烟扰民"))
        .await
        .unwrap();
    assert_eq!(
        code_of(resident.rate(p.id, RatingLevel::Satisfied, "").await),
        ErrorCode::IllegalTransition,
        "nothing to rate before the result"
    );
    handle(&worker, p.id, "1").await;
    for staff in [&worker, &head, &sup] {
        assert_eq!(
            code_of(staff.rate(p.id, RatingLevel::Satisfied, "很好").await),
            ErrorCode::Forbidden,
            "staff may not rate"
        );
        assert_eq!(
            code_of(
                staff
                    .record_phone_rating(p.id, RatingLevel::Satisfied, "")
                    .await
            ),
            ErrorCode::Forbidden,
            "not filed for the resident: no telephone rating"
        );
    }
    let rated = resident
        .rate(p.id, RatingLevel::Dissatisfied, "油烟还是很大")
        .await
        .unwrap();
    assert_eq!(rated.state(), PetitionState::Closed);
    assert_eq!(rated.ratings.len(), 1);
    assert_eq!(rated.ratings[0].level(), RatingLevel::Dissatisfied);
    assert_eq!(
        rated.ratings[0].handler_ids,
        vec![worker_id],
        "the bad review's worker"
    );
    assert_eq!(
        code_of(resident.rate(p.id, RatingLevel::Satisfied, "").await),
        ErrorCode::IllegalTransition,
        "once per round"
    );

    // Round 2: reopened two days later, with its own deadlines; rated satisfied.
    server.clock.set(t0 + 2 * DAY);
    let reopened = resident.reopen(p.id, "问题没有解决").await.unwrap();
    assert_eq!(reopened.state(), PetitionState::Submitted);
    assert_eq!((reopened.round, reopened.reopen_count), (2, 1));
    assert_eq!(
        reopened.response_due_at_ms,
        t0 + 2 * DAY + 12 * HOUR,
        "a new half day"
    );
    assert_eq!(reopened.first_response_at_ms, 0);
    handle(&worker, p.id, "2").await;
    let second = resident
        .rate(p.id, RatingLevel::Satisfied, "这次好了")
        .await
        .unwrap();
    assert_eq!(second.ratings.len(), 2);
    assert_eq!(second.ratings[1].round, 2);

    // The reopening period (7 days after closing) passes: no more reopening.
    server.clock.set(t0 + 10 * DAY);
    assert_eq!(
        code_of(resident.reopen(p.id, "又有油烟").await),
        ErrorCode::Forbidden
    );

    // An unrated petition: resolved, never rated; closed as unrated after 7 days, not before.
    let q = resident
        .submit_petition(complaint(worker_id, "路边停车堵住消防通道"))
        .await
        .unwrap();
    handle(&worker, q.id, "3").await;
    server.clock.set(t0 + 17 * DAY - MIN);
    server.county.supervise_now().await.unwrap();
    let still = resident.get_petition(q.id).await.unwrap().petition.unwrap();
    assert_eq!(still.state(), PetitionState::Resolved);
    server.clock.set(t0 + 17 * DAY);
    server.county.supervise_now().await.unwrap();
    let closed = resident.get_petition(q.id).await.unwrap().petition.unwrap();
    assert_eq!(closed.state(), PetitionState::Closed);
    assert!(closed.ratings.is_empty(), "unrated stays unrated");
    assert_eq!(
        code_of(resident.rate(q.id, RatingLevel::Satisfied, "").await),
        ErrorCode::IllegalTransition
    );

    // A petition the grid head filed for a resident who telephoned: the head records the
    // resident's rating from the phone call, marked as such.
    let filed = head
        .submit_petition(SubmitPetition {
            on_behalf_of: server.account_id("resident-01-1b"),
            channel: Channel::Phone as i32,
            ..complaint(worker_id, "电话反映：楼道灯不亮")
        })
        .await
        .unwrap();
    handle(&worker, filed.id, "4").await;
    let by_phone = head
        .record_phone_rating(filed.id, RatingLevel::BasicallySatisfied, "电话回访")
        .await
        .unwrap();
    assert_eq!(
        by_phone.ratings[0].recorded_by,
        server.account_id("head-01-1")
    );

    // The board: 3 petitions received, 3 ratings (one bad review), one unrated, one reopened.
    let board = sup.watch_board(month()).await.unwrap();
    let t = board.total.unwrap();
    assert_eq!(t.received, 3);
    assert_eq!(
        (t.rated, t.satisfied, t.basically_satisfied, t.dissatisfied),
        (3, 1, 1, 1)
    );
    assert_eq!(t.rated_by_phone, 1);
    assert_eq!(t.satisfaction_rate, Some(2.0 / 3.0));
    assert_eq!((t.unrated, t.reopened), (1, 1));
    assert_eq!(t.reopened_share, Some(1.0 / 3.0));
    let w = board.workers.iter().find(|r| r.id == worker_id).unwrap();
    assert_eq!((w.rated, w.dissatisfied), (3, 1));

    // The audit log holds every state change and rating of the first petition, in order.
    let actions: Vec<Action> = server
        .county
        .store()
        .audit_log(0, i64::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.petition_id == p.id)
        .filter_map(|r| match r.entry.and_then(|e| e.body) {
            Some(entry::Body::Transition(t)) => Some(t.action()),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            Action::Submit,
            Action::Respond,
            Action::Resolve,
            Action::Rate,
            Action::Reopen,
            Action::Respond,
            Action::Resolve,
            Action::Rate,
        ]
    );
    let unrated_close = server
        .county
        .store()
        .audit_log(t0 + 17 * DAY, t0 + 17 * DAY + 1)
        .unwrap();
    assert!(unrated_close.iter().any(|r| r.petition_id == q.id
        && matches!(&r.entry.as_ref().unwrap().body,
            Some(entry::Body::Transition(t)) if t.action() == Action::CloseUnrated)));
    server.stop().await;
}
