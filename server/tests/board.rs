//! The live response board through real WebSocket clients: submitting, answering and resolving
//! petitions (and a reminder) move its figures exactly as docs/metrics.md defines them; updates
//! arrive as deltas that rebuild the same board a fresh watch returns; drill-down lists the
//! petitions behind a figure; only supervisors see boards, and only their own scope.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use lianxin_actors::domain::board::apply_rows;
use lianxin_client::v1::{
    Board, BoardFigure, BoardLevel, BoardRange, BoardRow, ErrorCode, GetBoardPetitions, WatchBoard,
};
use lianxin_client::{Client, Wire};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn week() -> WatchBoard {
    WatchBoard {
        community_id: 0,
        range: BoardRange::Last7Days as i32,
        ..Default::default()
    }
}

/// What a client does with an update: whole parts replaced, changed rows merged by id.
fn apply(board: &mut Board, update: Board) {
    apply_rows(&mut board.communities, &update.communities);
    apply_rows(&mut board.grids, &update.grids);
    apply_rows(&mut board.workers, &update.workers);
    board.total = update.total;
    board.overdue = update.overdue;
    board.bucket_counts = update.bucket_counts;
    board.from_ms = update.from_ms;
    board.to_ms = update.to_ms;
    board.computed_at_ms = update.computed_at_ms;
}

