//! The event plane: what producers publish and consumers receive.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::connector::{ConnectorDescriptor, Key};
use crate::error::EventDecodeError;

/// Metadata of one object, free-form JSON; filters look at it.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// One event of a topic.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A small object carried in the event itself (a topic without store).
    Inline {
        /// The encoded object.
        data: Bytes,
        /// Its metadata.
        metadata: Metadata,
    },
    /// An object in a store, referenced by key.
    Object {
        /// The object's key.
        key: Key,
        /// The connector holding it.
        connector: ConnectorDescriptor,
        /// Whether its first resolve removes it.
        evict: bool,
        /// Its metadata.
        metadata: Metadata,
    },
    /// The producer closed the topic.
    EndOfStream,
}

/// What one flush of one producer's topic publishes: its events, in order.
///
/// `seq` numbers a producer's batches on a topic from 0 without holes, so a
/// consumer detects lost batches (a jump) and duplicates (a repeat, for
/// example a redelivery) per producer.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBatch {
    /// The topic.
    pub topic: String,
    /// The producer's id, unique per producer.
    pub producer: String,
    /// The batch's sequence number within (producer, topic).
    pub seq: u64,
    /// The events.
    pub events: Vec<Event>,
}

const MAGIC: &[u8; 4] = b"TRBE";
const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    topic: String,
    producer: String,
    seq: u64,
    events: Vec<WireEvent>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    Inline {
        len: usize,
        metadata: Metadata,
    },
    Object {
        key: Key,
        connector: ConnectorDescriptor,
        evict: bool,
        metadata: Metadata,
    },
    End,
}

impl EventBatch {
    /// Encodes the batch: a magic, a JSON header, then the inline payloads
    /// as raw bytes (no base64 or number arrays for binary objects).
    pub fn to_bytes(&self) -> Bytes {
        let mut payload_len = 0;
        let events = self
            .events
            .iter()
            .map(|e| match e {
                Event::Inline { data, metadata } => {
                    payload_len += data.len();
                    WireEvent::Inline {
                        len: data.len(),
                        metadata: metadata.clone(),
                    }
                }
                Event::Object {
                    key,
                    connector,
                    evict,
                    metadata,
                } => WireEvent::Object {
                    key: key.clone(),
                    connector: connector.clone(),
                    evict: *evict,
                    metadata: metadata.clone(),
                },
                Event::EndOfStream => WireEvent::End,
            })
            .collect();
        let header = Header {
            topic: self.topic.clone(),
            producer: self.producer.clone(),
            seq: self.seq,
            events,
        };
        let header = serde_json::to_vec(&header).expect("event header is plain JSON");
        let mut out = BytesMut::with_capacity(9 + header.len() + payload_len);
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u32(u32::try_from(header.len()).expect("event header under 4 GiB"));
        out.put_slice(&header);
        for e in &self.events {
            if let Event::Inline { data, .. } = e {
                out.put_slice(data);
            }
        }
        out.freeze()
    }

    /// Decodes a batch encoded by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    ///
    /// When the bytes are not such an encoding.
    pub fn from_bytes(mut bytes: Bytes) -> Result<Self, EventDecodeError> {
        if bytes.len() < 9 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(EventDecodeError::BadMagic);
        }
        bytes.advance(5);
        let header_len = bytes.get_u32() as usize;
        if bytes.len() < header_len {
            return Err(EventDecodeError::Truncated);
        }
        let header_bytes = bytes.split_to(header_len);
        let header: Header =
            serde_json::from_slice(&header_bytes).map_err(EventDecodeError::Header)?;
        let mut events = Vec::with_capacity(header.events.len());
        for e in header.events {
            events.push(match e {
                WireEvent::Inline { len, metadata } => {
                    if bytes.len() < len {
                        return Err(EventDecodeError::Truncated);
                    }
                    Event::Inline {
                        data: bytes.split_to(len),
                        metadata,
                    }
                }
                WireEvent::Object {
                    key,
                    connector,
                    evict,
                    metadata,
                } => Event::Object {
                    key,
                    connector,
                    evict,
                    metadata,
                },
                WireEvent::End => Event::EndOfStream,
            });
        }
        Ok(Self {
            topic: header.topic,
            producer: header.producer,
            seq: header.seq,
            events,
        })
    }
}
