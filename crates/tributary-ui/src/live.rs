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

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tributary_core::State;
use tributary_runtime::{Round, RunHandle, StreamItem};

use crate::diff::{Change, diff};
use crate::error::UiError;
use crate::source::{CancelCause, Control, Counts, Kind, Observed, observe};

/// Tokens kept per lane.
const TAIL: usize = 12;
/// Tokens per lane sent in a live update (the lane detail has all of the tail).
const TAIL_SENT: usize = 3;
/// Characters kept of one token or result text.
const TEXT_CHARS: usize = 200;
/// Item positions (for zip-round columns) kept per lane.
const COLUMNS: usize = 8;
/// Steps kept per lane.
const STEPS: usize = 32;
/// Step bars per lane sent in a live update (the lane detail has all).
const STEPS_SENT: usize = 8;
/// Pause spans kept per lane and per run.
const PAUSES: usize = 16;
/// Items of the merged stream kept.
const MERGED: usize = 5_000;

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

pub(crate) struct LiveInner {
    pub(crate) name: String,
    pub(crate) control: Control,
    pub(crate) control_on: bool,
    started: Instant,
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    version: u64,
    /// The version of the last run-wide change (pause, cancel, end).
    run_version: u64,
    lanes: Vec<Lane>,
    by_key: HashMap<String, usize>,
    merged: VecDeque<Merged>,
    merged_total: u64,
    /// A completion policy cancelled tasks: the completed ones won.
    policy_finished: bool,
    /// The parents (lanes, `""` for the run) whose children a completion
    /// policy cancelled: their completed children won.
    policy_parents: std::collections::HashSet<String>,
    ended: bool,
    max_seq: u64,
    pauses: VecDeque<Span>,
}

/// A time span in milliseconds since the run was attached.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Span {
    start: u64,
    end: Option<u64>,
}

struct Lane {
    key: String,
    parent: String,
    order: Vec<u64>,
    addressable: bool,
    index: u64,
    app_id: String,
    ended: Option<Kind>,
    action: Option<String>,
    items: u64,
    tokens: u64,
    tail: VecDeque<String>,
    columns: VecDeque<(u64, Kind)>,
    first_ms: u64,
    last_ms: u64,
    step_start_ms: u64,
    step_first_item_ms: Option<u64>,
    step_items: u64,
    steps: VecDeque<LaneStep>,
    steps_dropped: u64,
    /// Paused through this view and not resumed since.
    paused: bool,
    pauses: VecDeque<Span>,
    error: Option<String>,
    cancel_cause: Option<CancelCause>,
    version: u64,
}

