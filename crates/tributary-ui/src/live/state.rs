//! The model of a live run: its lanes and the merged stream, bounded.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::Value;
use tributary_core::State;

use super::goal::Tally;
use super::view::{LaneView, StepBar};
use super::watch::Note;
use crate::source::{CancelCause, Kind, LanePath, Listed, Observed, Standing};

/// Tokens kept per lane.
pub(super) const TAIL: usize = 12;
/// Tokens per lane sent in a live update (the lane detail has all of the tail).
pub(super) const TAIL_SENT: usize = 3;
/// Characters kept of one token or result text.
pub(super) const TEXT_CHARS: usize = 200;
/// Item positions (for zip-round columns) kept per lane.
pub(super) const COLUMNS: usize = 8;
/// Steps kept per lane.
pub(super) const STEPS: usize = 32;
/// Step bars per lane sent in a live update (the lane detail has all).
pub(super) const STEPS_SENT: usize = 8;
/// Pause spans kept per lane and per run.
pub(super) const PAUSES: usize = 16;
/// Items of the merged stream kept.
pub(super) const MERGED: usize = 5_000;

#[derive(Default)]
pub(super) struct LiveState {
    pub(super) version: u64,
    pub(super) lanes: Vec<Lane>,
    pub(super) by_key: HashMap<String, usize>,
    pub(super) merged: VecDeque<Merged>,
    pub(super) merged_total: u64,
    /// A completion policy cancelled tasks: the completed ones won.
    pub(super) policy_finished: bool,
    /// The parents (lanes, `""` for the run) whose children a completion
    /// policy cancelled: their completed children won.
    pub(super) policy_parents: std::collections::HashSet<String>,
    pub(super) ended: bool,
    pub(super) max_seq: u64,
    pub(super) pauses: VecDeque<Span>,
    /// The counts toward completion policies, by the lane whose children
    /// they count (`""` for the run's own tasks).
    pub(super) tallies: HashMap<String, Tally>,
}

/// A time span in milliseconds since the run was attached.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Span {
    pub(super) start: u64,
    pub(super) end: Option<u64>,
}

pub(super) struct Lane {
    pub(super) key: String,
    pub(super) parent: String,
    /// The task's path, which the handle's per-task commands take.
    pub(super) path: LanePath,
    /// The task's position in its own run's task order; `None` for a
    /// nested task's ancestor known only from its descendants' items, until
    /// its own item or the handle's task list says it.
    pub(super) index: Option<u64>,
    /// Where the handle's task list last said the task stands (`None` when
    /// it was not listed).
    pub(super) standing: Option<Standing>,
    /// Whether tasks are nested in it (lanes under it).
    pub(super) nests: bool,
    pub(super) app_id: String,
    pub(super) ended: Option<Kind>,
    pub(super) action: Option<String>,
    pub(super) items: u64,
    pub(super) tokens: u64,
    pub(super) tail: VecDeque<String>,
    pub(super) columns: VecDeque<(u64, Kind)>,
    pub(super) first_ms: u64,
    pub(super) last_ms: u64,
    pub(super) step_start_ms: u64,
    pub(super) step_first_item_ms: Option<u64>,
    pub(super) step_items: u64,
    pub(super) steps: VecDeque<LaneStep>,
    pub(super) steps_dropped: u64,
    /// Paused through this view and not resumed since.
    pub(super) paused: bool,
    pub(super) pauses: VecDeque<Span>,
    pub(super) error: Option<String>,
    pub(super) cancel_cause: Option<CancelCause>,
    /// What its hooks said of its steps (with a [`StepWatch`](super::StepWatch)).
    pub(super) note: Option<Note>,
    pub(super) version: u64,
}

