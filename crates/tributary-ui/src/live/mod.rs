//! Live runs: what the consumer of a run received, kept in a bounded
//! model the page is served from.
//!
//! A [`LiveRun`] is attached to a [`UiServer`](crate::UiServer) with the
//! run's [`RunHandle`]. It sees the items the consumer received through a
//! [`Tapped`] stream (or [`LiveRun::record`]), in the order the consumer
//! received them, and keeps per task (a *lane*) its status, current action,
//! the tail of its tokens, its last steps and their timing; and for the
//! run, the last items in merge order. Every change takes the next
//! *version*; the event stream sends the lanes and items newer than what a
//! browser has, which is how a reconnecting browser resumes and how updates
//! are coalesced.

mod goal;
mod state;
mod tap;
mod view;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use serde_json::Value;
use tokio::time::Instant;
use tributary_core::State;
use tributary_runtime::{Round, RunHandle, StreamItem};

pub use self::goal::Goal;
use self::goal::Tally;
use self::state::Merged;
use self::state::{LiveState, PAUSES, STEPS, Span, push_bounded};
pub use self::tap::Tapped;
use self::view::{LaneDetail, LaneStepView, LaneView, RunView, Update};
pub use self::watch::StepWatch;
use crate::diff::diff;
use crate::error::UiError;
use crate::source::{Control, Counts, Kind, LanePath, observe};

// ===== LiveRun =====

/// A live run attached to the web view.
///
/// Cheap to clone. Feed it what the consumer receives: wrap the run's
/// stream with [`tap`](Self::tap), or call [`record`](Self::record) for
/// each item (and [`record_round`](Self::record_round) for zip rounds).
#[derive(Clone)]
pub struct LiveRun {
    pub(crate) inner: Arc<LiveInner>,
}

impl std::fmt::Debug for LiveRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRun")
            .field("name", &self.inner.name)
            .field("control", &self.inner.control_on)
            .finish_non_exhaustive()
    }
}

/// The counts and flags of a run, as its handle says them: a change is
/// worth an update even when no item came (a run paused by other code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pulse {
    counts: Counts,
    paused: bool,
    cancelled: bool,
}

pub(crate) struct LiveInner {
    pub(crate) name: String,
    pub(crate) control: Control,
    pub(crate) control_on: bool,
    started: Instant,
    state: Mutex<LiveState>,
    watch: Mutex<Option<StepWatch>>,
}

impl LiveRun {
    pub(crate) fn new(name: String, handle: RunHandle, control_on: bool) -> Self {
        LiveRun {
            inner: Arc::new(LiveInner {
                name,
                control: Control::new(handle),
                control_on,
                started: Instant::now(),
                state: Mutex::new(LiveState::default()),
                watch: Mutex::new(None),
            }),
        }
    }

    /// The name the run is served under (`/api/live/{name}`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the page may pause, resume and cancel this run.
    pub fn control_enabled(&self) -> bool {
        self.inner.control_on
    }

    /// Wrap the run's stream: every item it yields is recorded before the
    /// consumer gets it, and its end marks the run ended.
    pub fn tap<S>(&self, stream: S) -> Tapped<S>
    where
        S: Stream<Item = StreamItem> + Unpin,
    {
        Tapped {
            inner: stream,
            run: self.clone(),
        }
    }

    /// Show what `watch` notes of the run's steps: which step each task
    /// runs, a retried step as `retrying`, the action that runs a parent's
    /// children. Give the run's `RunConfig::hook` the watch's
    /// [`hook`](StepWatch::hook) before the run starts. A later watch
    /// replaces the first.
    pub fn watch(&self, watch: StepWatch) {
        *self.inner.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
    }

    /// Count toward what the run's completion policy waits for (see
    /// [`Goal`]): the page shows how far the run is from it. Items recorded
    /// before are not counted, so tell it before reading the stream.
    pub fn goal(&self, goal: Goal) {
        let mut st = self.state();
        st.tallies.insert(String::new(), Tally::new(goal));
        st.bump_run();
    }

