//! Who may see and touch what, and how bad input is answered: typed errors, the connection and
//! the server go on.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use lianxin_client::tungstenite::Message;
use lianxin_client::v1::{
    Category, ClientFrame, ErrorCode, SubmitPetition, TransferPetition, client_frame::Request,
    reply,
};
use lianxin_client::{ClientError, ConnectOptions, Wire};
use prost::Message as _;

fn petition(text: &str) -> SubmitPetition {
    SubmitPetition {
        category: Category::Complaint as i32,
        text: text.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residents_and_workers_only_reach_what_is_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let owner = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = owner.submit_petition(petition("噪音扰民")).await.unwrap();

    // Another resident of the same grid sees nothing of it.
    let neighbour = server.sign_in("resident-01-1b", Wire::Json).await;
    assert_eq!(
        code_of(neighbour.get_petition(p.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(neighbour.get_history(p.id, 0, 0).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(neighbour.send_message(p.id, "我也觉得", "").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(neighbour.mark_read(p.id, 1).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(neighbour.withdraw(p.id, "").await),
        ErrorCode::NotFound
    );
    assert!(
        neighbour
            .list_petitions(Default::default())
            .await
            .unwrap()
            .petitions
            .is_empty()
    );

    // A worker of another grid cannot touch it ...
    let outsider_id = server.account_id("worker-01-2a");
    let outsider = server.sign_in("worker-01-2a", Wire::Binary).await;
    assert_eq!(
        code_of(outsider.get_petition(p.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(outsider.send_message(p.id, "x", "").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(outsider.resolve(p.id, "x").await),
        ErrorCode::NotFound
    );

    // ... and the resident cannot hand it around or resolve it themselves.
    let to_outsider = TransferPetition {
        petition_id: p.id,
        to_worker_id: outsider_id,
        reason: "跨网格".into(),
        ..Default::default()
    };
    assert_eq!(
        code_of(owner.transfer(to_outsider.clone()).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(owner.resolve(p.id, "好了").await),
        ErrorCode::Forbidden
    );

    // ... unless it is transferred to them.
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    worker.transfer(to_outsider).await.unwrap();
    outsider.send_message(p.id, "我来处理", "").await.unwrap();
    assert_eq!(
        outsider
            .get_petition(p.id)
            .await
            .unwrap()
            .petition
            .unwrap()
            .assignee_id,
        outsider_id
    );
    // A worker cannot withdraw or close a resident's petition.
    assert_eq!(
        code_of(outsider.withdraw(p.id, "").await),
        ErrorCode::Forbidden
    );

    // A community supervisor of the community sees it; one of another community does not.
    let sup = server.sign_in("sup-01", Wire::Json).await;
    assert!(sup.get_petition(p.id).await.is_ok());
    let other_sup = server.sign_in("sup-02", Wire::Json).await;
    assert_eq!(
        code_of(other_sup.get_petition(p.id).await),
        ErrorCode::NotFound
    );
    // Only residents raise petitions for themselves.
    assert_eq!(
        code_of(sup.submit_petition(petition("x")).await),
        ErrorCode::Forbidden
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_get_typed_errors_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Json).await;
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(petition("楼道堆物"))
        .await
        .unwrap();
    let ill = ErrorCode::IllegalTransition;
    // Resolving before responding, closing before resolution.
    assert_eq!(code_of(worker.resolve(p.id, "处理了").await), ill);
    assert_eq!(code_of(resident.close_petition(p.id).await), ill);
    // Arguments.
    assert_eq!(code_of(worker.resolve(p.id, "").await), ill);
    assert_eq!(
        code_of(worker.send_message(p.id, "  ", "").await),
        ErrorCode::InvalidArgument
    );
    let no_target = TransferPetition {
        petition_id: p.id,
        reason: "r".into(),
        ..Default::default()
    };
    assert_eq!(
        code_of(worker.transfer(no_target).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(worker.mark_read(p.id, 99).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(resident.submit_petition(SubmitPetition::default()).await),
        ErrorCode::InvalidArgument
    );
    // After withdrawal nothing more can happen.
    resident.withdraw(p.id, "").await.unwrap();
    assert_eq!(
        code_of(resident.send_message(p.id, "还在吗", "").await),
        ill
    );
    assert_eq!(code_of(worker.send_message(p.id, "在", "").await), ill);
    // Unknown petition.
    assert_eq!(
        code_of(worker.get_petition(987_654_321).await),
        ErrorCode::NotFound
    );
    // The sessions still work.
    resident.ping().await.unwrap();
    worker.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_typed_errors_and_hurt_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let bystander = server.sign_in("resident-01-1b", Wire::Binary).await;
    let bin = server.connect(Wire::Binary).await;
    let json = server.connect(Wire::Json).await;

    let code = |r: Result<lianxin_client::v1::Reply, ClientError>| match r.unwrap().result {
        Some(reply::Result::Error(e)) => e.code(),
        other => panic!("expected an error reply, got {other:?}"),
    };
    // Garbage protobuf, broken JSON, a JSON frame of the wrong shape.
    let r = bin
        .send_raw_for_reply(Message::Binary(vec![0x0a, 0xff, 0xff, 0xff].into()), 0)
        .await;
    assert_eq!(code(r), ErrorCode::BadFrame);
    let r = json
        .send_raw_for_reply(Message::Text("{not json".into()), 0)
        .await;
    assert_eq!(code(r), ErrorCode::BadFrame);
    let r = json
        .send_raw_for_reply(Message::Text(r#"{"id":"1","signIn":"yes"}"#.into()), 0)
        .await;
    assert_eq!(code(r), ErrorCode::BadFrame);
    // A frame without a known request (e.g. from a newer client).
    let unknown = ClientFrame {
        id: 5,
        request: None,
    }
    .encode_to_vec();
    let r = bin
        .send_raw_for_reply(Message::Binary(unknown.into()), 5)
        .await;
    assert_eq!(code(r), ErrorCode::UnknownRequest);
    // The same in JSON: a request name this server does not know, answered with its id; an
    // unknown field inside a known request stays a bad frame.
    let r = json
        .send_raw_for_reply(Message::Text(r#"{"id":"6","teleport":{}}"#.into()), 6)
        .await;
    assert_eq!(code(r), ErrorCode::UnknownRequest);
    let r = json
        .send_raw_for_reply(
            Message::Text(r#"{"id":"7","ping":{"loud":true}}"#.into()),
            0,
        )
        .await;
    assert_eq!(code(r), ErrorCode::BadFrame);
    // One byte over the frame limit: a typed error, the connection stays.
    let limit = lianxin_server::config::Limits::default().max_frame_bytes;
    let r = bin
        .send_raw_for_reply(Message::Binary(vec![0u8; limit + 1].into()), 0)
        .await;
    assert_eq!(code(r), ErrorCode::FrameTooLarge);
    // Requests before sign-in.
    let r = bin
        .request_raw(ClientFrame {
            id: 9,
            request: Some(Request::GetInbox(Default::default())),
        })
        .await;
    assert_eq!(code(r), ErrorCode::Unauthenticated);
    assert_eq!(
        code_of(bin.sign_in("resident-01-1a", "wrong-password").await),
        ErrorCode::BadCredentials
    );
    assert_eq!(
        code_of(bin.sign_in("nobody", "whatever1").await),
        ErrorCode::BadCredentials
    );
    // Everyone is still connected and served.
    bin.ping().await.unwrap();
    json.ping().await.unwrap();
    bystander.ping().await.unwrap();
    bin.sign_in("resident-01-1a", PW).await.unwrap();
    assert_eq!(
        code_of(bin.sign_in("resident-01-1a", PW).await),
        ErrorCode::Forbidden
    );

    // Far over the limit (more than twice) the connection is closed with 1009; others go on.
    let big = server.connect(Wire::Binary).await;
    let _ = big
        .send_raw(Message::Binary(vec![0u8; limit * 3].into()))
        .await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            if big.is_closed() {
                return big.close_reason();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(closed.map(|c| c.0), Some(1009));
    bystander.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_work_in_the_header_expire_and_are_revoked_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let first = server.connect(Wire::Binary).await;
    let signed = first.sign_in("worker-01-1a", PW).await.unwrap();
    assert!(!signed.token.is_empty());

    // The Authorization header signs a connection in at once.
    let options = ConnectOptions {
        bearer_token: Some(signed.token.clone()),
        ..Default::default()
    };
    let mut by_header = lianxin_client::Client::connect(&server.url, options)
        .await
        .unwrap();
    assert_eq!(
        by_header.my_grid().await.unwrap().grid.unwrap().id,
        server
            .county
            .store()
            .account_by_login("worker-01-1a")
            .unwrap()
            .unwrap()
            .grid_id
    );
    // A bad token is refused before the upgrade.
    let bad = ConnectOptions {
        bearer_token: Some("nope".into()),
        ..Default::default()
    };
    match lianxin_client::Client::connect(&server.url, bad).await {
        Err(ClientError::Connect { status, .. }) => assert_eq!(status, Some(401)),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    // The token in the first frame.
    let third = server.connect(Wire::Json).await;
    third.authenticate(signed.token.clone()).await.unwrap();

    // Sign out everywhere: the other sessions are closed, the token is dead.
    third.sign_out_everywhere().await.unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), by_header.next_event()).await;
    assert_eq!(by_header.close_reason().map(|c| c.0), Some(4003));
    let fresh = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(fresh.authenticate(signed.token.clone()).await),
        ErrorCode::BadCredentials
    );

    // Tokens expire with the clock.
    let s = fresh.sign_in("worker-01-1a", PW).await.unwrap();
    server
        .clock
        .advance(std::time::Duration::from_secs(31 * 24 * 3600));
    let late = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(late.authenticate(s.token).await),
        ErrorCode::BadCredentials
    );
    // Plain sign-out ends this session's token.
    let s2 = late.sign_in("worker-01-1a", PW).await.unwrap();
    late.sign_out().await.unwrap();
    let after = server.connect(Wire::Binary).await;
    assert_eq!(
        code_of(after.authenticate(s2.token).await),
        ErrorCode::BadCredentials
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residents_register_against_their_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let anon = server.connect(Wire::Json).await;
    let grid = anon.lookup_address("条心路 12号").await.unwrap();
    let grid_id = grid.grid.as_ref().unwrap().id;
    assert_eq!(
        grid.grid.as_ref().unwrap().jurisdiction,
        vec!["条心路11-20号".to_string()]
    );
    assert!(grid.workers.len() >= 3);
    let me = anon
        .register("li-ayi", "a-good-password", "李阿姨", "条心路12号3单元")
        .await
        .unwrap();
    assert_eq!(me.account.as_ref().unwrap().grid_id, grid_id);
    assert_eq!(anon.my_grid().await.unwrap().grid.unwrap().id, grid_id);
    let other = server.connect(Wire::Json).await;
    assert_eq!(
        code_of(
            other
                .register("li-ayi", "a-good-password", "x", "条心路12号")
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(
        code_of(
            other
                .register("nowhere", "a-good-password", "x", "火星路1号")
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(other.register("short", "123", "x", "条心路12号").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(other.lookup_address("火星路1号").await),
        ErrorCode::NotFound
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duty_and_presence_steer_routing_and_the_inbox_is_ordered_by_urgency() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let b_id = server.account_id("worker-01-1b");
    let a = server.sign_in("worker-01-1a", Wire::Binary).await;
    let b = server.sign_in("worker-01-1b", Wire::Binary).await;
    a.set_on_duty(false).await.unwrap();
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let grid = resident.my_grid().await.unwrap();
    let a_info = grid
        .workers
        .iter()
        .find(|w| w.id == server.account_id("worker-01-1a"))
        .unwrap();
    assert!(!a_info.on_duty && a_info.online);
    let first = resident.submit_petition(petition("第一件")).await.unwrap();
    assert_eq!(first.assignee_id, b_id);
    server.clock.advance(std::time::Duration::from_secs(60));
    let second = resident.submit_petition(petition("第二件")).await.unwrap();
    // Naming a worker of the grid sends it to them whatever their duty.
    let third = resident
        .submit_petition(SubmitPetition {
            worker_id: b_id,
            ..petition("第三件")
        })
        .await
        .unwrap();
    assert_eq!(third.assignee_id, b_id);
    // A worker of another grid cannot be @-ed.
    let stranger = server.account_id("worker-02-1a");
    assert_eq!(
        code_of(
            resident
                .submit_petition(SubmitPetition {
                    worker_id: stranger,
                    ..petition("x")
                })
                .await
        ),
        ErrorCode::InvalidArgument
    );
    // Respond to the first: waiting ones come first, oldest first.
    b.send_message(first.id, "在处理", "").await.unwrap();
    let inbox: Vec<u64> = b
        .inbox()
        .await
        .unwrap()
        .petitions
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(inbox, vec![second.id, third.id, first.id]);
    assert_eq!(code_of(resident.inbox().await), ErrorCode::Forbidden);
    // Duty is stored: it survives a restart.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let grid = resident.my_grid().await.unwrap();
    assert!(
        !grid
            .workers
            .iter()
            .find(|w| w.id != b_id && w.role() == lianxin_client::v1::Role::Worker)
            .unwrap()
            .on_duty
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_petition_actor_restarts_from_storage_and_harms_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident.submit_petition(petition("一")).await.unwrap();
    let q = resident.submit_petition(petition("二")).await.unwrap();
    resident.send_message(p.id, "before", "").await.unwrap();
    resident.send_message(q.id, "other", "").await.unwrap();
    server.county.crash_petition(p.id).unwrap();
    // The crashed petition answers again, with its numbering intact; the other never noticed.
    let ack = resident.send_message(p.id, "after", "").await.unwrap();
    assert_eq!(ack.seq, 4);
    let ack = resident.send_message(q.id, "still fine", "").await.unwrap();
    assert_eq!(ack.seq, 4);
    server.stop().await;
}

/// Waits until the county runs `n` petition actors, for at most `secs` seconds.
async fn wait_for_actors(server: &TestServer, n: usize, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let count = server.county.petition_actor_count().await.unwrap();
        if count == n || std::time::Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_petition_actors_stop_and_start_again_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_petition_idle(dir.path(), 1).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident.submit_petition(petition("一")).await.unwrap();
    let q = resident.submit_petition(petition("二")).await.unwrap();
    // Raising a petition starts no actor; the first request does.
    assert_eq!(server.county.petition_actor_count().await.unwrap(), 0);
    resident.send_message(p.id, "wakes it", "").await.unwrap();
    resident
        .send_message(q.id, "and this one", "")
        .await
        .unwrap();
    assert_eq!(server.county.petition_actor_count().await.unwrap(), 2);
    // Idle for the idle time: both are stopped.
    assert_eq!(wait_for_actors(&server, 0, 5).await, 0);
    // The next request starts a fresh actor, numbering where the stored petition left off.
    let ack = resident.send_message(p.id, "again", "").await.unwrap();
    assert_eq!(ack.seq, 4);
    assert_eq!(server.county.petition_actor_count().await.unwrap(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_passivation_are_neither_lost_nor_misnumbered() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_petition_idle(dir.path(), 1).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident.submit_petition(petition("一")).await.unwrap();
    // Requests about one idle time apart land just before, at, or just after the idle check.
    let mut expected = 2;
    for (i, gap_ms) in [0u64, 1000, 995, 1005, 990, 1010, 1000, 1020, 980]
        .into_iter()
        .enumerate()
    {
        tokio::time::sleep(std::time::Duration::from_millis(gap_ms)).await;
        let ack = resident
            .send_message(p.id, &format!("m{i}"), &format!("c{i}"))
            .await
            .unwrap();
        expected += 1;
        assert_eq!(ack.seq, expected, "message {i}");
        assert!(!ack.duplicate);
    }
    let history = resident.get_history(p.id, 0, 100).await.unwrap();
    let seqs: Vec<u64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=expected).collect::<Vec<_>>());
    assert!(server.county.petition_actor_count().await.unwrap() <= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_lose_a_petition_that_moves_to_another_community() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    let mut sup = server.sign_in("sup-01", Wire::Binary).await;
    let p = resident
        .submit_petition(complaint(worker_id, "这事归隔壁社区管"))
        .await
        .unwrap();
    // The supervisor opens it and so follows it.
    sup.get_petition(p.id).await.unwrap();
    sup.subscribe(0).await.unwrap();
    let far_grid = server
        .county
        .store()
        .grids()
        .unwrap()
        .into_iter()
        .find(|g| g.community_id != p.community_id)
        .unwrap();
    worker
        .transfer(TransferPetition {
            petition_id: p.id,
            to_grid_id: far_grid.id,
            reason: "不在本社区辖区".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The transfer itself still reaches the old community's supervisor ...
    expect_event(&mut sup, "the transfer", |e| {
        entry_added(e).is_some_and(|a| a.entry.as_ref().is_some_and(|x| x.petition_id == p.id))
    })
    .await;
    // ... but nothing after it, and the petition leaves their lists.
    resident.send_message(p.id, "谢谢", "after").await.unwrap();
    let later = drain_events(&mut sup, std::time::Duration::from_millis(300)).await;
    assert!(
        later.iter().all(|e| entry_added(e)
            .is_none_or(|a| a.entry.as_ref().is_none_or(|x| x.petition_id != p.id))),
        "no events of a petition the supervisor can no longer see: {later:?}"
    );
    let listed = sup.list_petitions(Default::default()).await.unwrap();
    assert!(listed.petitions.iter().all(|x| x.id != p.id));
    assert_eq!(code_of(sup.get_petition(p.id).await), ErrorCode::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_when_its_session_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    resident.ping().await.unwrap();
    // 30 days (the default token lifetime) later, the next request is refused and the
    // connection closes with 4004.
    server
        .clock
        .advance(std::time::Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        code_of(resident.my_grid().await),
        ErrorCode::Unauthenticated
    );
    let wait = async {
        while !resident.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), wait)
        .await
        .expect("the connection closes");
    assert_eq!(resident.close_reason().map(|(code, _)| code), Some(4004));
    server.stop().await;
}
