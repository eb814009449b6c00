//! The one error type of the client.

use lianxin_protocol::{
    DecodeError,
    v1::{ErrorCode, Reply, reply},
};
use tokio_tungstenite::tungstenite;

/// Why a connection attempt or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened: bad URL, TCP failure or a refused WebSocket upgrade.
    #[error("cannot connect: {reason}")]
    Connect {
        /// What went wrong, for humans.
        reason: String,
        /// The HTTP status the server answered the upgrade with, when it refused it.
        status: Option<u16>,
    },
    /// The WebSocket layer failed while sending.
    #[error("websocket error: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
    /// No answer in time (connecting, or waiting for a reply).
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The connection is closed; `code` and `reason` come from the close frame when there was one.
    #[error("connection closed ({}): {reason}", code.map_or_else(|| "no close code".to_owned(), |c| c.to_string()))]
    Closed {
        /// The close frame's code, if the peer sent one.
        code: Option<u16>,
        /// The close frame's reason, or what ended the connection.
        reason: String,
    },
    /// The server answered the request with an error.
    #[error("server error {}: {message}", code.as_str_name())]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's message, for humans.
        message: String,
    },
    /// A frame could not be decoded.
    #[error("cannot decode frame: {0}")]
    Decode(#[from] DecodeError),
    /// The server answered with a success of another kind than the request calls for.
    #[error("unexpected reply: expected {expected}, got {got}")]
    UnexpectedReply {
        /// The kind of result the request calls for.
        expected: &'static str,
        /// The kind of result the server sent.
        got: String,
    },
    /// A request was sent with the id of a request that is still waiting for its reply.
    #[error("request id {0} is already waiting for a reply")]
    DuplicateId(u64),
}

impl ClientError {
    /// The server's error code, when the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a [`ClientError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Closed { .. })
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(err: tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(err))
    }
}

/// The name of a reply result's variant (as in the proto3 JSON mapping), for error messages.
pub fn result_name(result: &reply::Result) -> &'static str {
    match result {
        reply::Result::Error(_) => "error",
        reply::Result::Ok(_) => "ok",
        reply::Result::SignedIn(_) => "signedIn",
        reply::Result::Subscribed(_) => "subscribed",
        reply::Result::Pong(_) => "pong",
        reply::Result::Petition(_) => "petition",
        reply::Result::MessageAck(_) => "messageAck",
        reply::Result::Petitions(_) => "petitions",
        reply::Result::PetitionDetail(_) => "petitionDetail",
        reply::Result::History(_) => "history",
        reply::Result::Grid(_) => "grid",
        reply::Result::Board(_) => "board",
        reply::Result::Report(_) => "report",
        reply::Result::UploadStatus(_) => "uploadStatus",
        reply::Result::Media(_) => "media",
    }
}

/// Turns a reply into its success result, mapping error replies to [`ClientError::Server`].
pub fn into_result(reply: Reply) -> Result<reply::Result, ClientError> {
    match reply.result {
        None => Err(ClientError::UnexpectedReply {
            expected: "a result",
            got: "a reply without a result".to_owned(),
        }),
        Some(reply::Result::Error(err)) => Err(ClientError::Server {
            code: ErrorCode::try_from(err.code).unwrap_or(ErrorCode::Unspecified),
            message: err.message,
        }),
        Some(result) => Ok(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{Empty, Error, Pong};

    #[test]
    fn error_reply_becomes_server_error() {
        let reply = Reply {
            id: 3,
            result: Some(reply::Result::Error(Error {
                code: ErrorCode::Forbidden as i32,
                message: "no".into(),
            })),
        };
        let err = into_result(reply).err();
        assert!(matches!(
            err,
            Some(ClientError::Server { code: ErrorCode::Forbidden, ref message }) if message == "no"
        ));
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("server error ERROR_CODE_FORBIDDEN: no".to_owned())
        );
    }

    #[test]
    fn unknown_error_code_maps_to_unspecified() {
        let reply = Reply {
            id: 3,
            result: Some(reply::Result::Error(Error {
                code: 999,
                message: String::new(),
            })),
        };
        assert_eq!(
            into_result(reply).err().and_then(|e| e.code()),
            Some(ErrorCode::Unspecified)
        );
    }

    #[test]
    fn success_and_empty_replies() {
        let ok = Reply {
            id: 1,
            result: Some(reply::Result::Pong(Pong { server_time_ms: 5 })),
        };
        assert!(matches!(
            into_result(ok),
            Ok(reply::Result::Pong(Pong { server_time_ms: 5 }))
        ));
        let none = Reply {
            id: 1,
            result: None,
        };
        assert!(matches!(
            into_result(none),
            Err(ClientError::UnexpectedReply { .. })
        ));
        assert_eq!(result_name(&reply::Result::Ok(Empty {})), "ok");
    }

    #[test]
    fn closed_error_displays_code() {
        let err = ClientError::Closed {
            code: Some(4001),
            reason: "test".into(),
        };
        assert_eq!(err.to_string(), "connection closed (4001): test");
        assert!(err.is_closed());
    }
}