    /// Count toward what the completion policy of a parallel action waits
    /// for: the policy of the children of the task of lane `lane` (a
    /// top-level task's key, or a nested task's path joined by `/`), shown
    /// on that lane. As with [`goal`](Self::goal), tell it before reading
    /// the stream.
    pub fn lane_goal(&self, lane: &str, goal: Goal) {
        let mut st = self.state();
        st.tallies.insert(lane.to_owned(), Tally::new(goal));
        st.bump_run();
    }

    /// Record one item the consumer received.
    pub fn record(&self, item: &StreamItem) {
        let observed = observe(item);
        let at = self.now_ms();
        let mut st = self.state();
        // A policy counts the finals of its own run's tasks: the children
        // of one parent (`""` for the run).
        let counted = observed.kind == Kind::Final
            && match st.tallies.get_mut(&observed.parent) {
                Some(tally) => {
                    let vote = tally.goal().vote(item);
                    tally.count(vote);
                    true
                }
                None => false,
            };
        let parent = observed.parent.clone();
        st.record(observed, at);
        if counted {
            // The parent's lane shows the count.
            let version = st.version;
            if let Some(&i) = st.by_key.get(&parent) {
                st.lanes[i].version = version;
            }
        }
    }

    /// Record one zip round the consumer received: its items in task order.
    pub fn record_round(&self, round: &Round) {
        for item in round.slots.iter().flatten() {
            self.record(item);
        }
    }