/// Applies updates until `pred` holds for the merged board (at most 10 s).
async fn wait_board(
    sup: &mut Client,
    board: &mut Board,
    what: &str,
    pred: impl Fn(&Board) -> bool,
) {
    let wait = async {
        while !pred(board) {
            let update = sup
                .next_board_update()
                .await
                .unwrap_or_else(|| panic!("connection closed while waiting for {what}"));
            apply(board, update.board.expect("an update carries a board"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}; board: {board:#?}"));
}

fn total(b: &Board) -> BoardRow {
    b.total.clone().expect("a total row")
}

fn worker_row(b: &Board, id: u64) -> BoardRow {
    b.workers
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .expect("the worker's row")
}

fn drill(level: BoardLevel, id: u64, figure: BoardFigure) -> GetBoardPetitions {
    GetBoardPetitions {
        range: BoardRange::Last7Days as i32,
        level: level as i32,
        id,
        figure: figure as i32,
        ..Default::default()
    }
}

async fn ids_behind(sup: &Client, d: GetBoardPetitions) -> Vec<u64> {
    let page = sup.board_petitions(d).await.unwrap();
    page.petitions.iter().map(|p| p.id).collect()
}

/// Figures without the instants of computation, for comparing two boards.
fn figures(b: &Board) -> Board {
    Board {
        computed_at_ms: 0,
        from_ms: 0,
        to_ms: 0,
        ..b.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_moves_as_the_metrics_define_through_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.board.interval_ms = 20;
    let server = TestServer::start_with(config).await;
    let t0 = START_MS;
    let worker_id = server.account_id("worker-01-1a");

    let mut sup = server.sign_in("sup-01", Wire::Json).await;
    let mut board = sup.watch_board(week()).await.unwrap();
    let community = board.community_id;
    assert_ne!(
        community, 0,
        "a community supervisor gets their own community"
    );
    assert_eq!(board.communities.len(), 1);
    assert_eq!(total(&board).received, 0);
    assert_eq!(
        total(&board).response_rate,
        None,
        "no rate without petitions"
    );
    let before = worker_row(&board, worker_id);
    assert_eq!((before.received, before.open, before.rank), (0, 0, 0));

    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;

    // 1. A petition is raised: received and open move, nothing is decided yet.
    let p1 = resident
        .submit_petition(complaint(worker_id, "楼道灯坏了"))
        .await
        .unwrap();
    wait_board(&mut sup, &mut board, "the first petition", |b| {
        total(b).received == 1
    })
    .await;
    let t = total(&board);
    assert_eq!((t.open, t.response_decided, t.responded), (1, 0, 0));
    assert_eq!(worker_row(&board, worker_id).received, 1);
    assert_eq!(worker_row(&board, worker_id).rank, 1);

    // 2. The worker answers after 30 minutes: responded on time, first response 30 min.
    server.clock.set(t0 + 30 * MIN);
    worker
        .send_message(p1.id, "马上安排电工", "r1")
        .await
        .unwrap();
    wait_board(&mut sup, &mut board, "the response", |b| {
        total(b).responded == 1
    })
    .await;
    let t = total(&board);
    assert_eq!((t.response_decided, t.responded_on_time), (1, 1));
    assert_eq!(t.response_rate, Some(1.0));
    assert_eq!(t.first_response_median_ms, 30 * MIN);
    assert_eq!(t.first_response_mean_ms, 30 * MIN);
    assert_eq!(board.bucket_counts[1], 1, "30 min falls in [15 min, 1 h)");

    // 3. Resolved: resolution rate 1.
    worker.resolve(p1.id, "已更换灯泡").await.unwrap();
    wait_board(&mut sup, &mut board, "the resolution", |b| {
        total(b).resolved == 1
    })
    .await;
    assert_eq!(total(&board).resolution_rate, Some(1.0));
    assert_eq!(
        total(&board).open,
        1,
        "resolved waits for the resident: still open"
    );

    // 4. A second petition nobody answers: at 12 h it is overdue and reminded.
    let p2 = resident
        .submit_petition(complaint(worker_id, "垃圾桶满了没人清"))
        .await
        .unwrap();
    server.clock.set(t0 + 30 * MIN + 12 * HOUR);
    let fired = server.county.supervise_now().await.unwrap();
    assert!(fired.steps >= 1, "the reminder fires");
    wait_board(&mut sup, &mut board, "the reminder", |b| {
        total(b).reminders == 1
    })
    .await;
    let t = total(&board);
    assert_eq!(t.received, 2);
    assert_eq!(t.overdue_response, 1);
    assert_eq!((t.response_decided, t.responded_on_time), (2, 1));
    assert_eq!(t.response_rate, Some(0.5));
    assert_eq!(t.resolution_rate, Some(0.5));
    let w = worker_row(&board, worker_id);
    assert_eq!((w.reminders, w.overdue_response), (1, 1));
    assert_eq!(
        board.overdue.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![p2.id],
        "the overdue list"
    );

    // Drill-down: the petitions behind the figures.
    let at = |figure| drill(BoardLevel::Worker, worker_id, figure);
    assert_eq!(
        ids_behind(&sup, at(BoardFigure::OverdueResponse)).await,
        [p2.id]
    );
    assert_eq!(
        ids_behind(&sup, at(BoardFigure::RespondedOnTime)).await,
        [p1.id]
    );
    assert_eq!(
        ids_behind(&sup, at(BoardFigure::RespondedLate)).await,
        [p2.id]
    );
    assert_eq!(
        ids_behind(&sup, drill(BoardLevel::Total, 0, BoardFigure::Received)).await,
        [p2.id, p1.id],
        "newest first"
    );
    assert_eq!(ids_behind(&sup, at(BoardFigure::Reminded)).await, [p2.id]);

    // The snapshot-plus-deltas board equals a fresh one.
    let fresh_sup = server.sign_in("sup-01", Wire::Binary).await;
    let fresh = fresh_sup.watch_board(week()).await.unwrap();
    assert_eq!(figures(&board), figures(&fresh));

    // The township sees every community, ranked.
    let township = server.sign_in("township", Wire::Binary).await;
    let all = township.watch_board(week()).await.unwrap();
    assert_eq!(all.community_id, 0);
    assert_eq!(all.communities.len(), 12);
    let ours = all.communities.iter().find(|r| r.id == community).unwrap();
    assert_eq!((ours.received, ours.rank), (2, 1));
    assert!(
        all.communities
            .iter()
            .filter(|r| r.id != community)
            .all(|r| r.rank == 0 && r.received == 0)
    );
    let other = all
        .communities
        .iter()
        .find(|r| r.id != community)
        .unwrap()
        .id;
    let theirs = township
        .watch_board(WatchBoard {
            community_id: other,
            ..week()
        })
        .await
        .unwrap();
    assert_eq!(total(&theirs).received, 0);

    // Only supervisors, each in their own scope.
    let refused = sup
        .watch_board(WatchBoard {
            community_id: other,
            ..week()
        })
        .await;
    assert_eq!(code_of(refused), ErrorCode::Forbidden);
    assert_eq!(
        code_of(worker.watch_board(week()).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(resident.watch_board(week()).await),
        ErrorCode::Forbidden
    );
    let no_range = sup
        .watch_board(WatchBoard {
            range: BoardRange::Unspecified as i32,
            ..week()
        })
        .await;
    assert_eq!(code_of(no_range), ErrorCode::InvalidArgument);
    let missing = township
        .watch_board(WatchBoard {
            community_id: 999_999,
            ..week()
        })
        .await;
    assert_eq!(code_of(missing), ErrorCode::NotFound);
    let no_figure = sup
        .board_petitions(drill(BoardLevel::Total, 0, BoardFigure::Unspecified))
        .await;
    assert_eq!(code_of(no_figure), ErrorCode::InvalidArgument);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_survives_a_restart_and_counts_stored_petitions() {
    let dir = tempfile::tempdir().unwrap();
    let worker_id;
    {
        let server = TestServer::start(dir.path()).await;
        worker_id = server.account_id("worker-01-1a");
        let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
        for text in ["路面有坑", "井盖松动", "树枝挡路"] {
            resident
                .submit_petition(complaint(worker_id, text))
                .await
                .unwrap();
        }
        server.stop().await;
    }
    let server = TestServer::start(dir.path()).await;
    let sup = server.sign_in("sup-01", Wire::Binary).await;
    let board = sup.watch_board(week()).await.unwrap();
    assert_eq!(total(&board).received, 3);
    assert_eq!(total(&board).open, 3);
    assert_eq!(worker_row(&board, worker_id).received, 3);
    // A custom range that ends before the petitions were raised holds none of them, but the now
    // figures (open) still count them.
    let earlier = sup
        .watch_board(WatchBoard {
            range: BoardRange::Custom as i32,
            from_ms: START_MS - 48 * HOUR,
            to_ms: START_MS - HOUR,
            ..week()
        })
        .await
        .unwrap();
    assert_eq!((total(&earlier).received, total(&earlier).open), (0, 3));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lets_its_facts_go_when_nobody_watches_and_loads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    for text in ["路面有坑", "井盖松动"] {
        resident
            .submit_petition(complaint(worker_id, text))
            .await
            .unwrap();
    }
    let sup = server.sign_in("sup-01", Wire::Binary).await;
    let board = sup.watch_board(week()).await.unwrap();
    assert_eq!(total(&board).received, 2);
    let held = server.county.board_facts_held().await.unwrap();
    assert!(held >= 2, "the watched petitions' facts are held: {held}");

    // The supervisor leaves; the facts stay until nobody has needed them for a while.
    sup.close().await;
    let unload_after = Duration::from_millis(lianxin_actors::board::UNLOAD_AFTER_MS as u64);
    server.clock.advance(unload_after / 2);
    for _ in 0..10 {
        // (Long enough for the closed session's unwatch to reach the board.)
        server.county.tick_board_now().await.unwrap();
        assert_eq!(server.county.board_facts_held().await.unwrap(), held);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.clock.advance(unload_after);
    // (Until the closed session's unwatch has reached the board, it still counts as watched.)
    let unloaded = async {
        loop {
            server.county.tick_board_now().await.unwrap();
            if server.county.board_facts_held().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), unloaded)
        .await
        .expect("the facts were let go");

    // A petition raised meanwhile, and the next watcher's board counts everything again.
    resident
        .submit_petition(complaint(worker_id, "树枝挡路"))
        .await
        .unwrap();
    let sup = server.sign_in("sup-01", Wire::Binary).await;
    let board = sup.watch_board(week()).await.unwrap();
    assert_eq!(total(&board).received, 3);
    assert_eq!(worker_row(&board, worker_id).open, 3);
    server.stop().await;
}