pub(super) struct LaneStep {
    pub(super) action: String,
    pub(super) kind: Kind,
    pub(super) start_ms: u64,
    pub(super) end_ms: u64,
    pub(super) first_item_ms: Option<u64>,
    pub(super) items: u64,
    pub(super) result: Option<Value>,
    pub(super) state: Option<State>,
    pub(super) error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Merged {
    /// The item's position in what the consumer received, from 0.
    pub(super) pos: u64,
    #[serde(skip)]
    pub(super) version: u64,
    pub(super) at_ms: u64,
    pub(super) task: String,
    pub(super) index: u64,
    pub(super) action: Option<String>,
    pub(super) kind: Kind,
    pub(super) seq: u64,
    pub(super) text: String,
}

pub(super) fn push_bounded<T>(queue: &mut VecDeque<T>, value: T, cap: usize) -> bool {
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
    pub(super) fn bump_run(&mut self) {
        self.version += 1;
        // Every lane's shown status depends on the run's pause.
        let version = self.version;
        for lane in &mut self.lanes {
            if lane.ended.is_none() {
                lane.version = version;
            }
        }
    }

    pub(super) fn record(&mut self, item: Observed, at: u64) {
        self.version += 1;
        let version = self.version;
        // A nested task's ancestors have lanes even before items of
        // their own.
        for depth in 1..item.path.depth() {
            let path = item.path.prefix(depth);
            let a = self.lane_for(path, None, at, version);
            self.lanes[a].nests = true;
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
        if lane.ended.is_some() && lane.nests {
            // A task ends after its nested tasks; a cancelled task's
            // `Cancelled` item stands for the nested tasks cancelled with it.
            self.end_subtree(i, version, at);
        }
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

impl LiveState {
    /// The lane of `path`, created (without items yet) when there is none.
    fn lane_for(&mut self, path: LanePath, index: Option<u64>, at: u64, version: u64) -> usize {
        let key = path.key();
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        self.lanes
            .push(Lane::without_items(path, index, at, version));
        self.by_key.insert(key, self.lanes.len() - 1);
        self.lanes.len() - 1
    }

    /// Mark the lanes nested under lane `i` that have not ended as ended
    /// with it: their tasks stopped with it and report nothing of their own.
    fn end_subtree(&mut self, i: usize, version: u64, at: u64) {
        let prefix = format!("{}/", self.lanes[i].key);
        let error = self.lanes[i].error.clone();
        for lane in &mut self.lanes {
            if lane.ended.is_none() && lane.key.starts_with(&prefix) {
                lane.ended = Some(Kind::Cancelled);
                lane.paused = false;
                if let Some(p) = lane.pauses.back_mut().filter(|p| p.end.is_none()) {
                    p.end = Some(at);
                }
                lane.error.clone_from(&error);
                lane.cancel_cause = Some(CancelCause::Other);
                lane.version = version;
            }
        }
    }

    /// Take in the handle's list of the tasks that have not ended: lanes
    /// for queued tasks, the indices of ancestors seen only through their
    /// descendants, and which tasks are paused (by anyone).
    pub(super) fn sync(&mut self, listed: Vec<Listed>, at: u64) {
        let mut changed = false;
        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        let version = self.version + 1;
        for task in listed {
            let before = self.lanes.len();
            let i = self.lane_for(task.path, Some(task.index), at, version);
            changed |= self.lanes.len() != before;
            let lane = &mut self.lanes[i];
            seen.insert(i);
            if lane.ended.is_some() {
                continue;
            }
            if lane.index.is_none() || lane.standing != Some(task.standing) {
                lane.index = Some(task.index);
                lane.standing = Some(task.standing);
                lane.version = version;
                changed = true;
            }
            if let Some(parent) = self.by_key.get(&self.lanes[i].parent).copied() {
                self.lanes[parent].nests = true;
            }
        }
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if lane.standing.is_some() && !seen.contains(&i) {
                lane.standing = None;
                lane.version = version;
                changed = true;
            }
        }
        if changed {
            self.version = version;
        }
    }

    /// Take in what the step watch noted of the lanes' steps.
    pub(super) fn take_notes(&mut self, notes: Vec<(LanePath, Note)>, at: u64) {
        if notes.is_empty() {
            return;
        }
        self.version += 1;
        let version = self.version;
        for (path, note) in notes {
            let i = self.lane_for(path, None, at, version);
            let lane = &mut self.lanes[i];
            if note.children_action.is_some() {
                lane.nests = true;
            }
            lane.note = Some(note);
            lane.version = version;
        }
    }

    /// The task indices from the top-level task down to lane `lane` (the
    /// lanes' order; an index not known yet sorts last).
    fn order(&self, lane: &Lane) -> Vec<u64> {
        let mut order = vec![lane.index.unwrap_or(u64::MAX)];
        let mut parent = &lane.parent;
        while let Some(&p) = self.by_key.get(parent) {
            order.push(self.lanes[p].index.unwrap_or(u64::MAX));
            parent = &self.lanes[p].parent;
        }
        order.reverse();
        order
    }
}

impl Lane {
    /// The lane of a task known before any item of its own: an ancestor
    /// of a nested task that sent one, or a task the handle lists.
    fn without_items(path: LanePath, index: Option<u64>, at: u64, version: u64) -> Lane {
        let mut lane = Lane::blank(path, at);
        lane.index = index;
        lane.version = version;
        lane
    }

    pub(super) fn new(item: &Observed, at: u64) -> Lane {
        let mut lane = Lane::blank(item.path.clone(), at);
        lane.index = Some(item.task_index);
        lane.app_id.clone_from(&item.app_id);
        lane
    }

    fn blank(path: LanePath, at: u64) -> Lane {
        Lane {
            key: path.key(),
            parent: path.parent_key(),
            path,
            index: None,
            standing: None,
            nests: false,
            app_id: String::new(),
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
            note: None,
            version: 0,
        }
    }

    pub(super) fn apply(&mut self, item: &Observed, text: &str, at: u64) {
        if self.items == 0 {
            // A lane made before the task's first item learns its own.
            self.index = Some(item.task_index);
            self.app_id.clone_from(&item.app_id);
            if self.standing == Some(Standing::Queued) {
                // Its time starts when it does.
                self.first_ms = at;
                self.step_start_ms = at;
            }
        }
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

    pub(super) fn view(&self, st: &LiveState, run_paused: bool, now: u64) -> LaneView {
        self.view_with(st, run_paused, now, STEPS_SENT)
    }

    pub(super) fn view_with(
        &self,
        st: &LiveState,
        run_paused: bool,
        now: u64,
        bars: usize,
    ) -> LaneView {
        let status = match self.ended {
            Some(Kind::Final) => "completed",
            Some(Kind::Failed) => "failed",
            Some(Kind::Cancelled) => "cancelled",
            _ if self.paused || run_paused => "paused",
            _ if self.standing == Some(Standing::Cancelling) => "cancelling",
            _ if self.standing == Some(Standing::Paused) => "paused",
            _ if self.note.as_ref().is_some_and(|n| n.retrying) => "retrying",
            _ if self.items == 0 && self.standing == Some(Standing::Queued) => "queued",
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
            order: st.order(self),
            control: true,
            index: self.index.unwrap_or(u64::MAX),
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
            step: self
                .note
                .as_ref()
                .filter(|_| self.ended.is_none())
                .and_then(|n| n.action.clone()),
            attempt: self.note.as_ref().map_or(0, |n| n.attempt),
            failures: self.note.as_ref().map_or(0, |n| n.failures),
            last_failure: self.note.as_ref().and_then(|n| n.error.clone()),
            waiting: self
                .note
                .as_ref()
                .filter(|_| self.ended.is_none())
                .and_then(|n| n.waiting.clone()),
            children_action: self.note.as_ref().and_then(|n| n.children_action.clone()),
            goal: st.tallies.get(&self.key).map(Tally::view),
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
