//! The Lianxin wire protocol.
//!
//! - [`v1`]: the message types generated from `proto/lianxin/v1/*.proto` (the source of truth for
//!   every client), with their proto3 JSON mapping.
//! - [`codec`]: turning WebSocket frames into [`v1::ClientFrame`]s and [`v1::ServerFrame`]s and back,
//!   with size limits, for both the binary (protobuf) and the text (JSON) form.
//! - [`reply`]: small constructors for replies and errors.

pub mod codec;
pub mod reply;

/// Types generated from `proto/lianxin/v1`.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/lianxin.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/lianxin.v1.serde.rs"));
}

/// The WebSocket subprotocol that names this protocol version.
pub const SUBPROTOCOL: &str = "lianxin.v1";

/// The compiled descriptor set of all `.proto` files (for reflection and tooling).
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lianxin_descriptor.bin"));

pub use codec::{DecodeError, Wire};