    /// Mark the run's stream ended (a [`Tapped`] stream does this itself).
    pub fn record_end(&self) {
        let mut st = self.state();
        if !st.ended {
            st.ended = true;
            st.version += 1;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> MutexGuard<'_, LiveState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- served to the page -----

    pub(crate) fn counts(&self) -> Counts {
        self.inner.control.counts()
    }

    /// What the handle says of the run now: its counts and flags.
    pub(crate) fn pulse(&self) -> Pulse {
        Pulse {
            counts: self.counts(),
            paused: self.inner.control.is_paused(),
            cancelled: self.inner.control.is_cancelled(),
        }
    }

    /// Take in the handle's list of the run's tasks that have not ended
    /// (queued tasks get their lanes before their first item).
    fn sync(&self) {
        if self.state().ended {
            return;
        }
        let listed = self.inner.control.tasks();
        let notes = self
            .inner
            .watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(StepWatch::take_changed)
            .unwrap_or_default();
        let at = self.now_ms();
        let mut st = self.state();
        st.sync(listed, at);
        st.take_notes(notes, at);
    }

    /// What changed after version `since` (everything for 0) and what the
    /// handle said then, or `None` when nothing did and the handle says
    /// what it said (`last`).
    pub(crate) fn update_since(&self, since: u64, last: Option<Pulse>) -> Option<(Update, Pulse)> {
        self.sync();
        let pulse = self.pulse();
        let Pulse {
            counts,
            paused,
            cancelled,
        } = pulse;
        let now = self.now_ms();
        let st = self.state();
        let reset = since > st.version;
        let since = if reset { 0 } else { since };
        if since == st.version && last == Some(pulse) {
            return None;
        }
        let lanes: Vec<LaneView> = st
            .lanes
            .iter()
            .filter(|l| l.version > since)
            .map(|l| l.view(&st, paused, now))
            .collect();
        let newer = st.merged.iter().filter(|m| m.version > since);
        let count = newer.clone().count();
        let skip = count.saturating_sub(500);
        let first_kept = st.merged.front().map(|m| m.version);
        let merged_gap =
            skip > 0 || (since > 0 && first_kept.is_some_and(|v| v > since + 1) && count > 0);
        let merged: Vec<Merged> = newer.skip(skip).cloned().collect();
        let update = Update {
            version: st.version,
            reset: reset || since == 0,
            run: RunView {
                name: self.inner.name.clone(),
                control: self.inner.control_on,
                counts,
                paused,
                cancelled,
                ended: st.ended,
                policy_finished: st.policy_finished,
                lanes: st.lanes.len(),
                max_seq: st.max_seq,
                merged_total: st.merged_total,
                elapsed_ms: now,
                pauses: st.pauses.iter().copied().collect(),
                goal: st.tallies.get("").map(Tally::view),
            },
            lanes,
            merged,
            merged_gap,
        };
        Some((update, pulse))
    }

    /// A lane's detail: its steps with results, states and diffs, its
    /// tokens, its pauses.
    pub(crate) fn lane_detail(&self, key: &str) -> Result<LaneDetail, UiError> {
        let paused = self.inner.control.is_paused();
        let now = self.now_ms();
        let st = self.state();
        let lane =
            st.by_key
                .get(key)
                .map(|&i| &st.lanes[i])
                .ok_or_else(|| UiError::UnknownTask {
                    run: self.inner.name.clone(),
                    task: key.to_owned(),
                })?;
        let mut previous: Option<Value> = None;
        let steps = lane
            .steps
            .iter()
            .map(|s| {
                let state = s.state.as_ref().map(State::to_json);
                let changes = match (&previous, &state) {
                    (Some(before), Some(after)) => diff(before, after),
                    (None, Some(after)) => diff(&Value::Object(Default::default()), after),
                    _ => Vec::new(),
                };
                if state.is_some() {
                    previous.clone_from(&state);
                }
                LaneStepView {
                    action: s.action.clone(),
                    kind: s.kind,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    duration_ms: s.end_ms - s.start_ms,
                    first_item_ms: s.first_item_ms.map(|f| f - s.start_ms),
                    items: s.items,
                    result: s.result.clone(),
                    error: s.error.clone(),
                    state,
                    changes,
                }
            })
            .collect();
        Ok(LaneDetail {
            app_id: lane.app_id.clone(),
            lane: lane.view_with(&st, paused, now, STEPS),
            tail: lane.tail.iter().cloned().collect(),
            steps,
            steps_dropped: lane.steps_dropped,
            pauses: lane.pauses.iter().copied().collect(),
        })
    }

    // ----- controls -----

    pub(crate) fn check_control(&self) -> Result<(), UiError> {
        if self.inner.control_on {
            Ok(())
        } else {
            Err(UiError::ControlOff(self.inner.name.clone()))
        }
    }

    pub(crate) fn command(&self, command: &str) -> Result<(), UiError> {
        self.check_control()?;
        let now = self.now_ms();
        match command {
            "pause" => {
                self.inner.control.pause();
                let mut st = self.state();
                if st.pauses.back().is_none_or(|p| p.end.is_some()) {
                    push_bounded(
                        &mut st.pauses,
                        Span {
                            start: now,
                            end: None,
                        },
                        PAUSES,
                    );
                }
                st.bump_run();
            }
            "resume" => {
                self.inner.control.resume();
                let mut st = self.state();
                if let Some(p) = st.pauses.back_mut().filter(|p| p.end.is_none()) {
                    p.end = Some(now);
                }
                st.bump_run();
            }
            "cancel" => {
                self.inner.control.cancel();
                self.state().bump_run();
            }
            other => return Err(UiError::UnknownCommand(other.to_owned())),
        }
        Ok(())
    }

    /// Pause, resume or cancel the task of lane `key` (a top-level task's
    /// key, or a nested task's path joined by `/`) by its path.
    pub(crate) fn task_command(&self, key: &str, command: &str) -> Result<(), UiError> {
        self.check_control()?;
        let path = {
            let st = self.state();
            st.by_key
                .get(key)
                .map_or_else(|| LanePath::top(key), |&i| st.lanes[i].path.clone())
        };
        let control = &self.inner.control;
        let result = match command {
            "pause" => control.pause_task(&path),
            "resume" => control.resume_task(&path),
            "cancel" => control.cancel_task(&path),
            other => return Err(UiError::UnknownCommand(other.to_owned())),
        };
        result.map_err(|_| UiError::TaskNotRunning {
            run: self.inner.name.clone(),
            task: key.to_owned(),
        })?;
        let now = self.now_ms();
        let mut st = self.state();
        st.version += 1;
        let version = st.version;
        if let Some(&i) = st.by_key.get(key) {
            let lane = &mut st.lanes[i];
            match command {
                "pause" if !lane.paused => {
                    lane.paused = true;
                    push_bounded(
                        &mut lane.pauses,
                        Span {
                            start: now,
                            end: None,
                        },
                        PAUSES,
                    );
                }
                "resume" if lane.paused => {
                    lane.paused = false;
                    if let Some(p) = lane.pauses.back_mut() {
                        p.end = Some(now);
                    }
                }
                _ => {}
            }
            lane.version = version;
        }
        Ok(())
    }
}
