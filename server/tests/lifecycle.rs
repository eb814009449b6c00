//! End to end: the seed's chain over real WebSocket clients — a resident @s their grid, the worker
//! is notified live, they talk, the resident sees the read receipt, the worker transfers, the new
//! worker resolves, the resident closes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use lianxin_client::Wire;
use lianxin_client::v1::{
    Action, Category, ListPetitions, NoticeKind, PetitionState, SubmitPetition, TransferPetition,
    entry, event,
};

fn submit(text: &str, cmid: &str) -> SubmitPetition {
    SubmitPetition {
        category: Category::SituationReport as i32,
        title: "路灯不亮".into(),
        text: text.into(),
        client_msg_id: cmid.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_chain_live_over_both_wires() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_a = server.account_id("worker-01-1a");
    let worker_b = server.account_id("worker-01-1b");
    let resident_id = server.account_id("resident-01-1a");

    // Worker A is on duty and connected; worker B goes off duty: the grid routes to A.
    let mut a = server.sign_in("worker-01-1a", Wire::Binary).await;
    a.subscribe(0).await.unwrap();
    let mut b = server.sign_in("worker-01-1b", Wire::Binary).await;
    b.set_on_duty(false).await.unwrap();
    b.subscribe(0).await.unwrap();
    let mut resident = server.sign_in("resident-01-1a", Wire::Json).await;
    resident.subscribe(0).await.unwrap();
    // A second device of the resident sees everything too.
    let mut resident_phone = server.sign_in("resident-01-1a", Wire::Binary).await;
    resident_phone.subscribe(0).await.unwrap();

    let p = resident
        .submit_petition(submit("楼下路灯坏了三天了", "p-1"))
        .await
        .unwrap();
    assert_eq!(
        p.assignee_id, worker_a,
        "routed to the on-duty, connected worker"
    );
    assert_eq!(p.state(), PetitionState::Submitted);
    assert_eq!(p.resident_id, resident_id);

    // The worker is notified live, with the first message.
    let n = expect_event(&mut a, "new petition notice", |e| notice(e).is_some()).await;
    let n = notice(&n).unwrap();
    assert_eq!(n.kind(), NoticeKind::NewPetition);
    assert_eq!(n.petition.as_ref().unwrap().id, p.id);
    assert!(
        n.entries.iter().any(
            |e| matches!(&e.body, Some(entry::Body::Text(t)) if t.text == "楼下路灯坏了三天了")
        )
    );

    // They exchange messages; the worker's first reply is the response.
    let ack = resident
        .send_message(p.id, "晚上很黑，老人出门不方便", "m-1")
        .await
        .unwrap();
    assert_eq!(ack.seq, 3);
    let e = expect_event(&mut a, "resident's message", |e| entry_added(e).is_some()).await;
    assert_eq!(entry_added(&e).unwrap().entry.as_ref().unwrap().seq, 3);
    let reply = a
        .send_message(p.id, "收到，今天下午去看", "w-1")
        .await
        .unwrap();
    assert_eq!(reply.seq, 4);
    let e = expect_event(&mut resident, "worker's reply", |e| {
        entry_added(e).is_some_and(|a| a.entry.as_ref().is_some_and(|x| x.seq == 4))
    })
    .await;
    assert!(
        matches!(&entry_added(&e).unwrap().entry.as_ref().unwrap().body, Some(entry::Body::Text(t)) if t.text.starts_with("收到"))
    );
    let e = expect_event(&mut resident, "responded transition", |e| {
        entry_added(e).is_some_and(|a| a.state() == PetitionState::Responded)
    })
    .await;
    let t = match &entry_added(&e).unwrap().entry.as_ref().unwrap().body {
        Some(entry::Body::Transition(t)) => t.clone(),
        other => panic!("expected a transition, got {other:?}"),
    };
    assert_eq!(t.action(), Action::Respond);

    // Read receipt: the resident sees that the worker read up to their message.
    a.mark_read(p.id, 3).await.unwrap();
    let r = expect_event(&mut resident, "read receipt", |e| {
        matches!(&e.kind, Some(event::Kind::ReadReceipt(_)))
    })
    .await;
    match &r.kind {
        Some(event::Kind::ReadReceipt(rr)) => {
            let mark = rr.mark.as_ref().unwrap();
            assert_eq!((mark.reader_id, mark.seq), (worker_a, 3));
        }
        _ => unreachable!(),
    }
    let detail = resident.get_petition(p.id).await.unwrap();
    assert!(
        detail
            .read_marks
            .iter()
            .any(|m| m.reader_id == worker_a && m.seq == 3)
    );

    // Transfer to worker B, who is notified; A is told it left.
    let moved = a
        .transfer(TransferPetition {
            petition_id: p.id,
            to_worker_id: worker_b,
            reason: "B负责路灯维修对接".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved.state(), PetitionState::Transferred);
    assert_eq!(moved.assignee_id, worker_b);
    assert_ne!(
        moved.first_response_at_ms, 0,
        "a transfer keeps the first response time"
    );
    let n = expect_event(&mut b, "transferred-in notice", |e| notice(e).is_some()).await;
    assert_eq!(notice(&n).unwrap().kind(), NoticeKind::TransferredIn);
    let n = expect_event(&mut a, "transferred-out notice", |e| notice(e).is_some()).await;
    assert_eq!(notice(&n).unwrap().kind(), NoticeKind::TransferredOut);
    assert!(
        b.inbox()
            .await
            .unwrap()
            .petitions
            .iter()
            .any(|x| x.id == p.id)
    );
    assert!(
        !a.inbox()
            .await
            .unwrap()
            .petitions
            .iter()
            .any(|x| x.id == p.id)
    );

    // The new worker answers and resolves; the resident sees it and closes.
    b.send_message(p.id, "已联系路灯所，明天更换", "")
        .await
        .unwrap();
    let resolved = b.resolve(p.id, "路灯已更换，恢复照明").await.unwrap();
    assert_eq!(resolved.state(), PetitionState::Resolved);
    expect_event(&mut resident, "resolved", |e| {
        entry_added(e).is_some_and(|a| a.state() == PetitionState::Resolved)
    })
    .await;
    expect_event(&mut resident_phone, "resolved on the second device", |e| {
        entry_added(e).is_some_and(|a| a.state() == PetitionState::Resolved)
    })
    .await;
    let closed = resident.close_petition(p.id).await.unwrap();
    assert_eq!(closed.state(), PetitionState::Closed);

    // Every transition is in the history with who did it.
    let history = resident.get_history(p.id, 0, 0).await.unwrap();
    let actions: Vec<(Action, u64)> = history
        .entries
        .iter()
        .filter_map(|e| match &e.body {
            Some(entry::Body::Transition(t)) => Some((t.action(), e.author_id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            (Action::Submit, resident_id),
            (Action::Respond, worker_a),
            (Action::Transfer, worker_a),
            (Action::Respond, worker_b),
            (Action::Resolve, worker_b),
            (Action::Close, resident_id),
        ]
    );
    let seqs: Vec<u64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // My petitions, filtered by state.
    let closed_list = resident
        .list_petitions(ListPetitions {
            states: vec![PetitionState::Closed as i32],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(closed_list.petitions.len(), 1);
    let open_list = resident
        .list_petitions(ListPetitions {
            states: vec![PetitionState::Submitted as i32],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(open_list.petitions.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_with_the_same_client_id_is_acknowledged_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(submit("第一次", "same-p"))
        .await
        .unwrap();
    let again = resident
        .submit_petition(submit("第一次", "same-p"))
        .await
        .unwrap();
    assert_eq!(p.id, again.id, "resubmission returns the same petition");

    let first = resident.send_message(p.id, "hello", "dup-1").await.unwrap();
    let second = resident.send_message(p.id, "hello", "dup-1").await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.seq, second.seq);
    let history = resident.get_history(p.id, 0, 0).await.unwrap();
    let copies = history
        .entries
        .iter()
        .filter(|e| e.client_msg_id == "dup-1")
        .count();
    assert_eq!(copies, 1);
    // Client ids are scoped to the petition, and submissions apart from messages.
    let q = resident
        .submit_petition(submit("第二件", "dup-1"))
        .await
        .unwrap();
    assert_ne!(q.id, p.id);
    let other = resident.send_message(q.id, "hello", "dup-1").await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(
        server
            .county
            .store()
            .petitions_of(server.account_id("resident-01-1a"), 0, 100, |_| true)
            .unwrap()
            .len(),
        2
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_withdrawal_and_staff_filing_on_behalf() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident_id = server.account_id("resident-01-1b");
    let head = server.sign_in("head-01-1", Wire::Json).await;
    let mut resident = server.sign_in("resident-01-1b", Wire::Json).await;
    resident.subscribe(0).await.unwrap();

    // The grid head files a petition for a resident who telephoned.
    let p = head
        .submit_petition(SubmitPetition {
            category: Category::RequestForHelp as i32,
            text: "独居老人家中水管爆裂".into(),
            on_behalf_of: resident_id,
            channel: lianxin_client::v1::Channel::Phone as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(p.resident_id, resident_id);
    assert_eq!(p.channel(), lianxin_client::v1::Channel::Phone);
    assert_eq!(
        p.filed_by.as_ref().unwrap().staff_id,
        server.account_id("head-01-1")
    );
    assert_eq!(
        p.title, "独居老人家中水管爆裂",
        "title defaults to the text"
    );
    let n = expect_event(&mut resident, "filed-for-me notice", |e| {
        notice(e).is_some()
    })
    .await;
    assert_eq!(notice(&n).unwrap().petition.as_ref().unwrap().id, p.id);

    // The head responds and hands it to a co-building unit.
    head.send_message(p.id, "已通知物业", "").await.unwrap();
    let escalated = head
        .escalate(lianxin_client::v1::EscalatePetition {
            petition_id: p.id,
            target: lianxin_client::v1::EscalationTarget::CoBuildingUnit as i32,
            unit_name: "县自来水公司".into(),
            note: "需要停水抢修".into(),
        })
        .await
        .unwrap();
    assert_eq!(escalated.state(), PetitionState::Escalated);
    assert_eq!(escalated.co_building_unit, "县自来水公司");

    // A resident of another grid cannot be filed for by this head.
    let other = server.account_id("resident-02-1a");
    let refused = head
        .submit_petition(SubmitPetition {
            category: Category::Complaint as i32,
            text: "x".into(),
            on_behalf_of: other,
            ..Default::default()
        })
        .await;
    assert_eq!(code_of(refused), lianxin_client::v1::ErrorCode::Forbidden);

    // The resident withdraws another petition of theirs.
    let q = resident
        .submit_petition(submit("门口有积水", ""))
        .await
        .unwrap();
    let w = resident.withdraw(q.id, "已经自己处理了").await.unwrap();
    assert_eq!(w.state(), PetitionState::Withdrawn);
    server.stop().await;
}
