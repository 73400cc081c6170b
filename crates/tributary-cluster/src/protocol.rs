//! What callers and workers say to each other over the broker.
//!
//! Three kinds of queue, named under a namespace (`tributary` unless set):
//!
//! - `<ns>-tasks`: [`TaskMessage`]s, read by the group `workers` (every
//!   worker is a consumer of it, so each task goes to one worker at a time,
//!   under a lease the worker renews while it runs the task);
//! - `<ns>-items-<run>`: one per run, the [`Event`]s of the run's tasks
//!   (claims, tokens, node items, items of nested children, ends), read by
//!   the caller; and one per *channel* of a nested run (the children of one
//!   parallel action under one claim of its task), read by the worker that
//!   holds the parent;
//! - `<ns>-control`: [`Control`] messages for the fleet, read by every worker
//!   in a group of its own (so each worker sees every message);
//! - `<ns>-census-<id>`: the workers' answers to one census
//!   ([`WorkerBeat`](crate::WorkerBeat)s), read by its asker and removed after.
//!
//! Every message is JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_core::{Inputs, State};
use tributary_runtime::TaskError;

/// The protocol's version, carried by every task message; a worker refuses
/// (dead-letters) a task of another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// One task for the fleet: data only, its graph named.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskMessage {
    /// [`PROTOCOL_VERSION`] of the caller.
    pub version: u32,
    /// The run's id.
    pub run: String,
    /// The task's position in the run's task order.
    pub index: u64,
    /// The task's key.
    pub key: String,
    /// The app id its checkpoints live under.
    pub app_id: String,
    /// The registered graph to run.
    pub graph: String,
    /// The initial state.
    pub state: State,
    /// The action to start at, when not the graph's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Halt after any of these actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halt_after: Vec<String>,
    /// Halt before any of these actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halt_before: Vec<String>,
    /// Inputs for every step.
    #[serde(default)]
    pub inputs: Inputs,
    /// Whether the caller wants the task's tokens.
    pub tokens: bool,
    /// Whether the caller wants the task's node items.
    pub nodes: bool,
    /// Claims of earlier publications of this task: a dead-lettered task
    /// published again carries the deliveries it used, and a worker's claim
    /// epoch is this plus the delivery's attempt, so the new claims outrank
    /// the old ones (for the persister's fencing and for the caller).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_claims: u32,
    /// Where the task's events go and its control comes from, when not
    /// the run's own items queue: a child of a parallel action reports to
    /// the claim of its parent (its nested run's channel), which relays it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Added to the claim's epoch for the persister's fencing: a child's
    /// is its parent claim's fencing epoch shifted left by 16 bits, so the
    /// children a new owner of the parent starts outrank those of the
    /// parent's earlier claims.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub fence_base: u64,
}

impl TaskMessage {
    /// The channel the task's events and control travel on: its
    /// [`channel`](Self::channel), or else its run.
    pub fn channel(&self) -> &str {
        self.channel.as_deref().unwrap_or(&self.run)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// How a task ended, as a worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WireEnd {
    /// It reached its halt point.
    Final {
        /// The action whose result ends it.
        action: Option<String>,
        /// That action's result.
        result: Option<Value>,
        /// The final state.
        state: State,
    },
    /// It failed.
    Failed {
        /// The action that failed.
        action: Option<String>,
        /// Why.
        error: TaskError,
    },
    /// It was cancelled on the worker.
    Cancelled {
        /// The action it would have run next.
        action: Option<String>,
    },
}

/// What a worker reports about a task, on the run's items queue.
///
/// `epoch` is the claim's number (the delivery's attempt): a caller ignores
/// events of an older claim than the newest it has seen, so a worker that
/// lost its claim cannot speak for the task any more. `step` is the number
/// of the step an item belongs to, counted from the task's first step
/// across claims (a new owner starts counting where the checkpoint it
/// resumed from ends), so a caller drops the items of steps it already
/// delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A worker claimed the task and starts it at step `step`.
    Claimed {
        /// The task's index.
        task: u64,
        /// The claim's epoch.
        epoch: u32,
        /// The worker's name.
        worker: String,
        /// The first step this claim runs (steps before it are checkpointed).
        step: u64,
    },
    /// A worker that does not know the task's graph handed it back.
    Refused {
        /// The task's index.
        task: u64,
        /// The worker's name.
        worker: String,
        /// The graph it does not know.
        graph: String,
    },
    /// A token of step `step`.
    Token {
        /// The task's index.
        task: u64,
        /// The claim's epoch.
        epoch: u32,
        /// The step it belongs to.
        step: u64,
        /// The action that emitted it.
        action: Option<String>,
        /// The token.
        value: Value,
    },
    /// Step `step` completed (not the task's last).
    Node {
        /// The task's index.
        task: u64,
        /// The claim's epoch.
        epoch: u32,
        /// The step.
        step: u64,
        /// Its action.
        action: String,
        /// Its result.
        result: Value,
        /// The state after it.
        state: State,
    },
    /// An item of a task nested in this one (a child of one of its
    /// parallel actions), its path relative to this task.
    Nested {
        /// The task's index.
        task: u64,
        /// The claim's epoch.
        epoch: u32,
        /// The item; its `path` starts at the child's own key.
        item: Box<tributary_runtime::StreamItem>,
    },
    /// The task ended.
    End {
        /// The task's index.
        task: u64,
        /// The claim's epoch.
        epoch: u32,
        /// How.
        #[serde(flatten)]
        end: WireEnd,
    },
}

