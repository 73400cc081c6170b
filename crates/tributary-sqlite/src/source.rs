//! [`RunSource`]: reading what a tracker recorded, whichever database holds
//! it.
//!
//! The trackers of every backend keep the same rows (`apps`: one per
//! application; `steps`: one per attempt of each step). A backend's reader
//! implements [`TrackerRows`], which only fetches and decodes those rows;
//! every [`TrackerRows`] is a [`RunSource`], which derives what the rows do
//! not say outright (retries, resumes, the gaps when no process ran an
//! application, runs whose process has died) in one place, so every
//! backend reports the same runs for the same rows.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_core::ParentPointer;

use crate::process;
use crate::runs::{Gap, RunStatus, RunSummary, StepPaused, TrackedStep, TrackedStepStatus};

/// Reads the runs a tracker recorded: [`RunReader`](crate::RunReader) for a
/// SQLite file, and any [`TrackerRows`] of another backend.
///
/// A blocking reader, for tools like the `tributary` command; from async
/// code, call it inside `spawn_blocking`.
pub trait RunSource {
    /// What the backend reports when it cannot read.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Every tracked application, children included, oldest first.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn runs(&self) -> Result<Vec<RunSummary>, Self::Error>;

    /// The applications no other application spawned, oldest first.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn roots(&self) -> Result<Vec<RunSummary>, Self::Error>;

    /// The application `app_id`, if it was tracked.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn run(&self, app_id: &str) -> Result<Option<RunSummary>, Self::Error>;

    /// The applications spawned by `app_id`, by spawning step, then in task
    /// order.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn children(&self, app_id: &str) -> Result<Vec<RunSummary>, Self::Error>;

    /// The steps of `app_id`, every attempt of each, by sequence id and
    /// attempt.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn steps(&self, app_id: &str) -> Result<Vec<TrackedStep>, Self::Error>;

    /// The durable-step journal of `app_id` (an application or a
    /// workflow), by sequence id and position: each step's journaled
    /// outcome, which a replay returns instead of running the step again.
    /// Empty for a database without a journal.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn journal(&self, app_id: &str) -> Result<Vec<JournaledStep>, Self::Error>;
}

/// One entry of the durable-step journal, as the command lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JournaledStep {
    /// The sequence id of the action's step (0 for a workflow).
    pub sequence_id: i64,
    /// The step's position among the journaled steps of the attempt.
    pub position: i64,
    /// The step's name.
    pub step: String,
    /// Which step of that name in the attempt, from 0.
    pub occurrence: i64,
    /// `step`, `sleep`, `compensation` or `event`.
    pub kind: String,
    /// `completed` or `failed`.
    pub status: String,
    /// The journaled value (JSON text), for a completed entry.
    pub value: Option<String>,
    /// The error, for a failed one.
    pub error: Option<String>,
    /// When it was written, in microseconds since the Unix epoch.
    pub written_at: i64,
    /// The execution of its (app id, sequence id) that wrote it, from 1
    /// (0: written before executions were numbered, or copied by a fork).
    #[serde(default)]
    pub execution: i64,
    /// The latest execution of its (app id, sequence id); 0 when none was
    /// numbered.
    #[serde(default)]
    pub latest_execution: i64,
    /// Whether that latest execution ran the step or replayed it from the
    /// journal; `None` when executions were not numbered.
    #[serde(default)]
    pub replay: Option<JournalReplay>,
}

/// What the latest execution of an action attempt or a workflow did with a
/// journaled step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalReplay {
    /// It ran the step (and wrote the entry).
    Run,
    /// An earlier execution wrote the entry; the latest one returned it
    /// from the journal without running the step.
    Replayed,
}

impl JournalReplay {
    /// What an entry written by execution `written` is to execution
    /// `latest`; `None` when `latest` is 0 (executions not numbered).
    pub fn of(written: i64, latest: i64) -> Option<Self> {
        match latest {
            0 => None,
            _ if written >= latest => Some(JournalReplay::Run),
            _ => Some(JournalReplay::Replayed),
        }
    }

