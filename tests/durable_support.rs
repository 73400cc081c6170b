//! Helpers shared by the durable tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tributary::{ActionContext, ApplicationError, BoxError, Graph, RunOptions, State, action};
use tributary::{Application, durable::*};

/// How many times each named body ran.
#[derive(Clone, Default)]
pub(crate) struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    pub(crate) fn bump(&self, name: &str) -> u32 {
        let mut runs = self.0.lock().unwrap();
        let n = runs.entry(name.to_owned()).or_insert(0);
        *n += 1;
        *n
    }
    pub(crate) fn get(&self, name: &str) -> u32 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub(crate) fn all(&self) -> HashMap<String, u32> {
        self.0.lock().unwrap().clone()
    }
}

/// A single-action graph whose action is `f`; its result is also written
/// to the state under `out`.
pub(crate) fn graph_of<F, Fut>(f: F) -> Graph
where
    F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, BoxError>> + Send + 'static,
{
    Graph::single(action("work").writes(["out"]).run(move |s: State, _, ctx| {
        let fut = f(ctx);
        async move {
            let v = fut.await?;
            Ok((json!({ "out": v.clone() }), s.set("out", v)))
        }
    }))
}

/// Build the application `app_id` of `graph` with `journal` and run it.
pub(crate) async fn run_app(
    graph: &Graph,
    app_id: &str,
    journal: &Journal,
) -> Result<Value, ApplicationError> {
    let mut app = Application::builder(graph.clone())
        .app_id(app_id)
        .journal(journal)
        .build()
        .await
        .expect("the application builds");
    let out = app.run(RunOptions::new()).await?;
    Ok(out.state.get("out").cloned().unwrap_or(Value::Null))
}

/// The typed error an action failed with, kept by the action for the test.
#[derive(Clone, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<DurableError>>>);

impl LastError {
    /// Keep `e` (if it is an error) and pass the result on.
    pub(crate) fn keep<T>(&self, r: Result<T, DurableError>) -> Result<T, BoxError> {
        r.map_err(|e| {
            let message = e.to_string();
            *self.0.lock().unwrap() = Some(e);
            message.into()
        })
    }
    pub(crate) fn take(&self) -> Option<DurableError> {
        self.0.lock().unwrap().take()
    }
}

/// A store that records every append (in order) over an inner store, and
/// can hold the append of one step forever (a crash between a step's body
/// and its journal write, once the test drops the run).
pub(crate) struct Recording {
    pub(crate) inner: Arc<dyn JournalStore>,
    pub(crate) writes: Mutex<Vec<JournalEntry>>,
    pub(crate) hold: Option<String>,
    pub(crate) held: Arc<Notify>,
}

impl Recording {
    pub(crate) fn new(inner: Arc<dyn JournalStore>) -> Self {
        Recording {
            inner,
            writes: Mutex::new(Vec::new()),
            hold: None,
            held: Arc::new(Notify::new()),
        }
    }
    /// Never finish the append of the first entry of step `name`.
    pub(crate) fn holding(inner: Arc<dyn JournalStore>, name: &str) -> Self {
        Recording {
            hold: Some(name.to_owned()),
            ..Self::new(inner)
        }
    }
    pub(crate) fn writes(&self) -> Vec<JournalEntry> {
        self.writes.lock().unwrap().clone()
    }
}

#[async_trait]
impl JournalStore for Recording {
    async fn load(&self, app_id: &str, seq: u64) -> Result<Vec<JournalEntry>, JournalError> {
        self.inner.load(app_id, seq).await
    }
    async fn append(&self, entry: JournalEntry) -> Result<JournalEntry, JournalError> {
        if self.hold.as_deref() == Some(entry.step.name.as_str()) {
            self.held.notify_one();
            std::future::pending::<()>().await;
        }
        self.writes.lock().unwrap().push(entry.clone());
        self.inner.append(entry).await
    }
    async fn begin_execution(&self, app_id: &str, seq: u64) -> Result<u32, JournalError> {
        self.inner.begin_execution(app_id, seq).await
    }
    async fn latest_execution(&self, app_id: &str, seq: u64) -> Result<u32, JournalError> {
        self.inner.latest_execution(app_id, seq).await
    }
    async fn create_workflow(
        &self,
        record: WorkflowRecord,
    ) -> Result<(WorkflowRecord, bool), JournalError> {
        self.inner.create_workflow(record).await
    }
    async fn put_workflow(&self, record: WorkflowRecord) -> Result<(), JournalError> {
        self.inner.put_workflow(record).await
    }
    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        self.inner.workflow(id).await
    }
    async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>, JournalError> {
        self.inner.unfinished_workflows().await
    }
    async fn send_event(
        &self,
        target: &str,
        name: &str,
        value: Value,
    ) -> Result<u64, JournalError> {
        self.inner.send_event(target, name, value).await
    }
    async fn event(
        &self,
        target: &str,
        name: &str,
        index: u64,
    ) -> Result<Option<Value>, JournalError> {
        self.inner.event(target, name, index).await
    }
}

/// An action `pay` whose durable step `charge` fails ("card service
/// down") until `healthy` is set: out of its one quick retry, the step
/// pauses its task (`pause_on_exhausted`) until the task is resumed. Once
/// the charge goes through the action writes `paid`. `calls` counts the
/// attempts of the charge.
pub(crate) fn pay_pausing_until_healthy(
    healthy: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<std::sync::atomic::AtomicU32>,
) -> tributary::FnAction {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    action("pay").writes(["paid"]).run(move |s: State, _, ctx| {
        let (healthy, calls) = (Arc::clone(&healthy), Arc::clone(&calls));
        async move {
            let paid: bool = ctx
                .step_with("charge", move |_| {
                    let (healthy, calls) = (Arc::clone(&healthy), Arc::clone(&calls));
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if healthy.load(Ordering::SeqCst) {
                            Ok(true)
                        } else {
                            Err(BoxError::from("card service down"))
                        }
                    }
                })
                .policy(
                    StepPolicy::new()
                        .retries(1)
                        .backoff(Duration::from_millis(1), Duration::from_millis(2))
                        .pause_on_exhausted(),
                )
                .await?;
            Ok((json!({ "paid": paid }), s.set("paid", paid)))
        }
    })
}
