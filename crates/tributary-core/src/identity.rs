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
