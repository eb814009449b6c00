//! The authorization matrix: every request that touches a petition, a board, a report or a
//! media item, by every kind of account (the petition's own resident, a neighbour, the assignee,
//! other staff of the grid, staff of another grid or community, supervisors, admin), through every
//! path (live requests, history, the feed replayed from cursor 0, media over HTTP, board, reports).
//!
//! The expected table is [`EXPECTED`]; the same table stands in `docs/authorization.md`, and this
//! test fails if the two differ (`LIANXIN_WRITE_DOCS=1` rewrites the document from the table).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use lianxin_client::v1::{
    BoardFigure, BoardLevel, BoardRange, ErrorCode, EscalatePetition, EscalationTarget,
    GetBoardPetitions, ListPetitions, Petition, RatingLevel, TransferPetition, WatchBoard, event,
};
use lianxin_client::{Client, ClientError, Wire};

/// Who asks, by login, and how they stand towards the petition raised by `resident-01-1a` to
/// `worker-01-1a` in grid 1 of community 1.
const PRINCIPALS: [(&str, &str); 13] = [
    ("resident", "resident-01-1a"),
    ("neighbour (same grid)", "resident-01-1b"),
    ("resident, other grid", "resident-01-2a"),
    ("assignee", "worker-01-1a"),
    ("worker, same grid", "worker-01-1b"),
    ("worker, other grid", "worker-01-2a"),
    ("worker, other community", "worker-02-1a"),
    ("grid head", "head-01-1"),
    ("grid head, other grid", "head-01-2"),
    ("community supervisor", "sup-01"),
    ("supervisor, other community", "sup-02"),
    ("township supervisor", "township"),
    ("admin", "admin"),
];

/// What happened: `ok`, `hidden` (NOT_FOUND: indistinguishable from no such thing), `forbidden`
/// (FORBIDDEN), `illegal` (the role may, the state does not), `listed`/`absent` (whether the
/// petition appears in a list or the feed), `-` (not applicable).
const ACTIONS: [&str; 21] = [
    "getPetition",
    "getHistory",
    "listPetitions",
    "getInbox",
    "feed (resume from 0)",
    "media (GET /media)",
    "sendMessage",
    "markRead",
    "transfer",
    "escalate",
    "resolve",
    "withdraw",
    "close",
    "rate",
    "reopen",
    "watchBoard",
    "getBoardPetitions",
    "getReport",
    "addPoints",
    "listPetitions, after getPetition",
    "setAccountDisabled",
];

