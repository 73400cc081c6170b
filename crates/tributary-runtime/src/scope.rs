//! A task's scope: what a task's actions find in their context's
//! extensions, so that a parallel action nests its run under its task.

use std::sync::Arc;

use crate::handle::RunHandle;
use crate::mailbox::lane::Lane;
use crate::path::TaskPath;

/// What a task's actions find in their context's extensions: the runtime
/// they run on, their run's handle, their place in the task tree, their
/// slot and their gates, so that a parallel action nests its run under its
/// task.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_runtime::{ItemKind, RunConfig, Runtime, TaskRuntime, TaskSpec};
///
/// let who = TaskSpec::action("me", action("who").run(|s: State, _, ctx| async move {
///     let scope = ctx.extensions().get::<TaskRuntime>().expect("runs on a runtime");
///     Ok((json!({ "path": scope.path().to_string() }), s))
/// }));
/// let (_h, stream) = Runtime::new().run(vec![who], RunConfig::new());
/// let outcomes = stream.outcomes().await.unwrap();
/// assert_eq!(outcomes[0].result(), Some(&json!({ "path": "me" })));
/// # }
/// ```
#[derive(Clone)]
pub struct TaskRuntime {
    /// The task's lane holds its run, gates, token and slot.
    pub(crate) lane: Arc<Lane>,
}

impl std::fmt::Debug for TaskRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRuntime")
            .field("path", &self.lane.path)
            .finish_non_exhaustive()
    }
}

impl TaskRuntime {
    /// The handle of the task's run (to `add_task` from inside a task).
    pub fn handle(&self) -> &RunHandle {
        &self.lane.run
    }

    /// The task's key.
    pub fn key(&self) -> &str {
        self.lane.key()
    }

    /// The task's path from the root run.
    pub fn path(&self) -> &TaskPath {
        &self.lane.path
    }

    /// Pause this task from inside its own step and wait until it is
    /// resumed (through its run's handle: `resume_task`, or `resume` of a
    /// run it is in). While it waits it counts as paused in the run's
    /// progress and `RunHandle::tasks` lists it paused; time spent so does
    /// not count against its timeout. A durable step out of retries with
    /// `pause_on_exhausted` pauses this way.
    ///
    /// # Errors
    ///
    /// [`LaneClosed`](crate::LaneClosed) when the task is cancelled while
    /// it waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the task stays paused until resumed.
    pub async fn pause_and_wait(&self) -> Result<(), crate::LaneClosed> {
        self.lane.task.set_paused(true);
        self.lane.wait_gates().await.map_err(|_| crate::LaneClosed)
    }
}