impl Event {
    /// The index of the task the event is about.
    pub fn task(&self) -> u64 {
        match self {
            Event::Claimed { task, .. }
            | Event::Refused { task, .. }
            | Event::Token { task, .. }
            | Event::Node { task, .. }
            | Event::Nested { task, .. }
            | Event::End { task, .. } => *task,
        }
    }
}

/// What a caller tells the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Control {
    /// Pause a task between steps.
    Pause {
        /// The run.
        run: String,
        /// The task's index.
        task: u64,
    },
    /// Resume a paused task.
    Resume {
        /// The run.
        run: String,
        /// The task's index.
        task: u64,
    },
    /// Cancel a task (its subtree with it).
    Cancel {
        /// The run.
        run: String,
        /// The task's index.
        task: u64,
    },
    /// Pause, resume or cancel a task below a task (a child of one of its
    /// parallel actions, wherever it runs): the worker holding `task`
    /// passes it on to its own run, which sends it on to the child's
    /// worker.
    Below {
        /// The run.
        run: String,
        /// The index of the task it is below.
        task: u64,
        /// The path below that task (its first key is a child's key).
        path: Vec<String>,
        /// What to do.
        what: BelowOp,
    },
    /// The run's caller is alive; it will say so again within `ttl_ms`.
    Alive {
        /// The run.
        run: String,
        /// Milliseconds until the caller counts as gone.
        ttl_ms: u64,
    },
    /// The run ended: whatever is left of it is to be dropped.
    Ended {
        /// The run.
        run: String,
    },
    /// Every worker is to say what it holds (a
    /// [`WorkerBeat`](crate::WorkerBeat)) on the queue
    /// `<ns>-<census>`, which the asker reads and then removes.
    Census {
        /// The census's name: `census-` and 32 hex digits.
        census: String,
        /// No answer after this (milliseconds since the Unix epoch): the
        /// asker removes the queue soon after.
        until_ms: u64,
    },
}

impl Control {
    /// The run the message is about (none for a census).
    pub fn run(&self) -> Option<&str> {
        match self {
            Control::Pause { run, .. }
            | Control::Resume { run, .. }
            | Control::Cancel { run, .. }
            | Control::Below { run, .. }
            | Control::Alive { run, .. }
            | Control::Ended { run } => Some(run),
            Control::Census { .. } => None,
        }
    }
}

/// What a [`Control::Below`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BelowOp {
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Cancel it.
    Cancel,
}

/// A protocol message as the JSON bytes a queue carries.
pub(crate) fn encode<T: Serialize>(message: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(message).expect("protocol messages serialize"))
}

/// The name of the items queue of `run` under `namespace`: the run id with
/// every character that is not a letter, digit, `-` or `_` replaced by `_`,
/// and a hash of the id appended when anything was replaced (so two ids
/// never share a queue).
pub fn items_queue_name(namespace: &str, run: &str) -> String {
    let clean: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == run {
        format!("{namespace}-items-{run}")
    } else {
        // FNV-1a: stable across processes and versions (std's hasher is not).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in run.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{namespace}-items-{clean}-{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_queue_names_are_safe_and_distinct() {
        assert_eq!(items_queue_name("t", "run-1_a"), "t-items-run-1_a");
        let a = items_queue_name("t", "run/1");
        let b = items_queue_name("t", "run:1");
        assert!(a.starts_with("t-items-run_1-"));
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = Event::End {
            task: 3,
            epoch: 2,
            end: WireEnd::Cancelled {
                action: Some("b".into()),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""event":"end""#), "{text}");
        assert!(text.contains(r#""end":"cancelled""#), "{text}");
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back.task(), 3);
    }
}