/// The expected outcome per action (rows) and principal (columns, in [`PRINCIPALS`] order).
const EXPECTED: [[&str; 13]; 21] = [
    // res     neigh     res-og    assignee  w-same    w-og      w-oc      head      head-og   sup       sup-oc    township  admin
    [
        "ok", "hidden", "hidden", "ok", "ok", "hidden", "hidden", "ok", "hidden", "ok", "hidden",
        "ok", "ok",
    ], // getPetition
    [
        "ok", "hidden", "hidden", "ok", "ok", "hidden", "hidden", "ok", "hidden", "ok", "hidden",
        "ok", "ok",
    ], // getHistory
    [
        "listed", "absent", "absent", "listed", "absent", "absent", "absent", "listed", "absent",
        "absent", "absent", "absent", "absent",
    ], // listPetitions
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "listed",
        "absent",
        "absent",
        "absent",
        "absent",
        "absent",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
    ], // getInbox
    [
        "listed", "absent", "absent", "listed", "absent", "absent", "absent", "listed", "absent",
        "absent", "absent", "absent", "absent",
    ], // feed
    [
        "ok", "hidden", "hidden", "ok", "ok", "hidden", "hidden", "ok", "hidden", "ok", "hidden",
        "ok", "ok",
    ], // media
    [
        "ok", "hidden", "hidden", "ok", "ok", "hidden", "hidden", "ok", "hidden", "ok", "hidden",
        "ok", "ok",
    ], // sendMessage
    [
        "ok", "hidden", "hidden", "ok", "ok", "hidden", "hidden", "ok", "hidden", "ok", "hidden",
        "ok", "ok",
    ], // markRead
    [
        "forbidden",
        "hidden",
        "hidden",
        "ok",
        "ok",
        "hidden",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "ok",
    ], // transfer
    [
        "forbidden",
        "hidden",
        "hidden",
        "ok",
        "ok",
        "hidden",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "ok",
    ], // escalate
    [
        "forbidden",
        "hidden",
        "hidden",
        "ok",
        "ok",
        "hidden",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "hidden",
        "ok",
        "ok",
    ], // resolve
    [
        "ok",
        "hidden",
        "hidden",
        "forbidden",
        "forbidden",
        "hidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "forbidden",
    ], // withdraw
    [
        "ok",
        "hidden",
        "hidden",
        "forbidden",
        "forbidden",
        "hidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "forbidden",
    ], // close
    [
        "ok",
        "hidden",
        "hidden",
        "forbidden",
        "forbidden",
        "hidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "forbidden",
    ], // rate
    [
        "ok",
        "hidden",
        "hidden",
        "forbidden",
        "forbidden",
        "hidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "hidden",
        "forbidden",
        "forbidden",
    ], // reopen
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "ok",
        "forbidden",
        "ok",
        "ok",
    ], // watchBoard
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "listed",
        "forbidden",
        "listed",
        "listed",
    ], // getBoardPetitions
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "ok",
        "forbidden",
        "ok",
        "ok",
    ], // getReport
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "ok",
        "forbidden",
        "ok",
        "ok",
    ], // addPoints
    [
        "listed", "absent", "absent", "listed", "absent", "absent", "absent", "listed", "absent",
        "listed", "absent", "listed", "listed",
    ], // listPetitions, after getPetition
    [
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "forbidden",
        "ok",
    ], // setAccountDisabled
];

fn outcome<T>(r: Result<T, ClientError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(ClientError::Server { code, .. }) => match code {
            ErrorCode::NotFound => "hidden".into(),
            ErrorCode::Forbidden => "forbidden".into(),
            ErrorCode::IllegalTransition => "illegal".into(),
            other => format!("{other:?}"),
        },
        Err(e) => format!("client error: {e}"),
    }
}

fn listed(yes: bool) -> String {
    if yes { "listed" } else { "absent" }.into()
}