    /// `run` or `replayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalReplay::Run => "run",
            JournalReplay::Replayed => "replayed",
        }
    }
}

/// Which applications [`TrackerRows::apps`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppFilter<'a> {
    /// Every application, oldest first (by `created_at`, then app id).
    All,
    /// Those with no spawning parent, oldest first.
    Roots,
    /// The one with this app id.
    One(&'a str),
    /// Those spawned by this app id, by spawning sequence id, then task
    /// index (those without one after), then spawn time, creation time and
    /// app id.
    ChildrenOf(&'a str),
}

/// The rows of a tracker's database, fetched and decoded by one backend.
/// Every implementation is a [`RunSource`].
pub trait TrackerRows {
    /// What the backend reports when it cannot read.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The applications `filter` selects, in its order, each decoded with
    /// [`AppRecord::into_summary`] (a row that cannot be decoded becomes a
    /// [`RunStatus::Unreadable`] summary, not an error).
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn apps(&self, filter: AppFilter<'_>) -> Result<Vec<RunSummary>, Self::Error>;

    /// Every attempt of every step of `app_id`, by sequence id and attempt,
    /// each decoded with [`StepRecord::into_step`].
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn step_rows(&self, app_id: &str) -> Result<Vec<TrackedStep>, Self::Error>;

    /// What the timeline needs of each attempt of `app_id`, in the same
    /// order.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn marks(&self, app_id: &str) -> Result<Vec<StepMark>, Self::Error>;

    /// The last time `process` recorded anything: the end (or, while it
    /// ran, the start) of the last step it started, in any application.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn last_heard(&self, process: &str) -> Result<Option<i64>, Self::Error>;

    /// The journal rows of `app_id`, by sequence id and position (none when
    /// the database has no journal).
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot read.
    fn journal_rows(&self, app_id: &str) -> Result<Vec<JournaledStep>, Self::Error>;
}

/// What the timeline of a run needs of one step attempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct StepMark {
    /// The step's sequence id.
    pub sequence_id: i64,
    /// Its status as stored (`running`, `completed`, `failed`, ...).
    pub status: String,
    /// When it started.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// The process that ran it.
    pub process: Option<String>,
}

impl StepMark {
    /// A mark from its columns.
    pub fn new(
        sequence_id: i64,
        status: String,
        started_at: i64,
        ended_at: Option<i64>,
        process: Option<String>,
    ) -> Self {
        StepMark {
            sequence_id,
            status,
            started_at,
            ended_at,
            process,
        }
    }
}

/// One row of `apps` with the counts a reader adds, as a backend other
/// than SQLite returns it (deserialised from a row whose columns bear
/// these names).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct AppRecord {
    /// The application.
    pub app_id: String,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// Its status as stored (`running`, `completed`, ...).
    pub status: String,
    /// When it was first built.
    pub created_at: i64,
    /// The application it was forked from.
    pub parent_app_id: Option<String>,
    /// The step it was forked from.
    pub parent_sequence_id: Option<i64>,
    /// The action of that step.
    pub parent_action: Option<String>,
    /// The partition key of that application.
    pub parent_partition_key: Option<String>,
    /// The application that spawned it.
    pub spawn_app_id: Option<String>,
    /// The step that spawned it.
    pub spawn_sequence_id: Option<i64>,
    /// The action of that step.
    pub spawn_action: Option<String>,
    /// The partition key of the spawning application.
    pub spawn_partition_key: Option<String>,
    /// Distinct sequence ids among its steps.
    pub steps: i64,
    /// Its step attempts.
    pub attempts: i64,
    /// The first start among its steps.
    pub first_started_at: Option<i64>,
    /// The last end among its steps.
    pub last_ended_at: Option<i64>,
    /// The applications it spawned.
    pub children: i64,
    /// Its task key, when the runtime spawned it.
    pub task_key: Option<String>,
    /// JSON array of task keys.
    pub task_path: Option<String>,
    /// Its index among its sibling tasks.
    pub task_index: Option<i64>,
    /// The run id of its run.
    pub run_id: Option<String>,
    /// A name for people.
    pub label: Option<String>,
    /// The process that last ran it.
    pub process: Option<String>,
}

