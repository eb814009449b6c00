//! Binary (protobuf) client frames: decoding never panics, and what decodes re-encodes to a
//! frame that decodes to the same value.
#![no_main]

use lianxin_protocol::codec;
use lianxin_protocol::v1::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

/// The server's default frame limit.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = codec::decode_binary::<ClientFrame>(data, LIMIT) {
        let again = codec::encode_binary(&frame);
        let back = codec::decode_binary::<ClientFrame>(&again, usize::MAX)
            .expect("a re-encoded frame decodes");
        assert_eq!(back, frame);
        // Its JSON form, when it has one, means the same. (Binary frames may carry enum numbers
        // without a name, which JSON cannot express: the requests refuse those themselves.)
        if let Ok(json) = codec::try_encode_json(&frame) {
            let from_json = codec::decode_json::<ClientFrame>(&json, usize::MAX)
                .expect("the JSON form of a decoded frame decodes");
            assert_eq!(from_json, frame);
        }
    }
    // Clients decode the server's frames with the same code.
    let _ = codec::decode_binary::<ServerFrame>(data, LIMIT);
});