/// Whether the account's petition list holds the petition.
async fn lists(c: &Client, id: u64) -> bool {
    let mut before_id = 0;
    loop {
        let page = c
            .list_petitions(ListPetitions {
                limit: 100,
                before_id,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.petitions.iter().any(|p| p.id == id) {
            return true;
        }
        if page.next_before_id == 0 {
            return false;
        }
        before_id = page.next_before_id;
    }
}

/// Whether the board drill-down of "received" in community 1 holds the petition (all pages),
/// or the error's outcome.
async fn drills_to(c: &Client, community_id: u64, id: u64) -> String {
    let mut before_id = 0;
    loop {
        let page = match c
            .board_petitions(GetBoardPetitions {
                community_id,
                range: BoardRange::Last7Days as i32,
                level: BoardLevel::Total as i32,
                figure: BoardFigure::Received as i32,
                limit: 100,
                before_id,
                ..Default::default()
            })
            .await
        {
            Ok(page) => page,
            Err(e) => return outcome::<()>(Err(e)),
        };
        if page.petitions.iter().any(|p| p.id == id) {
            return listed(true);
        }
        if page.next_before_id == 0 {
            return listed(false);
        }
        before_id = page.next_before_id;
    }
}

fn petition_of(e: &lianxin_client::v1::Event) -> Option<u64> {
    match &e.kind {
        Some(event::Kind::PetitionNotice(n)) => n.petition.as_ref().map(|p| p.id),
        Some(event::Kind::EntryAdded(a)) => a.entry.as_ref().map(|e| e.petition_id),
        Some(event::Kind::ReadReceipt(r)) => r.mark.as_ref().map(|m| m.petition_id),
        None => None,
    }
}

struct World {
    server: TestServer,
    clients: BTreeMap<&'static str, Client>,
    tokens: BTreeMap<&'static str, String>,
}

impl World {
    async fn start(dir: &std::path::Path) -> World {
        // One resident raises a fresh petition for every cell: the per-day and per-connection
        // limits (tested in hostile.rs) are lifted here.
        let mut config = test_config(dir);
        config.limits.max_petitions_per_day = 0;
        config.limits.requests_per_sec = 100_000;
        config.limits.request_burst = 100_000;
        let server = TestServer::start_with(config).await;
        let mut clients = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        for (_, login) in PRINCIPALS {
            let c = server.connect(Wire::Binary).await;
            let signed = c.sign_in(login, PW).await.unwrap();
            tokens.insert(login, signed.token);
            clients.insert(login, c);
        }
        World {
            server,
            clients,
            tokens,
        }
    }

    fn c(&self, login: &str) -> &Client {
        &self.clients[login]
    }

    /// A fresh petition of `resident-01-1a` to `worker-01-1a`, brought to `state`: "submitted",
    /// "responded" (the assignee answered), "resolved", or "closed" (rated).
    async fn petition(&self, state: &str) -> Petition {
        let worker = self.server.account_id("worker-01-1a");
        let r = self.c("resident-01-1a");
        let w = self.c("worker-01-1a");
        let p = r
            .submit_petition(complaint(worker, "楼道灯坏了"))
            .await
            .unwrap();
        if state == "submitted" {
            return p;
        }
        w.send_message(p.id, "收到，马上来看", "").await.unwrap();
        if state == "responded" {
            return p;
        }
        w.resolve(p.id, "已更换灯泡").await.unwrap();
        if state == "resolved" {
            return p;
        }
        r.rate(p.id, RatingLevel::Satisfied, "").await.unwrap();
        p
    }
}

fn render(rows: &[Vec<String>]) -> String {
    let mut out = String::from("| request |");
    for (who, _) in PRINCIPALS {
        out.push_str(&format!(" {who} |"));
    }
    out.push_str("\n| --- |");
    for _ in PRINCIPALS {
        out.push_str(" --- |");
    }
    out.push('\n');
    for (action, row) in ACTIONS.iter().zip(rows) {
        out.push_str(&format!("| {action} |"));
        for cell in row {
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_by_every_role_on_own_and_others_petitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::start(dir.path()).await;
    let community_1 = world
        .server
        .county
        .store()
        .account_by_login("sup-01")
        .unwrap()
        .unwrap()
        .community_id;
    let assignee = world.server.account_id("worker-01-1a");
    let other_grid = world
        .server
        .county
        .store()
        .account_by_login("worker-01-2a")
        .unwrap()
        .unwrap()
        .grid_id;

    // The petition read by everyone, with a photo in its conversation.
    let shared = world.petition("submitted").await;
    let resident_token = world.tokens["resident-01-1a"].clone();
    let png = {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let uploaded: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/media", world.server.addr))
        .bearer_auth(&resident_token)
        .body(png)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_id = uploaded["id"].as_str().unwrap().to_owned();
    world
        .c("resident-01-1a")
        .send_message_with_media(shared.id, "照片", "", vec![media_id.clone()])
        .await
        .unwrap();

    let mut observed: Vec<Vec<String>> = vec![Vec::new(); ACTIONS.len()];
    // Lists and the feed first, before anyone but its participants has touched the petition.
    for (_, login) in PRINCIPALS {
        observed[2].push(listed(lists(world.c(login), shared.id).await));
        // The feed, replayed from cursor 0 on a new connection (what a reconnecting client gets).
        let mut c = world.server.connect(Wire::Binary).await;
        c.authenticate(world.tokens[login].clone()).await.unwrap();
        c.subscribe(0).await.unwrap();
        let events = drain_events(&mut c, Duration::from_millis(300)).await;
        observed[4].push(listed(
            events.iter().any(|e| petition_of(e) == Some(shared.id)),
        ));
    }
    for (_, login) in PRINCIPALS {
        let c = world.c(login);
        let id = shared.id;
        let mut row = |i: usize, v: String| observed[i].push(v);
        row(0, outcome(c.get_petition(id).await));
        row(1, outcome(c.get_history(id, 0, 0).await));
        row(
            3,
            match c.inbox().await {
                Ok(page) => listed(page.petitions.iter().any(|p| p.id == id)),
                Err(e) => outcome::<()>(Err(e)),
            },
        );
        let status = reqwest::Client::new()
            .get(format!("http://{}/media/{media_id}", world.server.addr))
            .bearer_auth(&world.tokens[login])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        row(
            5,
            match status {
                200 => "ok".into(),
                404 => "hidden".into(),
                other => format!("HTTP {other}"),
            },
        );
        let fresh = world.petition("submitted").await;
        row(6, outcome(c.send_message(fresh.id, "你好", "").await));
        row(7, outcome(c.mark_read(id, 1).await));
        let fresh = world.petition("submitted").await;
        row(
            8,
            outcome(
                c.transfer(TransferPetition {
                    petition_id: fresh.id,
                    to_grid_id: other_grid,
                    reason: "不属本网格".into(),
                    ..Default::default()
                })
                .await,
            ),
        );
        let fresh = world.petition("submitted").await;
        row(
            9,
            outcome(
                c.escalate(EscalatePetition {
                    petition_id: fresh.id,
                    target: EscalationTarget::Community as i32,
                    note: "需社区协调".into(),
                    ..Default::default()
                })
                .await,
            ),
        );
        let fresh = world.petition("responded").await;
        row(10, outcome(c.resolve(fresh.id, "已处理").await));
        let fresh = world.petition("submitted").await;
        row(11, outcome(c.withdraw(fresh.id, "").await));
        let fresh = world.petition("resolved").await;
        row(12, outcome(c.close_petition(fresh.id).await));
        let fresh = world.petition("resolved").await;
        row(
            13,
            outcome(c.rate(fresh.id, RatingLevel::Satisfied, "").await),
        );
        let fresh = world.petition("closed").await;
        row(14, outcome(c.reopen(fresh.id, "灯又坏了").await));
        let watch = WatchBoard {
            community_id: community_1,
            range: BoardRange::Last7Days as i32,
            ..Default::default()
        };
        row(15, outcome(c.watch_board(watch).await));
        let _ = c.unwatch_board().await;
        row(16, drills_to(c, community_1, id).await);
        row(17, outcome(c.report("2026-11", community_1).await));
        row(
            18,
            outcome(c.add_points(assignee, 100, "帮助孤寡老人").await),
        );
    }

    // Supervisors who opened it (getPetition above) now follow it.
    for (_, login) in PRINCIPALS {
        observed[19].push(listed(lists(world.c(login), shared.id).await));
    }
    // Disabling an account (one nobody here uses), and enabling it again.
    let bystander = world.server.account_id("resident-12-4c");
    for (_, login) in PRINCIPALS {
        let c = world.c(login);
        let r = c.set_account_disabled(bystander, true).await;
        if r.is_ok() {
            c.set_account_disabled(bystander, false).await.unwrap();
        }
        observed[20].push(outcome(r));
    }
    for c in std::mem::take(&mut world.clients).into_values() {
        c.close().await;
    }

    let expected: Vec<Vec<String>> = EXPECTED
        .iter()
        .map(|row| row.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    let table = render(&expected);
    let doc_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/authorization.md");
    if std::env::var_os("LIANXIN_WRITE_DOCS").is_some() {
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        let (head, rest) = doc.split_once("<!-- matrix -->\n").unwrap();
        let (_, tail) = rest.split_once("<!-- /matrix -->").unwrap();
        std::fs::write(
            &doc_path,
            format!("{head}<!-- matrix -->\n{table}<!-- /matrix -->{tail}"),
        )
        .unwrap();
    }
    assert_eq!(
        render(&observed),
        table,
        "observed (left) differs from the expected matrix (right)"
    );
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    assert!(
        doc.contains(&format!("<!-- matrix -->\n{table}<!-- /matrix -->")),
        "docs/authorization.md does not hold the tested matrix; run with LIANXIN_WRITE_DOCS=1"
    );
    world.server.stop().await;
}