impl AppRecord {
    /// The summary of the row, before its timeline; a row that cannot be
    /// decoded is a [`RunStatus::Unreadable`] summary naming the problem.
    pub fn into_summary(self) -> RunSummary {
        let pointer = |app_id: Option<String>,
                       sequence_id: Option<i64>,
                       action: Option<String>,
                       partition_key: Option<String>| {
            app_id.map(|app_id| ParentPointer {
                app_id,
                sequence_id: sequence_id
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or_default(),
                action,
                partition_key,
            })
        };
        let count = |what: &str, v: i64| {
            u64::try_from(v).map_err(|_| format!("{what}: negative count {v}"))
        };
        let decoded = (|| -> Result<RunSummary, String> {
            let task_path = match &self.task_path {
                None => Vec::new(),
                Some(text) => serde_json::from_str(text).map_err(|e| format!("task path: {e}"))?,
            };
            Ok(RunSummary {
                status: self.status.parse()?,
                steps: count("steps", self.steps)?,
                attempts: count("attempts", self.attempts)?,
                children: count("children", self.children)?,
                app_id: self.app_id.clone(),
                partition_key: self.partition_key.clone(),
                created_at: self.created_at,
                parent: pointer(
                    self.parent_app_id.clone(),
                    self.parent_sequence_id,
                    self.parent_action.clone(),
                    self.parent_partition_key.clone(),
                ),
                spawning_parent: pointer(
                    self.spawn_app_id.clone(),
                    self.spawn_sequence_id,
                    self.spawn_action.clone(),
                    self.spawn_partition_key.clone(),
                ),
                started_at: self.first_started_at,
                ended_at: self.last_ended_at,
                task_key: self.task_key.clone(),
                task_path,
                task_index: self.task_index.and_then(|i| u64::try_from(i).ok()),
                run_id: self.run_id.clone(),
                label: self.label.clone(),
                process: self.process.clone(),
                retries: 0,
                resumes: 0,
                active_micros: None,
                gaps: Vec::new(),
                problem: None,
            })
        })();
        decoded.unwrap_or_else(|problem| RunSummary::unreadable(self.app_id, problem))
    }
}

/// One row of `steps`, as a backend other than SQLite returns it
/// (deserialised from a row whose columns bear these names; JSON columns
/// as text).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct StepRecord {
    /// The step's sequence id.
    pub sequence_id: i64,
    /// Which attempt at this sequence id, from 0.
    pub attempt: i64,
    /// Its action.
    pub action: String,
    /// Its status as stored (`running`, `completed`, ...).
    pub status: String,
    /// When it started.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// The action's result (JSON text).
    pub result: Option<String>,
    /// The state after it (JSON text).
    pub state: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many intermediate outputs it emitted.
    pub items: i64,
    /// The process that last ran it.
    pub process: Option<String>,
    /// Why its state or result was not recorded.
    pub unrecorded: Option<String>,
    /// The inputs it was given (JSON text; schema versions that record them).
    #[serde(default)]
    pub inputs: Option<String>,
    /// The first tokens it streamed (a JSON array as text).
    #[serde(default)]
    pub tokens: Option<String>,
    /// When it paused from inside its action (schema versions that record
    /// pauses).
    #[serde(default)]
    pub paused_at: Option<i64>,
    /// What waited.
    #[serde(default)]
    pub paused_on: Option<String>,
    /// Why.
    #[serde(default)]
    pub pause_reason: Option<String>,
    /// When it was resumed.
    #[serde(default)]
    pub resumed_at: Option<i64>,
}

