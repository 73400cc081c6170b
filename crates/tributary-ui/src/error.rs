//! Why a request or the server failed.

use std::io;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tributary_sqlite::SqliteError;

/// What went wrong in the web view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UiError {
    /// The recorded database could not be read.
    #[error(transparent)]
    Database(#[from] SqliteError),
    /// No database was given to this server.
    #[error("no recorded database is served here")]
    NoDatabase,
    /// No recorded run has this app id.
    #[error("no recorded run with app id `{0}`")]
    UnknownApp(String),
    /// The recorded run has no step with this sequence id (and attempt).
    #[error("run `{app_id}` has no step {sequence_id}")]
    UnknownStep {
        /// The run.
        app_id: String,
        /// The sequence id asked for.
        sequence_id: u64,
    },
    /// No live run is attached under this name.
    #[error("no live run named `{0}`")]
    UnknownRun(String),
    /// The live run has no lane with this task key.
    #[error("live run `{run}` has no task `{task}`")]
    UnknownTask {
        /// The live run.
        run: String,
        /// The task key asked for.
        task: String,
    },
    /// The run has no task with this lane's path that has not ended, so it
    /// cannot be paused, resumed or cancelled.
    #[error("task `{task}` of live run `{run}` has ended or is unknown to the run")]
    TaskNotRunning {
        /// The live run.
        run: String,
        /// The task key.
        task: String,
    },
    /// Controls are off (the server is read-only for this run).
    #[error("controls are off for live run `{0}`")]
    ControlOff(String),
    /// A control request came without the header that proves it was sent
    /// by the page (`x-tributary-control: 1`).
    #[error("control requests need the header `x-tributary-control: 1`")]
    MissingControlHeader,
    /// The request was addressed to a host name this server does not
    /// answer to (see [`UiServer::allow_host`](crate::UiServer::allow_host)).
    #[error("requests to host `{0}` are refused")]
    HostRefused(String),
    /// The request came from a page of another origin.
    #[error("requests from origin `{0}` are refused")]
    OriginRefused(String),
    /// The command is none of `pause`, `resume`, `cancel`.
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// A filter in the query string could not be read.
    #[error("bad filter `{name}`: {reason}")]
    BadFilter {
        /// The query parameter.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// A blocking read was interrupted (its thread panicked or the
    /// runtime is shutting down).
    #[error("the read of {} was interrupted", .0.display())]
    Interrupted(PathBuf),
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::NoDatabase
            | UiError::UnknownApp(_)
            | UiError::UnknownStep { .. }
            | UiError::UnknownRun(_)
            | UiError::UnknownTask { .. } => StatusCode::NOT_FOUND,
            UiError::TaskNotRunning { .. } => StatusCode::CONFLICT,
            UiError::ControlOff(_)
            | UiError::MissingControlHeader
            | UiError::HostRefused(_)
            | UiError::OriginRefused(_) => StatusCode::FORBIDDEN,
            UiError::UnknownCommand(_) | UiError::BadFilter { .. } => StatusCode::BAD_REQUEST,
            UiError::Database(_) | UiError::Serve { .. } | UiError::Interrupted(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}
