//! [`StepTokens`]: the first tokens of each running step, kept for a hook
//! that records steps until it records the step's end.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// The first tokens each application's running step streamed, for a
/// [`Hook`](crate::Hook) that records steps (the SQLite and PostgreSQL
/// trackers): [`push`](Self::push) from
/// [`Hook::on_stream_item`](crate::Hook::on_stream_item),
/// [`clear`](Self::clear) from `before_step` (an attempt starts afresh),
/// [`take`](Self::take) from `after_step`.
///
/// At most [`TOKENS_KEPT`](Self::TOKENS_KEPT) tokens and
/// [`TOKEN_BYTES`](Self::TOKEN_BYTES) bytes of their JSON are kept per step,
/// the first ones. An application runs one step at a time, so there is one
/// entry per application running a step that streamed: memory is bounded
/// by the number of steps running at once.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::StepTokens;
///
/// let tokens = StepTokens::default();
/// tokens.push("job-1", 3, &json!("rivers"));
/// tokens.push("job-1", 3, &json!("shape"));
/// assert_eq!(tokens.take("job-1", 3), Some(vec![json!("rivers"), json!("shape")]));
/// assert_eq!(tokens.take("job-1", 3), None);
/// ```
#[derive(Debug, Default)]
pub struct StepTokens {
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

impl StepTokens {
    /// Tokens kept per step attempt at most: the first ones.
    pub const TOKENS_KEPT: usize = 256;
    /// Bytes of token JSON kept per step attempt at most.
    pub const TOKEN_BYTES: usize = 64 * 1024;

    /// Keep `value`, the next token of `app_id`'s step `sequence_id`, if
    /// the step's bounds have room.
    pub fn push(&self, app_id: &str, sequence_id: u64, value: &Value) {
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
        if kept.values.len() < Self::TOKENS_KEPT && kept.bytes + bytes <= Self::TOKEN_BYTES {
            kept.bytes += bytes;
            kept.values.push(value.clone());
        }
    }

    /// Forget what `app_id` kept (its step starts an attempt).
    pub fn clear(&self, app_id: &str) {
        self.by_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_id);
    }

    /// The tokens kept of `app_id`'s step `sequence_id`, forgotten here.
    pub fn take(&self, app_id: &str, sequence_id: u64) -> Option<Vec<Value>> {
        let kept = self
            .by_app
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_id)?;
        (kept.sequence_id == sequence_id && !kept.values.is_empty()).then_some(kept.values)
    }
}
