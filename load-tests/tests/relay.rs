//! The bare relay speaks the protocol subset the scenarios use, as the Lianxin client sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lianxin_client::{Client, ClientError, ConnectOptions};
use lianxin_load::relay;
use lianxin_protocol::v1::{ErrorCode, SubmitPetition, entry, event};

async fn start() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        relay::serve(listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, stop)
}

async fn next_event(client: &mut Client) -> lianxin_protocol::v1::Event {
    tokio::time::timeout(Duration::from_secs(5), client.next_event())
        .await
        .expect("an event in time")
        .expect("the connection is open")
}

#[tokio::test]
async fn messages_are_acknowledged_and_relayed_to_the_other_participants() {
    let (url, _stop) = start().await;
    let resident = Client::connect(&url, ConnectOptions::default())
        .await
        .unwrap();
    let signed = resident
        .sign_in("resident-01-1a", "anything")
        .await
        .unwrap();
    assert!(signed.token.starts_with(relay::TOKEN_PREFIX));
    let resident_id = signed.account.unwrap().id;

    // The worker signs in with the bearer header, as the load connections do.
    let worker_token = {
        let c = Client::connect(&url, ConnectOptions::default())
            .await
            .unwrap();
        c.sign_in("worker-01-1a", "x").await.unwrap().token
    };
    let mut worker = Client::connect(
        &url,
        ConnectOptions {
            bearer_token: Some(worker_token),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(worker.subscribe(0).await.unwrap().head_cursor, 0);
    let worker_id = relay::fake_account_id("worker-01-1a");

    let petition = resident
        .submit_petition(SubmitPetition {
            worker_id,
            text: "灯坏了".into(),
            title: "灯".into(),
            ..SubmitPetition::default()
        })
        .await
        .unwrap();
    assert_eq!(petition.resident_id, resident_id);
    assert_eq!(petition.assignee_id, worker_id);
    assert_eq!(
        petition.grid_head_id,
        relay::fake_account_id("head-01-1"),
        "the grid head follows from the demo login"
    );
    let notice = next_event(&mut worker).await;
    assert_eq!(notice.cursor, 1);
    assert!(matches!(notice.kind, Some(event::Kind::PetitionNotice(_))));

    let ack = resident
        .send_message(petition.id, "在吗", "m-1")
        .await
        .unwrap();
    assert_eq!(ack.seq, 3, "after the submission and the first message");
    let added = next_event(&mut worker).await;
    assert_eq!(added.cursor, 2);
    let Some(event::Kind::EntryAdded(e)) = added.kind else {
        panic!("not an entry")
    };
    let entry = e.entry.unwrap();
    assert_eq!((entry.petition_id, entry.seq), (petition.id, ack.seq));
    assert_eq!(entry.client_msg_id, "m-1");
    assert_eq!(entry.author_id, resident_id);
    assert!(matches!(entry.body, Some(entry::Body::Text(t)) if t.text == "在吗"));

    // A late subscriber (another device of the resident) catches up from its cursor.
    let token = format!("{}resident-01-1a", relay::TOKEN_PREFIX);
    let mut device = Client::connect(&url, ConnectOptions::default())
        .await
        .unwrap();
    device.authenticate(token).await.unwrap();
    assert_eq!(device.subscribe(1).await.unwrap().head_cursor, 2);
    assert_eq!(next_event(&mut device).await.cursor, 2);

    // Outsiders and the unauthenticated are refused; unknown requests are answered.
    let stranger = Client::connect(&url, ConnectOptions::default())
        .await
        .unwrap();
    let refused = stranger.send_message(petition.id, "hi", "x").await;
    assert!(matches!(
        refused,
        Err(ClientError::Server {
            code: ErrorCode::Unauthenticated,
            ..
        })
    ));
    stranger.sign_in("resident-02-1a", "x").await.unwrap();
    let refused = stranger.send_message(petition.id, "hi", "x").await;
    assert!(matches!(
        refused,
        Err(ClientError::Server {
            code: ErrorCode::NotFound,
            ..
        })
    ));
    let unknown = stranger.my_grid().await;
    assert!(matches!(
        unknown,
        Err(ClientError::Server {
            code: ErrorCode::UnknownRequest,
            ..
        })
    ));
    assert!(stranger.ping().await.unwrap().server_time_ms > 0);
    let ahead = stranger.subscribe(99).await;
    assert!(matches!(
        ahead,
        Err(ClientError::Server {
            code: ErrorCode::InvalidArgument,
            ..
        })
    ));

    // A bad bearer token is refused before the upgrade.
    let bad = Client::connect(
        &url,
        ConnectOptions {
            bearer_token: Some("nope".into()),
            ..ConnectOptions::default()
        },
    )
    .await;
    assert!(matches!(
        bad,
        Err(ClientError::Connect {
            status: Some(401),
            ..
        })
    ));
}
