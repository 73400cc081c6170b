//! Codecs turn typed values into the bytes a connector stores.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// Encodes values of `T` to bytes and back.
///
/// Producer and consumer of a stream must use the same codec; the codec is
/// chosen by the program, never by an event.
pub trait Codec<T>: Send + Sync + fmt::Debug + 'static {
    /// The codec's name, used in errors.
    fn name(&self) -> &'static str;

    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented.
    fn encode(&self, value: &T) -> Result<Bytes, CodecError>;

    /// Decodes a value.
    ///
    /// # Errors
    ///
    /// When the bytes are not an encoding of a `T`.
    fn decode(&self, bytes: Bytes) -> Result<T, CodecError>;
}

/// JSON through serde, for any `Serialize + DeserializeOwned` type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned + 'static> Codec<T> for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                codec: "json",
                source: Box::new(e),
            })
    }

    fn decode(&self, bytes: Bytes) -> Result<T, CodecError> {
        serde_json::from_slice(&bytes).map_err(|e| CodecError::Decode {
            codec: "json",
            source: Box::new(e),
        })
    }
}

/// Raw bytes stored as they are, for [`Bytes`] and `Vec<u8>` values (large
/// binary chunks, or data already serialized by the caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &Bytes) -> Result<Bytes, CodecError> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: Bytes) -> Result<Bytes, CodecError> {
        Ok(bytes)
    }
}

impl Codec<Vec<u8>> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &Vec<u8>) -> Result<Bytes, CodecError> {
        Ok(Bytes::copy_from_slice(value))
    }

    fn decode(&self, bytes: Bytes) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.into())
    }
}
