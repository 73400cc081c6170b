//! Who an application is: its id, partition key, place in a run's task tree
//! and the applications it came from.
//!
//! Hooks, actions and the application itself all read an [`AppInfo`]; it
//! depends on nothing else in the crate, so that every part can name it.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use tributary_core::{action, Application, Graph};
//!
//! let graph = Graph::single(action("noop").run(|s, _, _| async move { Ok((json!({}), s)) }));
//! let app = Application::builder(graph)
//!     .app_id("job-7")
//!     .task_path(["crawl", "page-3"])
//!     .build()
//!     .await?;
//! assert_eq!(app.info().app_id, "job-7");
//! assert_eq!(app.info().task_key(), Some("page-3"));
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Points from an application to the one it came from: the application it was
/// forked from, or the application (and step) that spawned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParentPointer {
    /// The parent's app id.
    pub app_id: String,
    /// The parent's sequence id (the step that spawned or was forked from).
    pub sequence_id: u64,
    /// The parent's action at that step, when known.
    pub action: Option<String>,
    /// The parent's partition key.
    pub partition_key: Option<String>,
}

/// Who an application is: its id, partition key, task path and parent
/// pointers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppInfo {
    /// The application's id.
    pub app_id: String,
    /// Its partition key (a user or tenant id, for listing).
    pub partition_key: Option<String>,
    /// The application it was forked from.
    pub parent: Option<ParentPointer>,
    /// The application (and step) that spawned it.
    pub spawning_parent: Option<ParentPointer>,
    /// The task keys from the root of the run to this application's task,
    /// its own key last; empty when the application runs outside a runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_path: Vec<Arc<str>>,
    /// The id of the runtime run its task belongs to (for a child of a
    /// parallel action, the run of the root task); `None` outside a
    /// runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Arc<str>>,
    /// Its task's position in task order within its run (among its
    /// siblings); `None` outside a runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_index: Option<u64>,
}

impl AppInfo {
    /// The identity of an application with this id, outside any run and
    /// with no parents (the other fields are public, to fill in).
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_core::AppInfo;
    ///
    /// let mut info = AppInfo::new("job-7");
    /// info.partition_key = Some("tenant-1".into());
    /// assert_eq!(info.app_id, "job-7");
    /// assert_eq!(info.task_key(), None);
    /// ```
    pub fn new(app_id: impl Into<String>) -> Self {
        AppInfo {
            app_id: app_id.into(),
            partition_key: None,
            parent: None,
            spawning_parent: None,
            task_path: Vec::new(),
            run_id: None,
            task_index: None,
        }
    }

    /// The key of the runtime task running this application (the last
    /// element of [`task_path`](Self::task_path)); `None` outside a runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph};
    ///
    /// let graph = Graph::single(action("noop").run(|s, _, _| async move { Ok((json!({}), s)) }));
    /// let alone = Application::builder(graph.clone()).build().await?;
    /// assert_eq!(alone.info().task_key(), None);
    /// let child = Application::builder(graph).task_path(["report", "flood risk"]).build().await?;
    /// assert_eq!(child.info().task_key(), Some("flood risk"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn task_key(&self) -> Option<&str> {
        self.task_path.last().map(|k| &**k)
    }

    /// The task keys from the root of the run to this application's task;
    /// empty outside a runtime.
    pub fn task_path(&self) -> &[Arc<str>] {
        &self.task_path
    }
}

/// A runtime task's identity, kept by the runtime in what it already holds
/// for the task, from which the task's [`AppInfo`] is built the first time
/// something asks for it (a hook, a persister, [`ActionContext::app`]).
/// An application given one ([`ApplicationBuilder::task_identity`]) reads
/// its id and task path from it without building anything, so a task
/// that nothing asks about never builds its `AppInfo`.
///
/// [`ActionContext::app`]: crate::ActionContext::app
/// [`ApplicationBuilder::task_identity`]: crate::ApplicationBuilder::task_identity
pub trait TaskIdentity: Send + Sync + 'static {
    /// The application's id.
    fn app_id(&self) -> &str;

    /// The task keys from the root of the run to the task, its own key
    /// last.
    fn task_path(&self) -> &[Arc<str>];

    /// The whole identity: built on the first call, the same `Arc`
    /// afterwards. Its `app_id` and `task_path` are the ones above.
    fn info(&self) -> &Arc<AppInfo>;
}

/// Where an application's identity lives: built up front, or in its
/// runtime task, built on demand.
#[derive(Clone)]
pub(crate) enum Identity {
    Built(Arc<AppInfo>),
    Task(Arc<dyn TaskIdentity>),
}

impl Identity {
    pub(crate) fn app_id(&self) -> &str {
        match self {
            Identity::Built(info) => &info.app_id,
            Identity::Task(task) => task.app_id(),
        }
    }

    pub(crate) fn task_path(&self) -> &[Arc<str>] {
        match self {
            Identity::Built(info) => &info.task_path,
            Identity::Task(task) => task.task_path(),
        }
    }

    pub(crate) fn task_key(&self) -> Option<&str> {
        self.task_path().last().map(|k| &**k)
    }

    /// The whole identity (built now if it comes from a task and nothing
    /// asked for it before).
    pub(crate) fn info(&self) -> &Arc<AppInfo> {
        match self {
            Identity::Built(info) => info,
            Identity::Task(task) => task.info(),
        }
    }
}
