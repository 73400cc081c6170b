//! The recorded runs of a tracker's database: the run list, a run's page
//! and a step's detail, as JSON.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::diff::diff;
use crate::error::UiError;
use crate::source::{Reads, RecordedRun, RecordedStep};

/// Roots listed at most.
const ROOTS: usize = 500;
/// Nodes of a run's tree at most.
const TREE_NODES: usize = 2_000;
/// Depth of a run's tree at most.
const TREE_DEPTH: usize = 8;
/// Lanes (direct children) of a run's waterfall at most.
const LANES: usize = 2_000;

/// The run list's filters (`/api/runs?status=failed&partition=p&since=..&until=..&q=..`);
/// times are microseconds since the Unix epoch, compared with the run's
/// creation.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunFilter {
    status: Option<String>,
    partition: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    q: Option<String>,
}

impl RunFilter {
    fn keeps(&self, run: &RecordedRun) -> bool {
        let status = self
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .is_none_or(|s| s == run.status);
        let partition = self
            .partition
            .as_deref()
            .filter(|s| !s.is_empty())
            .is_none_or(|p| run.partition_key.as_deref() == Some(p));
        let since = self.since.is_none_or(|t| run.created_at >= t);
        let until = self.until.is_none_or(|t| run.created_at <= t);
        let q = self
            .q
            .as_deref()
            .filter(|s| !s.is_empty())
            .is_none_or(|q| run.app_id.contains(q));
        status && partition && since && until && q
    }
}

/// From the first step's start to the last record: what a clock on the
/// wall says, pauses and the gaps between a crash and the resume included.
fn wall(run: &RecordedRun, steps: &[RecordedStep]) -> Option<i64> {
    let start = steps.iter().map(|s| s.started_at).min()?;
    let end = steps
        .iter()
        .map(|s| s.ended_at.unwrap_or(s.started_at))
        .max()?
        .max(run.ended_at.unwrap_or(i64::MIN));
    Some(end - start)
}

/// The active time: how long a step of the run was running, the union of
/// its attempts' spans. The time between steps (a paused run waits there)
/// and between a crash and the resume is left out. An attempt not ended
/// counts up to `now` while the run is running, and not at all otherwise
/// (its process died without a record of when).
fn active(run: &RecordedRun, steps: &[RecordedStep], now: i64) -> Option<i64> {
    let mut spans: Vec<(i64, i64)> = steps
        .iter()
        .filter_map(|s| match s.ended_at {
            Some(end) => Some((s.started_at, end.max(s.started_at))),
            None if run.status == "running" => Some((s.started_at, now.max(s.started_at))),
            None => None,
        })
        .collect();
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let (mut total, mut open) = (0i64, spans[0]);
    for &(start, end) in &spans[1..] {
        if start > open.1 {
            total += open.1 - open.0;
            open = (start, end);
        } else {
            open.1 = open.1.max(end);
        }
    }
    Some(total + (open.1 - open.0))
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Root runs (spawned by nothing recorded here), newest first, each with
/// its descendants collapsed into counts by status.
pub(crate) fn run_list(reads: &Reads<'_>, filter: &RunFilter) -> Result<Value, UiError> {
    let runs = reads.runs()?;
    let known: HashMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.app_id.as_str(), i))
        .collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        match run.spawned_by.as_deref().filter(|p| known.contains_key(p)) {
            Some(parent) => children.entry(parent).or_default().push(i),
            None => roots.push(i),
        }
    }
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut partitions: BTreeMap<&str, u64> = BTreeMap::new();
    for &i in &roots {
        *by_status.entry(runs[i].status).or_default() += 1;
        if let Some(p) = runs[i].partition_key.as_deref() {
            *partitions.entry(p).or_default() += 1;
        }
    }
    let mut kept: Vec<usize> = roots
        .iter()
        .copied()
        .filter(|&i| filter.keeps(&runs[i]))
        .collect();
    kept.sort_by(|&a, &b| runs[b].created_at.cmp(&runs[a].created_at));
    let matched = kept.len();
    kept.truncate(ROOTS);
    let mut rows = Vec::with_capacity(kept.len());
    let now = now_micros();
    for i in kept {
        let run = &runs[i];
        // Descendants, counted by status.
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut total = 0u64;
        let mut stack = children
            .get(run.app_id.as_str())
            .cloned()
            .unwrap_or_default();
        while let Some(c) = stack.pop() {
            total += 1;
            *counts.entry(runs[c].status).or_default() += 1;
            if let Some(more) = children.get(runs[c].app_id.as_str()) {
                stack.extend(more);
            }
        }
        let steps = reads.steps(&run.app_id)?;
        let items: u64 = steps.iter().map(|s| s.items).sum();
        rows.push(json!({
            "run": run,
            "duration_us": active(run, &steps, now),
            "wall_us": wall(run, &steps),
            "items": items,
            "descendants": { "total": total, "by_status": counts },
        }));
    }
    Ok(json!({
        "roots": rows,
        "matched": matched,
        "shown_at_most": ROOTS,
        "by_status": by_status,
        "partitions": partitions,
    }))
}

