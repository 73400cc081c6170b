//! The server: [`UiServer`] holds what is served (a recorded database, live
//! runs) and builds the [`Router`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_runtime::RunHandle;

use crate::error::UiError;
use crate::live::LiveRun;
use crate::source::Recorded;

mod api;
mod events;
mod guard;

use self::api::{
    info, lane_detail, live_snapshot, run_command, run_detail, runs, step_detail, task_command,
};
use self::events::{Closing, live_events};
use self::guard::{check_host, secure_headers};

/// Where `tributary ui` listens unless told otherwise: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// The web view's server: what it serves and how.
///
/// Cheap to clone; clones share the live runs, so a run attached after the
/// router was built is served too. Read-only unless a run is attached with
/// its handle (see [`attach_run`](Self::attach_run)) and controls were not
/// turned off with [`read_only`](Self::read_only).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use serde_json::json;
/// use tributary_core::{State, action};
/// use tributary_runtime::{RunConfig, Runtime, TaskSpec};
/// use tributary_ui::UiServer;
///
/// let tasks = (0..3).map(|i| TaskSpec::action(format!("t{i}"), action("work").run(|s: State, _, ctx| async move {
///     ctx.emit("hello").await?;
///     Ok((json!({ "done": true }), s))
/// })));
/// let (handle, stream) = Runtime::new().run(tasks.collect::<Vec<_>>(), RunConfig::new());
///
/// let ui = UiServer::new();
/// let live = ui.attach_run("demo", handle);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = tokio::spawn(ui.clone().serve_with_shutdown(listener, std::future::pending()));
///
/// // The consumer reads through the tap: the page shows what it received.
/// let items: Vec<_> = live.tap(stream).collect().await;
/// assert_eq!(items.len(), 6); // a token and a final per task
/// assert_eq!(items.iter().filter(|i| i.kind == tributary_runtime::ItemKind::Final).count(), 3);
/// server.abort();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct UiServer {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    recorded: RwLock<Option<Recorded>>,
    live: RwLock<BTreeMap<String, LiveRun>>,
    read_only: RwLock<bool>,
    /// Host names accepted besides IP addresses and `localhost`.
    hosts: RwLock<Vec<String>>,
}

impl std::fmt::Debug for UiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiServer")
            .field(
                "recorded",
                &self.inner.recorded.read().ok().map(|r| r.is_some()),
            )
            .field("live", &self.live_names())
            .finish_non_exhaustive()
    }
}

impl UiServer {
    /// A server with nothing to show yet.
    pub fn new() -> Self {
        UiServer::default()
    }

    /// Serve the runs a tracker recorded in the SQLite database at `path`,
    /// read-only.
    ///
    /// # Errors
    ///
    /// [`UiError::Database`] when the file is missing or not a tracker's
    /// database.
    pub fn database(self, path: impl AsRef<Path>) -> Result<Self, UiError> {
        let recorded = Recorded::new(path);
        recorded.check()?;
        *self
            .inner
            .recorded
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(recorded);
        Ok(self)
    }

    /// Turn every control off: runs attached with their handle are shown
    /// but cannot be paused, resumed or cancelled from the page.
    pub fn read_only(self) -> Self {
        *self
            .inner
            .read_only
            .write()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self
    }

    /// Accept requests addressed to `host` (a name, without port): by
    /// default only IP addresses and `localhost` are, so that a web page
    /// whose name is made to resolve to this machine (DNS rebinding) is
    /// refused. Add the name the view is reached by behind a proxy.
    pub fn allow_host(self, host: impl Into<String>) -> Self {
        self.inner
            .hosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(host.into().to_ascii_lowercase());
        self
    }

