//! Text (proto3 JSON) client frames: decoding never panics (invalid UTF-8, deep nesting, huge
//! numbers, unknown fields), and what decodes re-encodes to the same value in both forms.
#![no_main]

use lianxin_protocol::codec;
use lianxin_protocol::v1::ClientFrame;
use libfuzzer_sys::fuzz_target;

/// The server's default frame limit.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    match codec::decode_json_bytes::<ClientFrame>(data, LIMIT) {
        Ok(frame) => {
            // (JSON accepts enum numbers too; one without a name has no JSON form to go back to.)
            let Ok(json) = codec::try_encode_json(&frame) else {
                return;
            };
            let back = codec::decode_json::<ClientFrame>(&json, usize::MAX)
                .expect("a re-encoded frame decodes");
            assert_eq!(back, frame);
            let bin = codec::encode_binary(&frame);
            let from_bin = codec::decode_binary::<ClientFrame>(&bin, usize::MAX)
                .expect("the binary form of a decoded frame decodes");
            assert_eq!(from_bin, frame);
        }
        Err(e) => {
            // Every failure maps to a documented error code.
            let _ = (e.code(), e.request_id(), e.to_string());
        }
    }
});