fn step_bar(s: &RecordedStep) -> Value {
    json!({
        "sequence_id": s.sequence_id,
        "attempt": s.attempt,
        "action": s.action,
        "status": s.status,
        "started_at": s.started_at,
        "ended_at": s.ended_at,
        "items": s.items,
        "error": s.error,
    })
}

fn tree(
    reads: &Reads<'_>,
    run: &RecordedRun,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, UiError> {
    let mut nodes = Vec::new();
    let mut truncated = false;
    if depth < TREE_DEPTH {
        for child in reads.children(&run.app_id)? {
            if *budget == 0 {
                truncated = true;
                break;
            }
            *budget -= 1;
            nodes.push(tree(reads, &child, depth + 1, budget)?);
        }
    } else {
        truncated = !reads.children(&run.app_id)?.is_empty();
    }
    Ok(json!({
        "app_id": run.app_id,
        "status": run.status,
        "steps": run.steps,
        "attempts": run.attempts,
        "spawn_sequence_id": run.spawn_sequence_id,
        "spawn_action": run.spawn_action,
        "duration_us": active(run, &reads.steps(&run.app_id)?, now_micros()),
        "children": nodes,
        "truncated": truncated,
    }))
}

/// A run's page: its summary, its steps (every attempt), its subgraph tree
/// in task order, and the steps of each child for the waterfall.
pub(crate) fn run_detail(reads: &Reads<'_>, app_id: &str) -> Result<Value, UiError> {
    let run = reads
        .run(app_id)?
        .ok_or_else(|| UiError::UnknownApp(app_id.to_owned()))?;
    let recorded = reads.steps(app_id)?;
    let steps: Vec<Value> = recorded.iter().map(step_bar).collect();
    let mut budget = TREE_NODES;
    let tree = tree(reads, &run, 0, &mut budget)?;
    let children = reads.children(app_id)?;
    let mut lanes = Vec::new();
    for child in children.iter().take(LANES) {
        let bars: Vec<Value> = reads.steps(&child.app_id)?.iter().map(step_bar).collect();
        lanes.push(json!({
            "app_id": child.app_id,
            "status": child.status,
            "spawn_sequence_id": child.spawn_sequence_id,
            "spawn_action": child.spawn_action,
            "steps": bars,
        }));
    }
    Ok(json!({
        "duration_us": active(&run, &recorded, now_micros()),
        "wall_us": wall(&run, &recorded),
        "run": run,
        "steps": steps,
        "tree": tree,
        "lanes": lanes,
        "lanes_total": children.len(),
    }))
}

/// A step's detail: the attempt asked for (the last by default), the
/// other attempts, and the state diff against the previous completed step.
pub(crate) fn step_detail(
    reads: &Reads<'_>,
    app_id: &str,
    sequence_id: u64,
    attempt: Option<u32>,
) -> Result<Value, UiError> {
    let steps = reads.steps(app_id)?;
    let unknown = || UiError::UnknownStep {
        app_id: app_id.to_owned(),
        sequence_id,
    };
    let attempts: Vec<&RecordedStep> = steps
        .iter()
        .filter(|s| s.sequence_id == sequence_id)
        .collect();
    let step = match attempt {
        Some(a) => attempts.iter().find(|s| s.attempt == a).copied(),
        None => attempts.last().copied(),
    }
    .ok_or_else(unknown)?;
    let previous = steps
        .iter()
        .rev()
        .find(|s| s.sequence_id < sequence_id && s.status == "completed" && s.state.is_some());
    let empty = Value::Object(Default::default());
    let before = previous.and_then(|p| p.state.as_ref()).unwrap_or(&empty);
    let changes = step.state.as_ref().map(|after| diff(before, after));
    let spawned: Vec<String> = reads
        .children(app_id)?
        .into_iter()
        .filter(|c| c.spawn_sequence_id == Some(sequence_id))
        .map(|c| c.app_id)
        .collect();
    Ok(json!({
        "app_id": app_id,
        "step": step,
        "duration_us": step.ended_at.map(|e| e - step.started_at),
        "attempts": attempts.iter().map(|s| step_bar(s)).collect::<Vec<_>>(),
        "previous_sequence_id": previous.map(|p| p.sequence_id),
        "changes": changes,
        "spawned": spawned,
        // Recorded from schema version 4 on; older databases have neither.
        "inputs": step.inputs,
        "tokens": step.tokens,
        "tokens_recorded": step.tokens.as_ref().map_or(0, Vec::len),
    }))
}