    /// Serve a live run under `name`, with pause, resume and cancel of the
    /// run and of each task (unless the server is [read-only](Self::read_only)).
    /// Feed the returned [`LiveRun`] what the consumer receives
    /// ([`LiveRun::tap`]). A run attached again under the same name
    /// replaces the first.
    pub fn attach_run(&self, name: impl Into<String>, handle: RunHandle) -> LiveRun {
        let name = name.into();
        let control = !*self
            .inner
            .read_only
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let run = LiveRun::new(name.clone(), handle, control);
        self.inner
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, run.clone());
        run
    }

    /// Stop serving the live run `name`; whether it was served.
    pub fn detach_run(&self, name: &str) -> bool {
        self.inner
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    fn live_names(&self) -> Vec<String> {
        self.inner
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn live(&self, name: &str) -> Result<LiveRun, UiError> {
        self.inner
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| UiError::UnknownRun(name.to_owned()))
    }

    fn recorded(&self) -> Result<Recorded, UiError> {
        self.inner
            .recorded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(UiError::NoDatabase)
    }

    /// The routes of the view: the page at `/`, its JSON under `/api`. Nest
    /// it in your own router or serve it alone. Its live event streams end
    /// when their browser leaves; to end them when your server shuts down
    /// gracefully, use [`router_with_shutdown`](Self::router_with_shutdown).
    pub fn router(&self) -> Router {
        self.router_with_shutdown(CancellationToken::new())
    }

    /// [`router`](Self::router), whose live event streams end once
    /// `shutdown` is cancelled (a graceful shutdown waits for open streams).
    pub fn router_with_shutdown(&self, shutdown: CancellationToken) -> Router {
        Router::new()
            .route(
                "/",
                get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
            )
            .route(
                "/app.js",
                get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/app.css",
                get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
            )
            .route("/api/info", get(info))
            .route("/api/runs", get(runs))
            .route("/api/runs/{app_id}", get(run_detail))
            .route("/api/runs/{app_id}/steps/{seq}", get(step_detail))
            .route("/api/live/{name}", get(live_snapshot))
            .route("/api/live/{name}/events", get(live_events))
            .route("/api/live/{name}/lanes/{key}", get(lane_detail))
            .route("/api/live/{name}/{command}", post(run_command))
            .route("/api/live/{name}/lanes/{key}/{command}", post(task_command))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                check_host,
            ))
            .layer(axum::middleware::map_response(secure_headers))
            .layer(Extension(Closing(shutdown)))
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown` resolves; the live event
    /// streams end then too.
    ///
    /// # Errors
    ///
    /// [`UiError::Serve`] when accepting connections fails.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the server; open connections are dropped.
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), UiError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "the listener".into());
        // A token of this serve's own: the same server may be served again.
        let closed = CancellationToken::new();
        let router = self.router_with_shutdown(closed.clone());
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                closed.cancel();
            })
            .await
            .map_err(|source| UiError::Serve { addr, source })
    }
}

/// Bind `addr` and serve `ui` until the process ends.
///
/// # Errors
///
/// [`UiError::Serve`] when `addr` cannot be bound or serving fails.
///
/// # Cancel safety
///
/// Dropping the future stops the server.
pub async fn serve(ui: UiServer, addr: SocketAddr) -> Result<(), UiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| UiError::Serve {
            addr: addr.to_string(),
            source,
        })?;
    ui.serve_with_shutdown(listener, std::future::pending())
        .await
}

/// What `tributary ui` runs: serve the database at `db` read-only on `addr`
/// until Ctrl-C, on a runtime of its own. `announce` is told the address
/// once it is bound. `control` (`--control`) can only act on live runs
/// attached in-process, which a command serving a database has none of: a
/// recorded run is never changed, and a note on stderr says so.
///
/// # Errors
///
/// [`UiError`] when the database cannot be read or `addr` cannot be bound.
pub fn serve_database_blocking(
    db: &Path,
    addr: SocketAddr,
    control: bool,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), UiError> {
    let ui = UiServer::new().database(db)?;
    if control {
        eprintln!(
            "tributary ui: controls act on live runs attached in-process \
             (tributary::ui::UiServer::attach_run); recorded runs stay read-only"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| UiError::Serve {
            addr: addr.to_string(),
            source,
        })?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| UiError::Serve {
                addr: addr.to_string(),
                source,
            })?;
        announce(listener.local_addr().unwrap_or(addr));
        let ctrl_c = async {
            // An error installing the handler means Ctrl-C ends the process
            // as usual.
            let _ = tokio::signal::ctrl_c().await;
        };
        ui.serve_with_shutdown(listener, ctrl_c).await
    })
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
