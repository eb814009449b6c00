//! Frame encoding and decoding with a size limit, for both wire forms.
//!
//! Binary WebSocket frames carry protobuf; text frames carry the proto3 JSON mapping of the same
//! messages. Decoding never panics: every failure is a [`DecodeError`].

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost::{Message, Name};
use serde::{Serialize, de::DeserializeOwned};

use crate::v1::ErrorCode;

/// Which form a frame travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// Binary WebSocket frames carrying protobuf.
    Binary,
    /// Text WebSocket frames carrying the proto3 JSON mapping.
    Json,
}

/// An encoded frame, ready to be put in a WebSocket message of the matching kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Protobuf bytes for a binary frame.
    Binary(bytes::Bytes),
    /// JSON text for a text frame.
    Text(String),
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is larger than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the frame received.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The bytes are not a valid protobuf message of the expected type.
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The text is not valid JSON for the expected type.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A text frame whose payload is not UTF-8.
    #[error("text frame is not valid UTF-8")]
    InvalidUtf8,
    /// Well-formed JSON naming a top-level field (for a `ClientFrame`: a request) that this
    /// version does not know.
    #[error("unknown request {name:?}")]
    UnknownField {
        /// The frame's `id`, when it could be read.
        id: u64,
        /// The unknown field's name.
        name: String,
    },
}

impl DecodeError {
    /// The protocol error code a reply to this failure carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownField { .. } => ErrorCode::UnknownRequest,
            _ => ErrorCode::BadFrame,
        }
    }

    /// The id of the frame that failed, when it could be read (else 0).
    pub fn request_id(&self) -> u64 {
        match self {
            DecodeError::UnknownField { id, .. } => *id,
            _ => 0,
        }
    }
}

/// The JSON field names (and proto names) of each message, from the compiled descriptors.
fn known_fields(full_name: &str) -> Option<&'static HashSet<String>> {
    static FIELDS: OnceLock<HashMap<String, HashSet<String>>> = OnceLock::new();
    FIELDS
        .get_or_init(|| {
            let mut map = HashMap::new();
            let Ok(set) = prost_types::FileDescriptorSet::decode(crate::DESCRIPTOR_SET) else {
                return map;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for message in file.message_type {
                    let name = format!("{package}.{}", message.name.unwrap_or_default());
                    let fields = message
                        .field
                        .into_iter()
                        .flat_map(|f| [f.json_name, f.name].into_iter().flatten())
                        .collect();
                    map.insert(name, fields);
                }
            }
            map
        })
        .get(full_name)
}

/// After a failed decode: a well-formed JSON object with an unknown top-level field.
fn unknown_field<M: Name>(text: &str) -> Option<DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = value.as_object()?;
    let known = known_fields(&M::full_name())?;
    let name = object.keys().find(|k| !known.contains(k.as_str()))?.clone();
    let id = match object.get("id") {
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    Some(DecodeError::UnknownField { id, name })
}

fn check_size(size: usize, limit: usize) -> Result<(), DecodeError> {
    if size > limit {
        Err(DecodeError::TooLarge { size, limit })
    } else {
        Ok(())
    }
}

/// Decodes a protobuf message from a binary frame of at most `limit` bytes.
pub fn decode_binary<M: Message + Default>(bytes: &[u8], limit: usize) -> Result<M, DecodeError> {
    check_size(bytes.len(), limit)?;
    Ok(M::decode(bytes)?)
}

/// Decodes a message from the JSON of a text frame of at most `limit` bytes.
pub fn decode_json<M: DeserializeOwned + Name>(text: &str, limit: usize) -> Result<M, DecodeError> {
    check_size(text.len(), limit)?;
    serde_json::from_str(text).map_err(|e| unknown_field::<M>(text).unwrap_or(DecodeError::Json(e)))
}

/// Decodes a text frame's raw payload, which may not be UTF-8.
pub fn decode_json_bytes<M: DeserializeOwned + Name>(
    bytes: &[u8],
    limit: usize,
) -> Result<M, DecodeError> {
    check_size(bytes.len(), limit)?;
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    decode_json(text, limit)
}

/// Encodes a message as protobuf bytes.
pub fn encode_binary<M: Message>(message: &M) -> bytes::Bytes {
    bytes::Bytes::from(message.encode_to_vec())
}

