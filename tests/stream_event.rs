//! The byte encoding of event batches.

use tributary_stream::{ConnectorDescriptor, Event, EventBatch, EventDecodeError, Key};

use crate::stream_support::meta;

fn sample() -> EventBatch {
    EventBatch {
        topic: "chunks".into(),
        producer: "producer-1".into(),
        seq: 42,
        events: vec![
            Event::Inline {
                data: bytes::Bytes::from(vec![0u8, 255, 1, 254, 10, 13]),
                metadata: meta(serde_json::json!({ "kind": "small", "n": 1 })),
            },
            Event::Object {
                key: Key::new("abc123"),
                connector: ConnectorDescriptor::new(
                    "redis",
                    serde_json::json!({ "url": "redis://127.0.0.1:6379", "prefix": "p:" }),
                ),
                evict: true,
                metadata: meta(serde_json::json!({ "kind": "large" })),
            },
            Event::Inline {
                data: bytes::Bytes::new(),
                metadata: Default::default(),
            },
            Event::EndOfStream,
        ],
    }
}

#[test]
fn an_event_batch_round_trips_through_its_bytes() {
    let batch = sample();
    let bytes = batch.to_bytes();
    assert_eq!(EventBatch::from_bytes(bytes).unwrap(), batch);
}

#[test]
fn binary_inline_payloads_are_carried_raw() {
    let big = bytes::Bytes::from(vec![7u8; 10_000]);
    let batch = EventBatch {
        topic: "t".into(),
        producer: "p".into(),
        seq: 0,
        events: vec![Event::Inline {
            data: big.clone(),
            metadata: Default::default(),
        }],
    };
    let bytes = batch.to_bytes();
    assert!(
        bytes.len() < big.len() + 200,
        "no base64 or number arrays: {} bytes",
        bytes.len()
    );
    assert_eq!(EventBatch::from_bytes(bytes).unwrap(), batch);
}

#[test]
fn malformed_bytes_are_refused_with_a_reason() {
    assert!(matches!(
        EventBatch::from_bytes(bytes::Bytes::from_static(b"nope, not an event")),
        Err(EventDecodeError::BadMagic)
    ));
    let bytes = sample().to_bytes();
    let cut = bytes.slice(..bytes.len() - 3);
    assert!(matches!(
        EventBatch::from_bytes(cut),
        Err(EventDecodeError::Truncated)
    ));
    let header_cut = bytes.slice(..20);
    assert!(matches!(
        EventBatch::from_bytes(header_cut),
        Err(EventDecodeError::Truncated)
    ));
}
