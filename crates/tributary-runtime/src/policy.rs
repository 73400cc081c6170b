//! Completion policies: when a run is done.
//!
//! A policy sees every item of the run's own tasks (not those of tasks
//! nested in them) in the order the merger receives it (terminal items as
//! soon as they arrive, whatever the merge mode) and decides:
//! continue, finish the run (every task still running is cancelled and
//! reports `Cancelled`), or cancel one task. [`JoinAll`], [`QuickExit`],
//! [`FirstN`], [`Quorum`] and [`FirstMatching`] are built in; implement
//! [`CompletionPolicy`] for your own.
//!
//! # Examples
//!
//! A policy that finishes once two tasks failed:
//!
//! ```
//! use tributary_runtime::{CompletionPolicy, Decision, ItemKind, StreamItem};
//!
//! #[derive(Debug, Clone, Default)]
//! struct TwoStrikes(u32);
//!
//! impl CompletionPolicy for TwoStrikes {
//!     fn on_item(&mut self, item: &StreamItem) -> Decision {
//!         if item.kind == ItemKind::Failed {
//!             self.0 += 1;
//!         }
//!         if self.0 >= 2 { Decision::Finish } else { Decision::Continue }
//!     }
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::item::{ItemKind, StreamItem};

/// What a [`CompletionPolicy`] decides about an item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go on.
    Continue,
    /// The run is done: cancel every task that is still running, start no
    /// new task, end the stream once every task has reported.
    Finish,
    /// Cancel the task with this key; the run goes on.
    CancelTask(Arc<str>),
}

/// Decides, item by item, when a run is done.
pub trait CompletionPolicy: Send + 'static {
    /// Called for every item of the run's own tasks the merger receives.
    fn on_item(&mut self, item: &StreamItem) -> Decision;
}

/// The run completes when every task has ended. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinAll;

impl CompletionPolicy for JoinAll {
    fn on_item(&mut self, _: &StreamItem) -> Decision {
        Decision::Continue
    }
}

/// The first successful `Final` wins: every other task is cancelled and
/// reports `Cancelled`. Failures do not win (see the failure policy).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuickExit;

impl CompletionPolicy for QuickExit {
    fn on_item(&mut self, item: &StreamItem) -> Decision {
        if item.kind == ItemKind::Final {
            Decision::Finish
        } else {
            Decision::Continue
        }
    }
}

/// Finish once `n` tasks have succeeded.
#[derive(Debug, Clone, Copy)]
pub struct FirstN {
    n: usize,
    seen: usize,
}

impl FirstN {
    /// Finish after `n` successful finals.
    pub fn new(n: usize) -> Self {
        FirstN { n, seen: 0 }
    }
}

impl CompletionPolicy for FirstN {
    fn on_item(&mut self, item: &StreamItem) -> Decision {
        if item.kind == ItemKind::Final {
            self.seen += 1;
        }
        if self.seen >= self.n {
            Decision::Finish
        } else {
            Decision::Continue
        }
    }
}

type Projection = Arc<dyn Fn(&StreamItem) -> Value + Send + Sync>;

/// Finish once `needed` successful tasks agree: their finals project to
/// the same value (by default, the same `result`).
#[derive(Clone)]
pub struct Quorum {
    needed: usize,
    projection: Projection,
    votes: Vec<(Value, usize)>,
}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quorum")
            .field("needed", &self.needed)
            .field("votes", &self.votes)
            .finish_non_exhaustive()
    }
}

impl Quorum {
    /// Finish once `needed` finals have equal results.
    pub fn new(needed: usize) -> Self {
        Quorum {
            needed,
            projection: Arc::new(|item| item.result.clone().unwrap_or(Value::Null)),
            votes: Vec::new(),
        }
    }

    /// Compare finals by `projection` instead of their whole result.
    pub fn by<F>(mut self, projection: F) -> Self
    where
        F: Fn(&StreamItem) -> Value + Send + Sync + 'static,
    {
        self.projection = Arc::new(projection);
        self
    }

    /// The value that reached the quorum, if any.
    pub fn winner(&self) -> Option<&Value> {
        self.votes
            .iter()
            .find(|(_, n)| *n >= self.needed)
            .map(|(v, _)| v)
    }
}

impl CompletionPolicy for Quorum {
    fn on_item(&mut self, item: &StreamItem) -> Decision {
        if item.kind != ItemKind::Final {
            return Decision::Continue;
        }
        let vote = (self.projection)(item);
        let count = match self.votes.iter_mut().find(|(v, _)| *v == vote) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.votes.push((vote, 1));
                1
            }
        };
        if count >= self.needed {
            Decision::Finish
        } else {
            Decision::Continue
        }
    }
}

type Predicate = Arc<dyn Fn(&StreamItem) -> bool + Send + Sync>;

/// Finish at the first successful final that passes a predicate.
#[derive(Clone)]
pub struct FirstMatching {
    predicate: Predicate,
}

impl fmt::Debug for FirstMatching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirstMatching").finish_non_exhaustive()
    }
}

impl FirstMatching {
    /// Finish at the first final for which `predicate` holds.
    pub fn new<F>(predicate: F) -> Self
    where
        F: Fn(&StreamItem) -> bool + Send + Sync + 'static,
    {
        FirstMatching {
            predicate: Arc::new(predicate),
        }
    }
}

impl CompletionPolicy for FirstMatching {
    fn on_item(&mut self, item: &StreamItem) -> Decision {
        if item.kind == ItemKind::Final && (self.predicate)(item) {
            Decision::Finish
        } else {
            Decision::Continue
        }
    }
}