/// Encodes a message as proto3 JSON.
pub fn encode_json<M: Serialize>(message: &M) -> String {
    // Serializing generated pbjson types into a String cannot fail: no maps with non-string keys,
    // no I/O. Fall back to an empty object rather than panic if that ever changes.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

/// Encodes a message as proto3 JSON, or says why it cannot be: an enum field holding a number
/// that has no name (binary frames may carry such numbers; the JSON mapping cannot).
pub fn try_encode_json<M: Serialize>(message: &M) -> Result<String, serde_json::Error> {
    serde_json::to_string(message)
}

/// Encodes a message in the given wire form.
pub fn encode<M: Message + Serialize>(message: &M, wire: Wire) -> Encoded {
    match wire {
        Wire::Binary => Encoded::Binary(encode_binary(message)),
        Wire::Json => Encoded::Text(encode_json(message)),
    }
}

/// Decodes a message from a frame's payload in the given wire form.
pub fn decode<M: Message + Default + DeserializeOwned + Name>(
    payload: &[u8],
    wire: Wire,
    limit: usize,
) -> Result<M, DecodeError> {
    match wire {
        Wire::Binary => decode_binary(payload, limit),
        Wire::Json => decode_json_bytes(payload, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ClientFrame, SendMessage, ServerFrame, client_frame::Request};
    use proptest::prelude::*;

    fn send_frame(id: u64, petition_id: u64, text: String, client_msg_id: String) -> ClientFrame {
        ClientFrame {
            id,
            request: Some(Request::SendMessage(SendMessage {
                petition_id,
                text,
                client_msg_id,
                media_ids: Vec::new(),
            })),
        }
    }

    #[test]
    fn frame_one_byte_over_the_limit_is_rejected() {
        let frame = send_frame(1, 2, "x".repeat(100), String::new());
        let bytes = encode_binary(&frame);
        let limit = bytes.len() - 1;
        let err = decode_binary::<ClientFrame>(&bytes, limit).err();
        assert!(matches!(err, Some(DecodeError::TooLarge { .. })));
        assert!(decode_binary::<ClientFrame>(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn json_uses_camel_case_and_string_integers() {
        let frame = send_frame(7, 42, "hi".into(), "c-1".into());
        let json = encode_json(&frame);
        assert_eq!(
            json,
            r#"{"id":"7","sendMessage":{"petitionId":"42","text":"hi","clientMsgId":"c-1"}}"#
        );
        let back: ClientFrame = decode_json(&json, 1024).ok().unwrap_or_default();
        assert_eq!(back, frame);
    }

    #[test]
    fn invalid_utf8_in_a_text_frame_is_a_typed_error() {
        let err = decode_json_bytes::<ClientFrame>(&[b'{', 0xff, b'}'], 1024).err();
        assert!(matches!(err, Some(DecodeError::InvalidUtf8)));
    }

    #[test]
    fn garbage_protobuf_is_a_typed_error() {
        let err = decode_binary::<ClientFrame>(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff], 1024).err();
        assert!(matches!(err, Some(DecodeError::Protobuf(_))));
    }

    #[test]
    fn deeply_nested_json_is_rejected_not_overflowed() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = decode_json::<ClientFrame>(&text, usize::MAX).err();
        assert!(matches!(err, Some(DecodeError::Json(_))));
    }

    #[test]
    fn enum_numbers_without_a_name_decode_in_binary_but_have_no_json_form() {
        use crate::v1::WatchBoard;
        let frame = ClientFrame {
            id: 3,
            request: Some(Request::WatchBoard(WatchBoard {
                range: 105,
                ..Default::default()
            })),
        };
        let back: ClientFrame = decode_binary(&encode_binary(&frame), 1024).unwrap_or_default();
        assert_eq!(back, frame);
        assert!(try_encode_json(&frame).is_err());
    }

    proptest! {
        #[test]
        fn binary_round_trip(id in any::<u64>(), pid in any::<u64>(), text in ".{0,200}", cmid in "[a-z0-9-]{0,40}") {
            let frame = send_frame(id, pid, text, cmid);
            let bytes = encode_binary(&frame);
            let back: ClientFrame = decode_binary(&bytes, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn json_round_trip(id in any::<u64>(), pid in any::<u64>(), text in ".{0,200}", cmid in "[a-z0-9-]{0,40}") {
            let frame = send_frame(id, pid, text, cmid);
            let json = encode_json(&frame);
            let back: ClientFrame = decode_json(&json, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_binary::<ClientFrame>(&bytes, 4096);
            let _ = decode_json_bytes::<ClientFrame>(&bytes, 4096);
            let _ = decode_binary::<ServerFrame>(&bytes, 4096);
        }
    }
}
