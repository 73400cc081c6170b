//! The subgraph actor: runs one task's application step by step.

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_core::{
    AppInfo, Application, EmitError, Emitted, State, StepRecord, StreamSink, TaskEnd,
};

use crate::config::{MergeMode, RunConfig};
use crate::control::{
    Gate, GateChain, Inbox, RunHandle, RunShared, TaskControl, TaskRuntime, TaskSlot,
};
use crate::error::TaskError;
use crate::item::{ItemKind, StreamItem};
use crate::mailbox::{Ctl, Envelope};
use crate::task::TaskSpec;

/// The task was cancelled while it waited.
struct Stopped;

/// How a task's body ended.
enum Terminal {
    Final {
        action: Option<Arc<str>>,
        result: Option<Value>,
        state: State,
    },
    Failed {
        action: Option<Arc<str>>,
        error: String,
    },
    Cancelled {
        action: Option<Arc<str>>,
    },
}

/// What the actor and its token sink share: the task's identity, its way
/// out to the merger, its sequence counter, its gates and its token.
pub(crate) struct Lane {
    key: Arc<str>,
    index: u64,
    app_id: Arc<str>,
    out: mpsc::Sender<Envelope>,
    ctl: mpsc::UnboundedSender<Ctl>,
    next_seq: Mutex<u64>,
    pub(crate) token: CancellationToken,
    pub(crate) gates: GateChain,
    /// The task's run (a handle, so that the task's actions can borrow it).
    pub(crate) run: RunHandle,
    tokens: bool,
    terminal_via_ctl: bool,
}

impl Lane {
    fn item(
        &self,
        seq: u64,
        kind: ItemKind,
        action: Option<Arc<str>>,
        result: Option<Value>,
        state_update: Option<State>,
        error: Option<String>,
    ) -> StreamItem {
        StreamItem {
            task_key: Arc::clone(&self.key),
            task_index: self.index,
            app_id: Arc::clone(&self.app_id),
            action,
            seq,
            kind,
            result,
            state_update,
            error,
        }
    }

    /// Send an item through the task's way out, waiting for room (that is
    /// the backpressure) unless the task is cancelled.
    async fn send(
        &self,
        kind: ItemKind,
        action: Option<Arc<str>>,
        result: Option<Value>,
        state_update: Option<State>,
        slot: Option<TaskSlot>,
    ) -> Result<(), Stopped> {
        if self.token.is_cancelled() {
            return Err(Stopped);
        }
        // Room now is the common case: take it without registering with the
        // token's and the channel's waiter lists (two locks each way). The
        // wait for room is boxed, so that the common case keeps no room for
        // it in the futures of every task.
        let permit = match self.out.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Stopped),
            Err(mpsc::error::TrySendError::Full(())) => Box::pin(self.wait_for_room()).await?,
        };
        // Number and send under one lock so that concurrent emitters of one
        // task (an action that emits from spawned subtasks) keep `seq` in
        // queue order with no gaps.
        let mut seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        permit.send(Envelope {
            item: self.item(*seq, kind, action, result, state_update, None),
            slot,
        });
        *seq += 1;
        Ok(())
    }

    /// Wait for room in the task's way out, unless the task is cancelled.
    async fn wait_for_room(&self) -> Result<mpsc::Permit<'_, Envelope>, Stopped> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(Stopped),
            permit = self.out.reserve() => permit.map_err(|_| Stopped),
        }
    }

    /// Hand a terminal item to the merger's control channel, never waiting.
    fn push_terminal(&self, report: Report, slot: Option<TaskSlot>) {
        let Report {
            kind,
            action,
            result,
            state,
            error,
        } = report;
        let mut seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let item = self.item(*seq, kind, action, result, state, error);
        *seq += 1;
        let _ = self.ctl.send(Ctl::Terminal(Envelope { item, slot }));
    }

    /// Wait while the run, the task or an enclosing run is paused.
    async fn wait_gates(&self) -> Result<(), Stopped> {
        if self.gates.is_open() {
            return Ok(());
        }
        self.run.shared.update_progress(|p| p.paused += 1);
        let stopped = tokio::select! {
            biased;
            _ = self.token.cancelled() => true,
            _ = self.gates.wait_open() => false,
        };
        self.run.shared.update_progress(|p| p.paused -= 1);
        if stopped { Err(Stopped) } else { Ok(()) }
    }

    fn cancel_reason(&self, control: &TaskControl) -> String {
        control
            .reason()
            .or_else(|| self.run.shared.reason.get())
            .cloned()
            .unwrap_or_else(|| "the enclosing task was cancelled".to_owned())
    }
}