impl StepRecord {
    /// The step of the row: JSON that cannot be decoded is left out and
    /// named in [`TrackedStep::unreadable`]; a row that cannot be decoded
    /// at all is a [`TrackedStepStatus::Unreadable`] step.
    pub fn into_step(self) -> TrackedStep {
        let mut unreadable = Vec::new();
        let mut json = |text: &Option<String>, what: &str| -> Option<Value> {
            let text = text.as_ref()?;
            serde_json::from_str(text)
                .map_err(|e| unreadable.push(format!("{what}: {e}")))
                .ok()
        };
        let result = json(&self.result, "result");
        let state = json(&self.state, "state");
        let inputs = json(&self.inputs, "inputs");
        let tokens = match json(&self.tokens, "tokens") {
            Some(Value::Array(tokens)) => Some(tokens),
            Some(_) => {
                unreadable.push("tokens: not an array".to_owned());
                None
            }
            None => None,
        };
        let pause = StepPaused::of(
            self.paused_at,
            self.paused_on.clone(),
            self.pause_reason.clone(),
            self.resumed_at,
        );
        let status = self.status.parse::<TrackedStepStatus>();
        let (sequence_id, attempt, items) = (
            u64::try_from(self.sequence_id),
            u32::try_from(self.attempt),
            u64::try_from(self.items),
        );
        match (status, sequence_id, attempt, items) {
            (Ok(status), Ok(sequence_id), Ok(attempt), Ok(items)) => TrackedStep {
                sequence_id,
                attempt,
                action: self.action,
                status,
                started_at: self.started_at,
                ended_at: self.ended_at,
                result,
                state,
                error: self.error,
                items,
                process: self.process,
                resumed: false,
                unrecorded: self.unrecorded,
                inputs,
                tokens,
                unreadable: (!unreadable.is_empty()).then(|| unreadable.join("; ")),
                pause,
            },
            (status, ..) => TrackedStep {
                sequence_id: u64::try_from(self.sequence_id).unwrap_or(0),
                attempt: u32::try_from(self.attempt).unwrap_or(0),
                action: self.action,
                status: TrackedStepStatus::Unreadable,
                started_at: self.started_at,
                ended_at: self.ended_at,
                result: None,
                state: None,
                error: None,
                items: 0,
                process: None,
                resumed: false,
                unrecorded: None,
                inputs: None,
                tokens: None,
                unreadable: Some(
                    status
                        .err()
                        .unwrap_or_else(|| "a negative count".to_owned()),
                ),
                pause: None,
            },
        }
    }
}

// ===== impl RunSource for every TrackerRows =====

impl<T: TrackerRows> RunSource for T {
    type Error = T::Error;

    fn runs(&self) -> Result<Vec<RunSummary>, Self::Error> {
        summaries(self, AppFilter::All)
    }

    fn roots(&self) -> Result<Vec<RunSummary>, Self::Error> {
        summaries(self, AppFilter::Roots)
    }

    fn run(&self, app_id: &str) -> Result<Option<RunSummary>, Self::Error> {
        Ok(summaries(self, AppFilter::One(app_id))?.pop())
    }

    fn children(&self, app_id: &str) -> Result<Vec<RunSummary>, Self::Error> {
        summaries(self, AppFilter::ChildrenOf(app_id))
    }

    fn steps(&self, app_id: &str) -> Result<Vec<TrackedStep>, Self::Error> {
        let mut steps = self.step_rows(app_id)?;
        for step in &mut steps {
            if step.status == TrackedStepStatus::Running && is_dead(step.process.as_deref()) {
                step.status = TrackedStepStatus::Interrupted;
            }
        }
        mark_resumes(&mut steps);
        Ok(steps)
    }

