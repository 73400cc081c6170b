//! The tokens a step streams, kept until its end is recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// Tokens recorded per step attempt at most: the first ones.
pub(crate) const TOKENS_KEPT: usize = 256;
/// Bytes of token text recorded per step attempt at most.
pub(crate) const TOKEN_BYTES: usize = 64 * 1024;

/// The first tokens of each application's running step. An application
/// runs one step at a time, so one entry per application running a step
/// that streamed: memory is bounded by the number of steps running at once
/// times [`TOKEN_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    by_app: Mutex<HashMap<String, Kept>>,
}

#[derive(Debug)]
struct Kept {
    sequence_id: u64,
    values: Vec<Value>,
    bytes: usize,
}

fn size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 2,
        other => other.to_string().len(),
    }
}

impl Tokens {
    /// Keep `value`, the next token of `app_id`'s step `sequence_id`, if
    /// the step's bounds have room.
    pub(crate) fn push(&self, app_id: &str, sequence_id: u64, value: &Value) {
        let mut by_app = self.by_app.lock().unwrap_or_else(|e| e.into_inner());
        let kept = match by_app.get_mut(app_id) {
            Some(kept) => kept,
            None => by_app.entry(app_id.to_owned()).or_insert(Kept {
                sequence_id,
                values: Vec::new(),
                bytes: 0,
            }),
        };
        if kept.sequence_id != sequence_id {
            // A step whose end was never recorded: start over.
            *kept = Kept {
                sequence_id,
                values: Vec::new(),
                bytes: 0,
            };
        }
        let bytes = size(value);
        if kept.values.len() < TOKENS_KEPT && kept.bytes + bytes <= TOKEN_BYTES {
            kept.bytes += bytes;
            kept.values.push(value.clone());
        }
    }

    /// Forget what `app_id` kept (its step starts an attempt).
    pub(crate) fn clear(&self, app_id: &str) {
        self.by_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_id);
    }

    /// The tokens kept of `app_id`'s step `sequence_id`, forgotten here.
    pub(crate) fn take(&self, app_id: &str, sequence_id: u64) -> Option<Vec<Value>> {
        let kept = self
            .by_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_id)?;
        (kept.sequence_id == sequence_id && !kept.values.is_empty()).then_some(kept.values)
    }
}
