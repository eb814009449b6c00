//! An async WebSocket client for the Lianxin protocol, and a scriptable command line on top of it.
//!
//! [`Client::connect`] opens `ws://HOST:PORT/ws` with the `lianxin.v1` subprotocol, in binary
//! (protobuf) or text (proto3 JSON) frames as [`ConnectOptions::wire`] says. Requests get ids
//! from the client and wait for their reply; events of the account's feed arrive on the same
//! socket and are read with [`Client::next_event`].
//!
//! ```no_run
//! use lianxin_client::{Client, ConnectOptions};
//!
//! # async fn demo() -> Result<(), lianxin_client::ClientError> {
//! let mut client = Client::connect("ws://127.0.0.1:8080/ws", ConnectOptions::default()).await?;
//! let signed_in = client.sign_in("worker1", "secret").await?;
//! println!("token {}", signed_in.token);
//! let subscribed = client.subscribe(0).await?;
//! println!("feed head {}", subscribed.head_cursor);
//! while let Some(event) = client.next_event().await {
//!     println!("event {}", event.cursor);
//! }
//! println!("closed: {:?}", client.close_reason());
//! # Ok(())
//! # }
//! ```
//!
//! The [`cli`] module is the command-line front end (`lianxin client ...`, `lianxin report`);
//! [`report`] writes appraisal reports as CSV.

mod client;
mod error;
mod router;

pub mod cli;
pub mod report;

#[cfg(test)]
mod mock;

pub use client::{
    Client, ConnectOptions, DEFAULT_DEVICE, UploadProgress, decode_server_message,
    encode_client_frame,
};
pub use error::{ClientError, into_result, result_name};
pub use lianxin_protocol::{self, Wire, v1};
pub use tokio_tungstenite::tungstenite;