    fn journal(&self, app_id: &str) -> Result<Vec<JournaledStep>, Self::Error> {
        let mut entries = self.journal_rows(app_id)?;
        for entry in &mut entries {
            entry.replay = JournalReplay::of(entry.execution, entry.latest_execution);
        }
        Ok(entries)
    }
}

/// The summaries `filter` selects, each with its timeline; a run whose
/// steps cannot be read is listed as unreadable, not an error for the
/// whole listing.
fn summaries<T: TrackerRows + ?Sized>(
    rows: &T,
    filter: AppFilter<'_>,
) -> Result<Vec<RunSummary>, T::Error> {
    let mut runs = rows.apps(filter)?;
    for run in &mut runs {
        if run.status != RunStatus::Unreadable {
            if let Err(e) = timeline(rows, run) {
                *run = RunSummary::unreadable(run.app_id.clone(), e.to_string());
            }
        }
    }
    Ok(runs)
}

/// Retries, resumes, active time and gaps from the steps; interrupted when
/// running and its process is gone.
fn timeline<T: TrackerRows + ?Sized>(rows: &T, run: &mut RunSummary) -> Result<(), T::Error> {
    let marks = rows.marks(&run.app_id)?;
    let mut last_end: Option<i64> = None;
    let mut previous: Option<&StepMark> = None;
    for mark in &marks {
        if let Some(prev) = previous {
            match resumption(prev, mark) {
                Some(false) => run.retries += 1,
                Some(true) => {
                    run.resumes += 1;
                    // The gap begins when the process before it was last
                    // heard of (in any app: a parent waiting on its
                    // children records nothing of its own).
                    let heard = match &prev.process {
                        Some(p) if prev.process != mark.process => rows.last_heard(p)?,
                        _ => None,
                    };
                    let from = last_end
                        .unwrap_or(prev.started_at)
                        .max(heard.unwrap_or(i64::MIN))
                        .min(mark.started_at);
                    if mark.started_at > from {
                        run.gaps.push(Gap {
                            from,
                            to: mark.started_at,
                        });
                    }
                }
                None => {}
            }
        }
        let end = mark.ended_at.unwrap_or(mark.started_at);
        last_end = Some(last_end.map_or(end, |l| l.max(end)));
        previous = Some(mark);
    }
    if let (Some(first), Some(last)) = (marks.first(), last_end) {
        let span = i128::from(last) - i128::from(first.started_at);
        let dead: i128 = run
            .gaps
            .iter()
            .map(|g| i128::from(g.to) - i128::from(g.from))
            .sum();
        run.active_micros = i64::try_from(span - dead).ok().filter(|d| *d >= 0);
    }
    if matches!(run.status, RunStatus::Running | RunStatus::Paused)
        && is_dead(run.process.as_deref())
    {
        run.status = RunStatus::Interrupted;
    }
    Ok(())
}

/// Whether `next` resumed after `prev` (`Some(true)`), retried a failure
/// (`Some(false)`) or simply followed it (`None`).
fn resumption(prev: &StepMark, next: &StepMark) -> Option<bool> {
    if prev.sequence_id == next.sequence_id {
        // Another attempt at the same step: a retry follows a failure; any
        // other end (abandoned, or still `running` because its process
        // died) means the step was picked up again.
        return Some(prev.status != "failed");
    }
    match (&prev.process, &next.process) {
        (Some(a), Some(b)) if a != b => Some(true),
        _ => None,
    }
}

fn mark_resumes(steps: &mut [TrackedStep]) {
    for i in 1..steps.len() {
        let (prev, next) = (&steps[i - 1], &steps[i]);
        let resumed = if prev.sequence_id == next.sequence_id {
            prev.status != TrackedStepStatus::Failed
        } else {
            matches!((&prev.process, &next.process), (Some(a), Some(b)) if a != b)
        };
        steps[i].resumed = resumed;
    }
}

/// Whether the process that wrote a record is known to be gone.
fn is_dead(process: Option<&str>) -> bool {
    process.and_then(process::alive) == Some(false)
}