/// The parts of a terminal item.
struct Report {
    kind: ItemKind,
    action: Option<Arc<str>>,
    result: Option<Value>,
    state: Option<State>,
    error: Option<String>,
}

impl Report {
    fn new(kind: ItemKind, action: Option<Arc<str>>, error: Option<String>) -> Self {
        Report {
            kind,
            action,
            result: None,
            state: None,
            error,
        }
    }
}

/// A task's lane is also its application's stream sink: it turns the
/// task's `ctx.emit` calls into `Token` items (with no allocation of its
/// own per task).
#[async_trait]
impl StreamSink for Lane {
    async fn send(&self, item: Emitted) -> Result<(), EmitError> {
        if !self.tokens {
            return Ok(());
        }
        let Emitted { action, value, .. } = item;
        let stopped = |action: &str| EmitError {
            action: action.to_owned(),
        };
        if self.wait_gates().await.is_err() {
            return Err(stopped(&action));
        }
        Lane::send(
            self,
            ItemKind::Token,
            Some(Arc::clone(&action)),
            Some(value),
            None,
            None,
        )
        .await
        .map_err(|_| stopped(&action))
    }
}

/// One task's actor.
pub(crate) struct Actor {
    lane: Arc<Lane>,
    info: OnceLock<Arc<AppInfo>>,
    config: Arc<RunConfig>,
    spec: TaskSpec,
    control: TaskControl,
    slot: TaskSlot,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<RunShared>,
        config: Arc<RunConfig>,
        index: u64,
        spec: TaskSpec,
        app_id: Arc<str>,
        control: TaskControl,
        slot: TaskSlot,
        out: mpsc::Sender<Envelope>,
        ctl: mpsc::UnboundedSender<Ctl>,
    ) -> Self {
        let final_only = config.merge_mode == MergeMode::FinalOnly;
        let lane = Arc::new(Lane {
            key: Arc::clone(&spec.key),
            index,
            app_id,
            out,
            ctl,
            next_seq: Mutex::new(0),
            token: control.token.clone(),
            gates: shared.gates.with(Gate::Task(Arc::clone(&control.shared))),
            tokens: config.intermediate_stream_outputs && !final_only,
            terminal_via_ctl: matches!(config.merge_mode, MergeMode::Zip | MergeMode::Ordered),
            run: RunHandle { shared },
        });
        Actor {
            lane,
            info: OnceLock::new(),
            config,
            spec,
            control,
            slot,
        }
    }

    /// The actor's task. A plain `fn` returning an `async move` block: an
    /// `async fn` taking `self` by value keeps two copies of `self` in its
    /// future, and this future lives as long as the task.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let mut guard = ExitGuard {
                actor: &self,
                delivered: false,
            };
            self.lane.run.shared.update_progress(|p| p.running += 1);
            let terminal = match self.config.task_timeout {
                // Boxed: only tasks with a timeout pay for the timer's room.
                Some(after) => match Box::pin(tokio::time::timeout(after, self.body())).await {
                    Ok(terminal) => terminal,
                    Err(_) => Terminal::Failed {
                        action: None,
                        error: TaskError::TimedOut {
                            task_key: self.spec.key.to_string(),
                            after,
                        }
                        .to_string(),
                    },
                },
                None => self.body().await,
            };
            let (kind, why) = self.deliver(terminal).await;
            if let Some(info) = self.info.get() {
                let end = match kind {
                    ItemKind::Final => TaskEnd::Completed,
                    ItemKind::Failed => TaskEnd::Failed(why.as_deref().unwrap_or_default()),
                    _ => TaskEnd::Cancelled(why.as_deref().unwrap_or_default()),
                };
                for hook in &self.config.hooks {
                    hook.on_task_complete(info, &self.spec.key, &end);
                }
            }
            self.lane.run.shared.update_progress(|p| {
                p.running -= 1;
                match kind {
                    ItemKind::Final => p.completed += 1,
                    ItemKind::Failed => p.failed += 1,
                    _ => p.cancelled += 1,
                }
            });
            guard.delivered = true;
        }
    }

    /// Hand the terminal item over; returns the kind actually delivered and
    /// the error or cancellation reason.
    async fn deliver(&self, terminal: Terminal) -> (ItemKind, Option<String>) {
        let lane = &self.lane;
        let slot = Some(self.slot.clone());
        // The reason is only read again by the task-completion hooks.
        let for_hooks = |why: &String| (!self.config.hooks.is_empty()).then(|| why.clone());
        let (kind, action, result, state, error) = match terminal {
            Terminal::Final {
                action,
                result,
                state,
            } => (ItemKind::Final, action, result, Some(state), None),
            Terminal::Failed { action, error } => {
                (ItemKind::Failed, action, None, None, Some(error))
            }
            Terminal::Cancelled { action } => {
                let reason = lane.cancel_reason(&self.control);
                let why = for_hooks(&reason);
                lane.push_terminal(Report::new(ItemKind::Cancelled, action, Some(reason)), slot);
                return (ItemKind::Cancelled, why);
            }
        };
        if lane.terminal_via_ctl || kind == ItemKind::Failed {
            // Failures never wait for mailbox room: fail-fast reacts to them.
            let why = error.as_ref().and_then(for_hooks);
            let report = Report {
                kind,
                action,
                result,
                state,
                error,
            };
            lane.push_terminal(report, slot);
            return (kind, why);
        }
        match lane
            .send(kind, action.clone(), result, state, slot.clone())
            .await
        {
            Ok(()) => (kind, None),
            Err(Stopped) => {
                let reason = lane.cancel_reason(&self.control);
                let why = for_hooks(&reason);
                lane.push_terminal(Report::new(ItemKind::Cancelled, action, Some(reason)), slot);
                (ItemKind::Cancelled, why)
            }
        }
    }

    async fn body(&self) -> Terminal {
        let lane = &self.lane;
        let spec = &self.spec;
        if let Some(unknown) = spec.halt.unknown_action(&spec.graph) {
            return Terminal::Failed {
                action: None,
                error: TaskError::Build {
                    task_key: spec.key.to_string(),
                    error: format!("halt list names unknown action `{unknown}`"),
                }
                .to_string(),
            };
        }
        if lane.wait_gates().await.is_err() || lane.token.is_cancelled() {
            return Terminal::Cancelled { action: None };
        }
        // Boxed: the builder's future is large and done with before the
        // first step, so it would only bloat every suspended task.
        let mut app = match Box::pin(self.build()).await {
            Ok(app) => app,
            Err(error) => {
                return Terminal::Failed {
                    action: None,
                    error: TaskError::Build {
                        task_key: spec.key.to_string(),
                        error,
                    }
                    .to_string(),
                };
            }
        };
        let _ = self.info.set(Arc::clone(app.info()));
        for hook in &self.config.hooks {
            hook.on_task_spawn(app.info(), &spec.key);
        }
        let nodes =
            self.config.intermediate_nodes && self.config.merge_mode != MergeMode::FinalOnly;
        let next_name = |app: &Application| app.next_action().map(Arc::<str>::from);
        let mut failures = 0u32;
        loop {
            if lane.wait_gates().await.is_err() {
                return Terminal::Cancelled {
                    action: next_name(&app),
                };
            }
            // The step's result lives only in this block, so that it takes
            // no room in this future at the awaits below.
            let after = {
                let step = tokio::select! {
                    biased;
                    _ = lane.token.cancelled() => return Terminal::Cancelled { action: next_name(&app) },
                    step = app.step(spec.halt.get_inputs()) => step,
                };
                match step {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => {
                        return Terminal::Final {
                            action: None,
                            result: None,
                            state: app.state().clone(),
                        };
                    }
                    Err(_) if lane.token.is_cancelled() => {
                        // Cancelled while the step ran: its action saw the
                        // cancellation (an emit that could not be delivered)
                        // before this select did. That is a cancellation,
                        // not a failure.
                        return Terminal::Cancelled {
                            action: next_name(&app),
                        };
                    }
                    Err(error) => {
                        failures += 1;
                        if failures >= self.config.retry.max_attempts {
                            return Terminal::Failed {
                                action: next_name(&app),
                                error: error.to_string(),
                            };
                        }
                        Err(self.config.retry.backoff(failures))
                    }
                }
            };
            let record = match after {
                Ok(record) => record,
                Err(wait) => {
                    tokio::select! {
                        biased;
                        _ = lane.token.cancelled() => return Terminal::Cancelled { action: next_name(&app) },
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            failures = 0;
            if let Some(terminal) = self.after_step(&app, record, nodes).await {
                return terminal;
            }
        }
    }

    /// After a step: the task's end, or its node item and `None` to go on.
    /// A function of its own so that the record and the send do not take
    /// room in the body's future at every other await.
    async fn after_step(
        &self,
        app: &Application,
        record: StepRecord,
        nodes: bool,
    ) -> Option<Terminal> {
        let (lane, spec) = (&self.lane, &self.spec);
        let next = app.next_action();
        if let Some(before) = next.filter(|n| spec.halt.halts_before(n)) {
            let before: Arc<str> = Arc::from(before);
            if nodes
                && lane
                    .send(
                        ItemKind::NodeComplete,
                        Some(Arc::clone(&record.action)),
                        Some(record.result),
                        Some(record.state.clone()),
                        None,
                    )
                    .await
                    .is_err()
            {
                return Some(Terminal::Cancelled {
                    action: Some(before),
                });
            }
            return Some(Terminal::Final {
                action: Some(before),
                result: None,
                state: record.state,
            });
        }
        if next.is_none() || spec.halt.halts_after(&record.action) {
            return Some(Terminal::Final {
                action: Some(record.action),
                result: Some(record.result),
                state: record.state,
            });
        }
        if nodes
            && lane
                .send(
                    ItemKind::NodeComplete,
                    Some(Arc::clone(&record.action)),
                    Some(record.result),
                    Some(record.state),
                    None,
                )
                .await
                .is_err()
        {
            return Some(Terminal::Cancelled {
                action: next.map(Arc::from),
            });
        }
        None
    }

    async fn build(&self) -> Result<Application, String> {
        let spec = &self.spec;
        let lane = &self.lane;
        let config = &self.config;
        let mut builder = Application::builder(spec.graph.clone())
            .app_id(lane.app_id.to_string())
            .state(spec.state.clone())
            .stream_sink(Arc::clone(lane) as Arc<dyn StreamSink>)
            .extension(TaskRuntime {
                lane: Arc::clone(lane),
                slot: self.slot.clone(),
            });
        if let Some(entry) = &spec.entrypoint {
            builder = builder.entrypoint(entry.clone());
        }
        if let Some(key) = &config.partition_key {
            builder = builder.partition_key(key.clone());
        }
        if let Some(parent) = &config.spawning_parent {
            builder = builder.spawning_parent(parent.clone());
        }
        for hook in &config.hooks {
            builder = builder.hook_arc(Arc::clone(hook));
        }
        if let Some(persister) = &config.persister {
            builder = builder.persister(Arc::clone(persister)).resume();
        }
        builder.build().await.map_err(|e| e.to_string())
    }
}

/// Makes sure a task always reports and always leaves, even if its actor
/// panics or is dropped.
struct ExitGuard<'a> {
    actor: &'a Actor,
    delivered: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let lane = &self.actor.lane;
        if !self.delivered {
            let error = if lane.token.is_cancelled() {
                ItemKind::Cancelled
            } else {
                ItemKind::Failed
            };
            let why = Some("the task's actor stopped unexpectedly".to_owned());
            lane.push_terminal(Report::new(error, None, why), Some(self.actor.slot.clone()));
            lane.run.shared.update_progress(|p| {
                p.running -= 1;
                match error {
                    ItemKind::Failed => p.failed += 1,
                    _ => p.cancelled += 1,
                }
            });
        }
        lane.run
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lane.key);
        let _ = lane.run.shared.inbox.send(Inbox::Exited);
    }
}