struct LaneStep {
    action: String,
    kind: Kind,
    start_ms: u64,
    end_ms: u64,
    first_item_ms: Option<u64>,
    items: u64,
    result: Option<Value>,
    state: Option<State>,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Merged {
    /// The item's position in what the consumer received, from 0.
    pos: u64,
    #[serde(skip)]
    version: u64,
    at_ms: u64,
    task: String,
    index: u64,
    action: Option<String>,
    kind: Kind,
    seq: u64,
    text: String,
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

    /// Record one item the consumer received.
    pub fn record(&self, item: &StreamItem) {
        let observed = observe(item);
        let at = self.now_ms();
        self.state().record(observed, at);
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
            st.run_version = st.version;
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

    /// What changed after version `since` (everything for 0), or `None`
    /// when nothing did.
    pub(crate) fn update_since(&self, since: u64, last_counts: Option<Counts>) -> Option<Update> {
        let counts = self.counts();
        let paused = self.inner.control.is_paused();
        let cancelled = self.inner.control.is_cancelled();
        let now = self.now_ms();
        let st = self.state();
        let reset = since > st.version;
        let since = if reset { 0 } else { since };
        if since == st.version && last_counts == Some(counts) {
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
        Some(Update {
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
            },
            lanes,
            merged,
            merged_gap,
        })
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

    pub(crate) fn task_command(&self, key: &str, command: &str) -> Result<(), UiError> {
        self.check_control()?;
        {
            let st = self.state();
            if let Some(&i) = st.by_key.get(key)
                && !st.lanes[i].addressable
            {
                return Err(UiError::NestedTask {
                    run: self.inner.name.clone(),
                    task: key.to_owned(),
                });
            }
        }
        let control = &self.inner.control;
        let result = match command {
            "pause" => control.pause_task(key),
            "resume" => control.resume_task(key),
            "cancel" => control.cancel_task(key),
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

fn push_bounded<T>(queue: &mut VecDeque<T>, value: T, cap: usize) -> bool {
    let dropped = queue.len() == cap;
    if dropped {
        queue.pop_front();
    }
    queue.push_back(value);
    dropped
}

/// Text of a value for the page: strings as they are, anything else as
/// JSON, cut to a bounded length.
fn text_of(value: Option<&Value>) -> String {
    let text = match value {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    cut(text)
}

fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(TEXT_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

impl LiveState {
    fn bump_run(&mut self) {
        self.version += 1;
        self.run_version = self.version;
        // Every lane's shown status depends on the run's pause.
        let version = self.version;
        for lane in &mut self.lanes {
            if lane.ended.is_none() {
                lane.version = version;
            }
        }
    }

    fn record(&mut self, item: Observed, at: u64) {
        self.version += 1;
        let version = self.version;
        // A nested task's ancestors have lanes even before items of
        // their own.
        for depth in 1..item.path.len() {
            let key = item.path[..depth].join("/");
            let a = match self.by_key.get(&key) {
                Some(&a) => a,
                None => {
                    self.lanes.push(Lane::ancestor(&item, depth, at, version));
                    self.by_key.insert(key, self.lanes.len() - 1);
                    self.lanes.len() - 1
                }
            };
            let action = item.ancestor_actions.get(depth - 1).cloned().flatten();
            let ancestor = &mut self.lanes[a];
            if action.is_some() && ancestor.action != action && ancestor.ended.is_none() {
                ancestor.action = action;
                ancestor.version = version;
            }
        }
        let i = match self.by_key.get(&item.task_key) {
            Some(&i) => i,
            None => {
                self.lanes.push(Lane::new(&item, at));
                self.by_key
                    .insert(item.task_key.clone(), self.lanes.len() - 1);
                self.lanes.len() - 1
            }
        };
        self.max_seq = self.max_seq.max(item.seq);
        let text = match item.kind {
            Kind::Failed | Kind::Cancelled => cut(item.error.clone().unwrap_or_default()),
            _ => text_of(item.result.as_ref()),
        };
        let lane = &mut self.lanes[i];
        lane.apply(&item, &text, at);
        lane.version = version;
        if item.cancel_cause == Some(CancelCause::Policy)
            && self.policy_parents.insert(item.parent.clone())
        {
            self.policy_finished |= item.parent.is_empty();
            for lane in &mut self.lanes {
                if lane.ended == Some(Kind::Final) && lane.parent == item.parent {
                    lane.version = version;
                }
            }
        }
        push_bounded(
            &mut self.merged,
            Merged {
                pos: self.merged_total,
                version,
                at_ms: at,
                task: item.task_key,
                index: item.task_index,
                action: item.action,
                kind: item.kind,
                seq: item.seq,
                text,
            },
            MERGED,
        );
        self.merged_total += 1;
    }
}

impl Lane {
    /// The lane of `item`'s ancestor at `depth` (1 for the top-level task).
    fn ancestor(item: &Observed, depth: usize, at: u64, version: u64) -> Lane {
        let mut lane = Lane::new(item, at);
        lane.key = item.path[..depth].join("/");
        lane.parent = item.path[..depth - 1].join("/");
        lane.order = item.order[..depth].to_vec();
        lane.index = item.order[depth - 1];
        lane.addressable = depth == 1;
        lane.app_id = String::new();
        lane.version = version;
        lane
    }

    fn new(item: &Observed, at: u64) -> Lane {
        Lane {
            key: item.task_key.clone(),
            parent: item.parent.clone(),
            order: item.order.clone(),
            addressable: item.addressable,
            index: item.task_index,
            app_id: item.app_id.clone(),
            ended: None,
            action: None,
            items: 0,
            tokens: 0,
            tail: VecDeque::new(),
            columns: VecDeque::new(),
            first_ms: at,
            last_ms: at,
            step_start_ms: at,
            step_first_item_ms: None,
            step_items: 0,
            steps: VecDeque::new(),
            steps_dropped: 0,
            paused: false,
            pauses: VecDeque::new(),
            error: None,
            cancel_cause: None,
            version: 0,
        }
    }

    fn apply(&mut self, item: &Observed, text: &str, at: u64) {
        self.items += 1;
        self.last_ms = at;
        if item.action.is_some() {
            self.action.clone_from(&item.action);
        }
        push_bounded(&mut self.columns, (item.seq, item.kind), COLUMNS);
        if item.kind == Kind::Token {
            self.tokens += 1;
            self.step_items += 1;
            self.step_first_item_ms.get_or_insert(at);
            push_bounded(&mut self.tail, text.to_owned(), TAIL);
            return;
        }
        let step = LaneStep {
            action: item.action.clone().unwrap_or_default(),
            kind: item.kind,
            start_ms: self.step_start_ms,
            end_ms: at,
            first_item_ms: self.step_first_item_ms.take(),
            items: std::mem::take(&mut self.step_items),
            result: item.result.clone(),
            state: item.state.clone(),
            error: item.error.clone(),
        };
        if push_bounded(&mut self.steps, step, STEPS) {
            self.steps_dropped += 1;
        }
        self.step_start_ms = at;
        if matches!(item.kind, Kind::Final | Kind::Failed | Kind::Cancelled) {
            self.ended = Some(item.kind);
            self.paused = false;
            if let Some(p) = self.pauses.back_mut().filter(|p| p.end.is_none()) {
                p.end = Some(at);
            }
            self.error.clone_from(&item.error);
            self.cancel_cause = item.cancel_cause;
        }
    }

    fn view(&self, st: &LiveState, run_paused: bool, now: u64) -> LaneView {
        self.view_with(st, run_paused, now, STEPS_SENT)
    }

    fn view_with(&self, st: &LiveState, run_paused: bool, now: u64, bars: usize) -> LaneView {
        let status = match self.ended {
            Some(Kind::Final) => "completed",
            Some(Kind::Failed) => "failed",
            Some(Kind::Cancelled) => "cancelled",
            _ if self.paused || run_paused => "paused",
            _ => "running",
        };
        let end = if self.ended.is_some() {
            self.last_ms
        } else {
            now
        };
        LaneView {
            key: self.key.clone(),
            parent: self.parent.clone(),
            order: self.order.clone(),
            control: self.addressable,
            index: self.index,
            status,
            action: self.action.clone(),
            items: self.items,
            tokens: self.tokens,
            tail: self
                .tail
                .iter()
                .skip(self.tail.len().saturating_sub(TAIL_SENT))
                .cloned()
                .collect(),
            columns: self.columns.iter().copied().collect(),
            start_ms: self.first_ms,
            elapsed_ms: end.saturating_sub(self.first_ms),
            winner: self.ended == Some(Kind::Final) && st.policy_parents.contains(&self.parent),
            lost: self.cancel_cause == Some(CancelCause::Policy),
            paused_here: self.paused,
            error: self.error.clone(),
            steps: self
                .steps
                .iter()
                .skip(self.steps.len().saturating_sub(bars))
                .map(|s| StepBar {
                    action: s.action.clone(),
                    kind: s.kind,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                })
                .collect(),
            pauses: self.pauses.iter().copied().collect(),
        }
    }
}

// ===== what is served =====

/// An event of the live stream: the run and what changed.
#[derive(Debug, Serialize)]
pub(crate) struct Update {
    pub(crate) version: u64,
    /// The browser's copy must be replaced, not patched.
    reset: bool,
    run: RunView,
    lanes: Vec<LaneView>,
    merged: Vec<Merged>,
    /// Some merged items were not sent (too many at once, or older than
    /// what the server keeps).
    merged_gap: bool,
}

#[derive(Debug, Serialize)]
struct RunView {
    name: String,
    control: bool,
    counts: Counts,
    paused: bool,
    cancelled: bool,
    ended: bool,
    policy_finished: bool,
    lanes: usize,
    max_seq: u64,
    merged_total: u64,
    elapsed_ms: u64,
    pauses: Vec<Span>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LaneView {
    /// The task keys from the top-level task, joined by `/`.
    key: String,
    /// The parent lane (`""` for a top-level task).
    parent: String,
    /// The task indices along the path (the lanes' order).
    order: Vec<u64>,
    /// Whether the task can be paused, resumed and cancelled on its own.
    control: bool,
    index: u64,
    status: &'static str,
    action: Option<String>,
    items: u64,
    tokens: u64,
    tail: Vec<String>,
    /// The last items' (seq, kind): their seq is their zip round.
    columns: Vec<(u64, Kind)>,
    start_ms: u64,
    elapsed_ms: u64,
    winner: bool,
    lost: bool,
    paused_here: bool,
    error: Option<String>,
    steps: Vec<StepBar>,
    pauses: Vec<Span>,
}

#[derive(Debug, Serialize)]
struct StepBar {
    action: String,
    kind: Kind,
    start_ms: u64,
    end_ms: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LaneDetail {
    app_id: String,
    lane: LaneView,
    tail: Vec<String>,
    steps: Vec<LaneStepView>,
    steps_dropped: u64,
    pauses: Vec<Span>,
}

#[derive(Debug, Serialize)]
struct LaneStepView {
    action: String,
    kind: Kind,
    start_ms: u64,
    end_ms: u64,
    duration_ms: u64,
    first_item_ms: Option<u64>,
    items: u64,
    result: Option<Value>,
    error: Option<String>,
    state: Option<Value>,
    changes: Vec<Change>,
}

// ===== Tapped =====

/// A run's stream that records every item it yields into a [`LiveRun`],
/// from [`LiveRun::tap`]. Yields the same items in the same order.
///
/// # Cancel safety
///
/// As cancel safe as the wrapped stream (a `RunStream`'s `next()` is): an
/// item is recorded only when it is handed to the caller, so a `next()`
/// dropped in a `select!` records nothing and loses nothing.
#[derive(Debug)]
pub struct Tapped<S> {
    inner: S,
    run: LiveRun,
}

impl<S> Tapped<S> {
    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped stream, no longer recorded.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Stream for Tapped<S>
where
    S: Stream<Item = StreamItem> + Unpin,
{
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(item)) => self.run.record(item),
            Poll::Ready(None) => self.run.record_end(),
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
