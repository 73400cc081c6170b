//! A small blocking facade for synchronous programs.
//!
//! The runtime stays async; this owns a tokio runtime and blocks on it, the
//! way `reqwest::blocking` does. Do not use it from inside an async context
//! (blocking there panics, as tokio's `block_on` does).
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tributary_core::{action, Graph, State};
//! use tributary_runtime::blocking::BlockingRuntime;
//! use tributary_runtime::{ItemKind, RunConfig, TaskSource, TaskSpec};
//!
//! let graph = Graph::single(action("hello").run(|s: State, _, ctx| async move {
//!     ctx.emit("hi").await?;
//!     Ok((json!({}), s))
//! }));
//! let rt = BlockingRuntime::new().unwrap();
//! let tasks = (0..3).map(move |i| TaskSpec::new(format!("t{i}"), graph.clone()));
//! let run = rt.run(TaskSource::iter(tasks), RunConfig::new());
//! let finals = run.filter(|item| item.kind == ItemKind::Final).count();
//! assert_eq!(finals, 3);
//! ```

use crate::config::RunConfig;
use crate::error::RunError;
use crate::handle::RunHandle;
use crate::merger::{RunReport, RunStream};
use crate::outcome::TaskOutcome;
use crate::runtime::Runtime;
use crate::source::TaskSource;

/// Runs tributary runs from synchronous code.
#[derive(Debug)]
pub struct BlockingRuntime {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
}

impl BlockingRuntime {
    /// A facade over a new multi-threaded tokio runtime, with every driver
    /// on (timers and I/O, so actions can open sockets), and a default
    /// [`Runtime`].
    ///
    /// # Errors
    ///
    /// When the tokio runtime cannot start.
    pub fn new() -> std::io::Result<Self> {
        Self::with_runtime(Runtime::new())
    }

    /// A facade over `runtime` (to choose its limits).
    ///
    /// # Errors
    ///
    /// When the tokio runtime cannot start.
    pub fn with_runtime(runtime: Runtime) -> std::io::Result<Self> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(BlockingRuntime { tokio, runtime })
    }

    /// Start a run; iterate the returned [`BlockingRun`] for its items.
    pub fn run(&self, tasks: impl Into<TaskSource>, config: RunConfig) -> BlockingRun<'_> {
        let _entered = self.tokio.enter();
        let (handle, stream) = self.runtime.run(tasks, config);
        BlockingRun {
            tokio: &self.tokio,
            handle,
            stream,
        }
    }

    /// Run any future to completion on the facade's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.tokio.block_on(future)
    }
}

/// A run driven from synchronous code: an `Iterator` of its items.
#[derive(Debug)]
pub struct BlockingRun<'a> {
    tokio: &'a tokio::runtime::Runtime,
    handle: RunHandle,
    stream: RunStream,
}

impl BlockingRun<'_> {
    /// The run's handle (pause, resume, cancel, add_task, progress).
    pub fn handle(&self) -> &RunHandle {
        &self.handle
    }

    /// Cancel the run and wait until every task has stopped.
    pub fn cancel(&self) {
        self.tokio.block_on(self.handle.cancel());
    }

    /// Read the run to its end; see [`RunStream::finish`].
    ///
    /// # Errors
    ///
    /// As [`RunStream::finish`].
    pub fn finish(self) -> Result<RunReport, RunError> {
        self.tokio.block_on(self.stream.finish())
    }

    /// Every task's outcome in task order; see [`RunStream::outcomes`].
    ///
    /// # Errors
    ///
    /// As [`RunStream::finish`].
    pub fn outcomes(self) -> Result<Vec<TaskOutcome>, RunError> {
        self.tokio.block_on(self.stream.outcomes())
    }
}

impl Iterator for BlockingRun<'_> {
    type Item = crate::item::StreamItem;

    fn next(&mut self) -> Option<Self::Item> {
        self.tokio.block_on(self.stream.next())
    }
}
