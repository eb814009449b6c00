//! Constructors for replies, so that every reply carries its request's id.

use crate::v1::{Error, ErrorCode, Reply, ServerFrame, reply::Result as ReplyResult, server_frame};

/// A successful reply to request `id`.
pub fn ok(id: u64, result: ReplyResult) -> ServerFrame {
    ServerFrame {
        frame: Some(server_frame::Frame::Reply(Reply {
            id,
            result: Some(result),
        })),
    }
}

/// An error reply to request `id`.
pub fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ok(
        id,
        ReplyResult::Error(Error {
            code: code as i32,
            message: message.into(),
        }),
    )
}

/// A successful reply with nothing to say.
pub fn empty(id: u64) -> ServerFrame {
    ok(id, ReplyResult::Ok(crate::v1::Empty {}))
}
