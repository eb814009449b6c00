//! Frame codec benchmarks: encode and decode of the two hottest frames, in both wire forms.
//!
//! - `client_send_message`: the `ClientFrame` a client sends for every message (200-byte text).
//! - `server_entry_added`: the `ServerFrame` event every participant receives for it.
//!
//! Each is encoded with [`codec::encode`] and decoded with [`codec::decode`], the functions the
//! server's sessions call, under the server's default 64 KiB frame limit.
//!
//! ```sh
//! cargo bench -p lianxin-protocol --bench codec
//! ```

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lianxin_protocol::codec::{self, Encoded, Wire};
use lianxin_protocol::v1::{
    ClientFrame, Entry, EntryAdded, Event, PetitionState, Role, SendMessage, ServerFrame, TextBody,
    client_frame, entry, event, server_frame,
};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

/// The server's default `max_frame_bytes`.
const LIMIT: usize = 64 * 1024;

/// A message text of exactly 200 bytes of UTF-8 (66 Chinese characters and two ASCII).
fn text_200() -> String {
    let text: String = "楼下路灯坏了三天了，晚上很黑，老人出门不方便。"
        .chars()
        .cycle()
        .take(66)
        .chain("ok".chars())
        .collect();
    assert_eq!(text.len(), 200);
    text
}

fn send_message() -> ClientFrame {
    ClientFrame {
        id: 1_234,
        request: Some(client_frame::Request::SendMessage(SendMessage {
            petition_id: 281_474_976_710_700,
            text: text_200(),
            client_msg_id: "c-0f3a9b2e-17".into(),
            media_ids: Vec::new(),
        })),
    }
}

fn entry_added() -> ServerFrame {
    let entry = Entry {
        petition_id: 281_474_976_710_700,
        seq: 42,
        author_id: 281_474_976_710_656,
        author_name: "张晓梅".into(),
        author_role: Role::Resident as i32,
        at_ms: 1_767_225_600_000,
        client_msg_id: "c-0f3a9b2e-17".into(),
        media: Vec::new(),
        body: Some(entry::Body::Text(TextBody { text: text_200() })),
    };
    ServerFrame {
        frame: Some(server_frame::Frame::Event(Event {
            cursor: 9_876,
            at_ms: 1_767_225_600_000,
            kind: Some(event::Kind::EntryAdded(EntryAdded {
                entry: Some(entry),
                state: PetitionState::Responded as i32,
                assignee_id: 281_474_976_710_657,
            })),
        })),
    }
}

fn payload(encoded: &Encoded) -> &[u8] {
    match encoded {
        Encoded::Binary(b) => b,
        Encoded::Text(t) => t.as_bytes(),
    }
}

fn wire_name(wire: Wire) -> &'static str {
    match wire {
        Wire::Binary => "binary",
        Wire::Json => "json",
    }
}

/// Benchmarks encode and decode of `frame` in both wire forms, one frame per iteration.
fn bench_frame<M>(c: &mut Criterion, name: &str, frame: &M)
where
    M: Message + Serialize + DeserializeOwned + Default + PartialEq + prost::Name,
{
    let mut group = c.benchmark_group(format!("codec/{name}"));
    group.throughput(Throughput::Elements(1));
    for wire in [Wire::Binary, Wire::Json] {
        let encoded = codec::encode(frame, wire);
        let bytes = payload(&encoded).to_vec();
        let back: M = codec::decode(&bytes, wire, LIMIT).expect("round trip");
        assert!(back == *frame, "{name} does not round-trip in {wire:?}");

        let wire = black_box(wire);
        group.bench_function(format!("encode_{}", wire_name(wire)), |b| {
            b.iter(|| codec::encode(black_box(frame), wire))
        });
        group.bench_function(format!("decode_{}", wire_name(wire)), |b| {
            b.iter(|| codec::decode::<M>(black_box(&bytes), wire, LIMIT).expect("decodes"))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_frame(c, "client_send_message", &send_message());
    bench_frame(c, "server_entry_added", &entry_added());
}

criterion_group!(codec_benches, benches);
criterion_main!(codec_benches);
