//! [`Goal`]: what a run's completion policy waits for, counted on its live
//! page (`2 of 3 agree`, `first 5: 3 done`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tributary_runtime::StreamItem;

type Projection = Arc<dyn Fn(&StreamItem) -> Value + Send + Sync>;

/// What a run's completion policy waits for, told to its
/// [`LiveRun`](crate::LiveRun) with [`LiveRun::goal`](crate::LiveRun::goal)
/// so that the page counts toward it: a run under `FirstN::new(n)` shows
/// how many of its tasks have succeeded of the `n` it waits for, a run
/// under `Quorum::new(k)` how many of its successful tasks agree on the
/// leading answer, of the `k` needed, and how many answers there are.
///
/// A policy does not say what it waits for, so the view is told the same
/// numbers the policy was built with. The count is of the run's own
/// tasks' finals (not those of tasks nested in them), as the policy counts,
/// in the order the consumer received them.
///
/// # Examples
///
/// ```
/// use tributary_runtime::{Quorum, RunConfig};
/// use tributary_ui::Goal;
///
/// let config = RunConfig::new().policy(Quorum::new(2));
/// let goal = Goal::quorum(2); // live.goal(goal) once the run is attached
/// # let _ = (config, goal);
/// ```
#[derive(Clone)]
pub struct Goal {
    kind: GoalKind,
    needed: u64,
    projection: Option<Projection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum GoalKind {
    FirstN,
    Quorum,
}

impl std::fmt::Debug for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Goal")
            .field("kind", &self.kind)
            .field("needed", &self.needed)
            .finish_non_exhaustive()
    }
}

impl Goal {
    /// The run waits for `n` tasks to succeed (`FirstN::new(n)`).
    pub fn first_n(n: usize) -> Self {
        Goal {
            kind: GoalKind::FirstN,
            needed: n as u64,
            projection: None,
        }
    }

    /// The run waits for `needed` successful tasks with equal results
    /// (`Quorum::new(needed)`).
    pub fn quorum(needed: usize) -> Self {
        Goal {
            kind: GoalKind::Quorum,
            needed: needed as u64,
            projection: None,
        }
    }

    /// The run waits for `needed` successful tasks whose finals project
    /// to the same value (`Quorum::new(needed).by(projection)`).
    pub fn quorum_by<F>(needed: usize, projection: F) -> Self
    where
        F: Fn(&StreamItem) -> Value + Send + Sync + 'static,
    {
        Goal {
            projection: Some(Arc::new(projection)),
            ..Goal::quorum(needed)
        }
    }

    /// The answer a final of the run's own tasks votes for.
    pub(crate) fn vote(&self, item: &StreamItem) -> Value {
        match &self.projection {
            Some(project) => project(item),
            None => item.result.clone().unwrap_or(Value::Null),
        }
    }
}

/// The count toward a [`Goal`].
pub(crate) struct Tally {
    goal: Goal,
    finals: u64,
    /// Votes by answer (as JSON text); as many entries as distinct answers,
    /// at most one per task.
    votes: HashMap<String, u64>,
}

/// The count, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TallyView {
    kind: GoalKind,
    needed: u64,
    /// Successful tasks (first-N) or the leading answer's votes (quorum).
    reached: u64,
    /// Distinct answers (quorum).
    answers: u64,
    /// The leading answer (quorum), cut to a bounded length.
    leading: Option<String>,
    met: bool,
}

impl Tally {
    pub(crate) fn new(goal: Goal) -> Self {
        Tally {
            goal,
            finals: 0,
            votes: HashMap::new(),
        }
    }

    pub(crate) fn goal(&self) -> &Goal {
        &self.goal
    }

    /// Count a final of one of the run's own tasks, voting for `vote`.
    pub(crate) fn count(&mut self, vote: Value) {
        self.finals += 1;
        if self.goal.kind == GoalKind::Quorum {
            *self.votes.entry(vote.to_string()).or_default() += 1;
        }
    }

    pub(crate) fn view(&self) -> TallyView {
        let (reached, leading) = match self.goal.kind {
            GoalKind::FirstN => (self.finals, None),
            GoalKind::Quorum => self
                .votes
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or((0, None), |(answer, n)| {
                    (*n, Some(answer.chars().take(200).collect()))
                }),
        };
        TallyView {
            kind: self.goal.kind,
            needed: self.goal.needed,
            reached,
            answers: self.votes.len() as u64,
            leading,
            met: reached >= self.goal.needed,
        }
    }
}
