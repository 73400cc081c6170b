//! The subgraph actor: runs one task's application step by step.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tributary_core::{
    Application, ApplicationBuilder, HaltReason, Halted, HookMethod, RunOptions, StepRecord,
    StepStatus, StreamSink, TaskEnd, TaskIdentity, call_hooks,
};

use crate::budget::TaskSlot;
use crate::config::{MergeMode, RunConfig};
use crate::error::TaskError;
use crate::handle::RunHandle;
use crate::item::ItemKind;
use crate::mailbox::lane::{Lane, LaneConfig, Report, Stopped};
use crate::mailbox::{Ctl, Envelope, Inbox, SlotHold};
use crate::progress::{Change, Ended};
use crate::reason::CancelReason;
use crate::scope::TaskRuntime;
use crate::shared::RunShared;
use crate::spec::TaskSpec;
use crate::task_control::TaskControl;

// How a task's body ended: the same three ends as a task run by an
// executor.
use crate::remote::RemoteEnd as Terminal;

/// One task's actor.
pub(crate) struct Actor {
    lane: Arc<Lane>,
    spec: TaskSpec,
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
        // The task's lane (its control) is filled in: from now on it holds
        // the task's way out, slot and run, and the actor's future holds
        // nothing but the lane and the spec.
        control.start(LaneConfig {
            index,
            app_id,
            path: shared.prefix.child(Arc::clone(&spec.key)),
            out,
            ctl,
            gates: shared.gates.clone(),
            tokens: config.intermediate_stream_outputs && !final_only,
            nested_nodes: config.intermediate_nodes && !final_only,
            terminal_via_ctl: matches!(config.merge_mode, MergeMode::Zip | MergeMode::Ordered),
            pause_clock: config.task_timeout.is_some(),
            run: RunHandle { shared },
            slot,
            config,
        });
        // From now on the task holds its slot and has an actor: the
        // handle lists it as running, not queued.
        control.task.mark_spawned();
        let lane = control;
        Actor { lane, spec }
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
            self.lane.task.mark_ran();
            self.lane.run.shared.update_progress(Change {
                running: 1,
                ..Change::default()
            });
            tracing::debug!("task started");
            let terminal = match self.lane.config.task_timeout {
                // Boxed: only tasks with a timeout pay for the timer's room.
                Some(after) => Box::pin(self.timed(after)).await,
                None => self.body().await,
            };
            self.end(terminal).await;
            guard.delivered = true;
        }
    }

    /// The task's end, once its body has ended: wait for its subtree, tell
    /// the hooks, deliver the terminal item and count it. A function of its
    /// own, taking the body's end whole, so that it takes no room in the
    /// task's future while the body runs.
    async fn end(&self, terminal: Terminal) {
        {
            // A task ends after its subtree: every run nested in it has been
            // cancelled or has ended; wait until their tasks have stopped.
            for child in self.lane.run.shared.nested_in(&self.spec.key) {
                child.tracker.close();
                child.tracker.wait().await;
            }
            let terminal = self.complete_hooks(terminal);
            let (kind, error) = self.deliver(terminal).await;
            // The actor runs inside its task's span.
            let span = tracing::Span::current();
            match kind {
                ItemKind::Final => {
                    span.record("outcome", "completed");
                    tracing::debug!(outcome = "completed", "task ended");
                }
                ItemKind::Failed => {
                    span.record("outcome", "failed");
                    let error = error.map(|e| e.message).unwrap_or_default();
                    tracing::warn!(outcome = "failed", %error, "task failed");
                }
                _ => {
                    span.record("outcome", "cancelled");
                    // The reason is made again only when the event is wanted.
                    tracing::debug!(
                        outcome = "cancelled",
                        reason = %self.lane.cancel_reason().message,
                        "task cancelled"
                    );
                }
            }
            self.lane
                .run
                .shared
                .update_progress(Change::ended(match kind {
                    ItemKind::Final => Ended::Completed,
                    ItemKind::Failed => Ended::Failed,
                    _ => Ended::Cancelled,
                }));
        }
    }

    /// Cancel the task (and its subtree) for `reason`.
    fn cancel(&self, reason: CancelReason) {
        self.lane.cancel(reason);
    }

    /// The body under the task's timeout. Time the task spends paused at
    /// its gates does not count.
    async fn timed(&self, after: Duration) -> Terminal {
        let start = Instant::now();
        let body = self.body();
        tokio::pin!(body);
        let sleep = tokio::time::sleep(after);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = &mut sleep => {
                    let (paused, ongoing) = self.lane.paused_for();
                    let now = Instant::now();
                    let remaining = (start + after + paused).saturating_duration_since(now);
                    if ongoing || !remaining.is_zero() {
                        sleep.as_mut().reset(now + remaining.max(Duration::from_millis(1)));
                        continue;
                    }
                    // The subtree learns why it is cancelled.
                    self.cancel(CancelReason::Timeout);
                    return Terminal::Failed {
                        action: None,
                        error: TaskError::timed_out(&self.spec.key, after),
                    };
                }
                terminal = &mut body => return terminal,
            }
        }
    }

    /// Tell the hooks the task ended. A hook that panics fails the task.
    fn complete_hooks(&self, terminal: Terminal) -> Terminal {
        if self.lane.config.hooks.is_empty() {
            return terminal;
        }
        // Hooks heard of the task (`on_task_spawn`) only if its application
        // was built, and that built its identity.
        let Some(info) = self.lane.identity() else {
            return terminal;
        };
        let why = match &terminal {
            Terminal::Final { .. } => None,
            Terminal::Failed { error, .. } => Some(error.message.clone()),
            Terminal::Cancelled { .. } => Some(self.lane.cancel_reason().message),
        };
        let end = match &terminal {
            Terminal::Final { .. } => TaskEnd::Completed,
            Terminal::Failed { .. } => TaskEnd::Failed(why.as_deref().unwrap_or_default()),
            Terminal::Cancelled { .. } => TaskEnd::Cancelled(why.as_deref().unwrap_or_default()),
        };
        let called = call_hooks(&self.lane.config.hooks, HookMethod::OnTaskComplete, |h| {
            h.on_task_complete(info, &self.spec.key, &end)
        });
        match called {
            Ok(()) => terminal,
            Err(panic) => Terminal::Failed {
                action: None,
                error: TaskError::hook(&panic),
            },
        }
    }

    /// Hand the terminal item over; returns the kind actually delivered and,
    /// for a failure, its error.
    async fn deliver(&self, terminal: Terminal) -> (ItemKind, Option<TaskError>) {
        let lane = &self.lane;
        let slot = Some(SlotHold(Arc::clone(lane)));
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
                let reason = lane.cancel_reason();
                lane.push_terminal(Report::new(ItemKind::Cancelled, action, Some(reason)), slot);
                return (ItemKind::Cancelled, None);
            }
        };
        let report = Report {
            kind,
            action: action.clone(),
            result,
            state,
            error: error.clone(),
        };
        if lane.terminal_via_ctl || kind == ItemKind::Failed {
            // Failures never wait for mailbox room: fail-fast reacts to them.
            lane.push_terminal(report, slot);
            return (kind, error);
        }
        match lane.send(report, slot.clone()).await {
            Ok(()) => (kind, None),
            Err(Stopped) => {
                let reason = lane.cancel_reason();
                lane.push_terminal(Report::new(ItemKind::Cancelled, action, Some(reason)), slot);
                (ItemKind::Cancelled, None)
            }
        }
    }

    async fn body(&self) -> Terminal {
        if let Some(graph) = &self.spec.graph_name {
            // Boxed: only named tasks pay for the executor's future.
            return Box::pin(self.remote(graph)).await;
        }
        if let Some(unknown) = self.spec.halt.unknown_action(&self.spec.graph) {
            return Terminal::Failed {
                action: None,
                error: TaskError::bad_halt(&self.spec.key, unknown),
            };
        }
        if self.lane.wait_gates().await.is_err() || self.lane.is_cancelled() {
            return Terminal::Cancelled { action: None };
        }
        let mut app = match self.build().await {
            Ok(app) => app,
            Err(error) => {
                return Terminal::Failed {
                    action: None,
                    error,
                };
            }
        };
        if let Err(panic) = call_hooks(&self.lane.config.hooks, HookMethod::OnTaskSpawn, |h| {
            h.on_task_spawn(app.info(), &self.spec.key)
        }) {
            return Terminal::Failed {
                action: None,
                error: TaskError::hook(&panic),
            };
        }
        if let Some(terminal) = self.resumed_end(&app) {
            return terminal;
        }
        let terminal = self.steps(&mut app).await;
        if matches!(terminal, Terminal::Cancelled { .. })
            && self.lane.task.reason.get() == Some(&CancelReason::Task)
            && self.lane.config.persister.is_some()
        {
            // The user cancelled this very task: remember it, so that a
            // later run with the same run id leaves it cancelled. (Boxed,
            // the application with it: rare, and it would otherwise take
            // room in every task's future.)
            return Box::pin(save_cancelled(app, terminal)).await;
        }
        terminal
    }

    /// Hand a named task to the run's executor.
    async fn remote(&self, graph: &Arc<str>) -> Terminal {
        let lane = &self.lane;
        let spec = &self.spec;
        let Some(executor) = self.lane.config.executor.clone() else {
            return Terminal::Failed {
                action: None,
                error: TaskError::new(
                    crate::error::TaskErrorKind::UnknownGraph,
                    format!(
                        "task `{}` names graph `{graph}`, but its run has no task executor \
                         (RunConfig::executor)",
                        spec.key
                    ),
                    None,
                ),
            };
        };
        if lane.wait_gates().await.is_err() || lane.is_cancelled() {
            return Terminal::Cancelled { action: None };
        }
        let final_only = self.lane.config.merge_mode == MergeMode::FinalOnly;
        let task = crate::remote::RemoteTask {
            run_id: Arc::clone(&lane.run.shared.run_id),
            index: lane.index,
            key: Arc::clone(&spec.key),
            path: lane.path.clone(),
            app_id: Arc::clone(&lane.app_id),
            graph: Arc::clone(graph),
            state: spec.state.clone(),
            entrypoint: spec.entrypoint.as_deref().map(str::to_owned),
            halt: RunOptions::clone(&spec.halt),
            tokens: lane.streams_tokens(),
            nodes: self.lane.config.intermediate_nodes && !final_only,
        };
        let remote = crate::remote::RemoteLane::new(Arc::clone(lane), task.nodes);
        executor.execute(task, remote).await
    }

    /// The end of a task whose checkpoint says it has nothing left to do:
    /// it reached its halt point before (it reports the same `Final` again,
    /// from the checkpoint's action and result), or the user cancelled it
    /// in an earlier run (it stays cancelled unless the run resumes
    /// cancelled tasks). `None`: the task has steps to run.
    fn resumed_end(&self, app: &Application) -> Option<Terminal> {
        let checkpoint = app.resumed_from()?;
        match checkpoint.status {
            StepStatus::Cancelled if !self.lane.config.resume_cancelled => {
                self.cancel(CancelReason::Earlier);
                Some(Terminal::Cancelled {
                    action: Some(Arc::from(checkpoint.action.as_str())),
                })
            }
            StepStatus::Completed => {
                let next = app.next_action();
                let reason = self.spec.halt.halt_after_step(&checkpoint.action, next)?;
                // As `Application::advance` reports a halt after a step.
                let (action, result) = match (reason, next) {
                    (HaltReason::HaltBefore, Some(next)) => (next, None),
                    _ => (checkpoint.action.as_str(), checkpoint.result.clone()),
                };
                Some(Terminal::Final {
                    action: Some(Arc::from(action)),
                    result,
                    state: app.state().clone(),
                })
            }
            _ => None,
        }
    }

    /// Step the application until it halts, fails or is cancelled.
    /// (A plain `fn` returning an `async move` block, which, unlike an
    /// `async fn`, keeps no second copy of its arguments: this future lives
    /// in every running task.)
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn steps<'a>(&'a self, app: &'a mut Application) -> impl Future<Output = Terminal> + Send + 'a {
        async move {
            let nodes = self.lane.config.intermediate_nodes
                && self.lane.config.merge_mode != MergeMode::FinalOnly;
            let next_name = |app: &Application| app.next_action_name().cloned();
            // The waits before the retries of the step failing now (boxed: only
            // a failing task pays for it).
            let mut backoffs: Option<Box<backon::ExponentialBackoff>> = None;
            let mut failures = 0u32;
            // The wait before retrying the step that just failed.
            let mut retry_wait: Option<Duration> = None;
            loop {
                if let Some(wait) = retry_wait.take() {
                    tokio::select! {
                        biased;
                        _ = self.lane.cancelled() => return Terminal::Cancelled { action: next_name(app) },
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                // Core's step spends tokio's cooperative budget too; this keeps
                // the pause and cancel checks below in the same budget, so a
                // task whose steps never await always lets timeouts, cancel and
                // pause in.
                tokio::task::consume_budget().await;
                if self.lane.wait_gates().await.is_err() {
                    return Terminal::Cancelled {
                        action: next_name(app),
                    };
                }
                // The step's result lives only in this block, so that it takes
                // no room in this future at the awaits below.
                let (node, outcome) = {
                    let advance = tokio::select! {
                        biased;
                        _ = self.lane.cancelled() => return Terminal::Cancelled { action: next_name(app) },
                        a = AssertUnwindSafe(app.advance_split(&self.spec.halt)).catch_unwind() => a,
                    };
                    match advance {
                        Err(payload) => {
                            // A panic that escaped the step: the application can
                            // not go on.
                            let action = next_name(app);
                            let what = format!("a step of task `{}`", self.spec.key);
                            let mut error = TaskError::panicked(&what, &*payload);
                            error.action = action.as_deref().map(str::to_owned);
                            return Terminal::Failed { action, error };
                        }
                        Ok(Ok(split)) => split,
                        Ok(Err(_)) if self.lane.is_cancelled() => {
                            // Cancelled while the step ran: its action saw the
                            // cancellation (an emit that could not be delivered)
                            // before this select did. That is a cancellation,
                            // not a failure.
                            return Terminal::Cancelled {
                                action: next_name(app),
                            };
                        }
                        Ok(Err(error)) => {
                            let action = next_name(app);
                            let task_error = TaskError::from_application(&error, action.as_deref());
                            // A hook that panicked after the step kept it: the
                            // task can not trust its hooks any more.
                            failures += 1;
                            let retry = &self.lane.config.retry;
                            let wait = if retry.is_none()
                                || matches!(error, tributary_core::ApplicationError::Hook(_))
                                || !retry.should_retry(&error)
                            {
                                None
                            } else {
                                backoffs
                                    .get_or_insert_with(|| Box::new(retry.backoff_iter()))
                                    .next()
                                    .map(crate::config::round_backoff)
                            };
                            let Some(wait) = wait else {
                                return Terminal::Failed {
                                    action,
                                    error: task_error,
                                };
                            };
                            tracing::info!(attempt = failures, wait = ?wait, error = %task_error, "step failed; retrying");
                            retry_wait = Some(wait);
                            continue;
                        }
                    }
                };
                failures = 0;
                backoffs = None;
                let final_item = |o: Halted| Terminal::Final {
                    action: o.action,
                    result: o.result,
                    state: o.state,
                };
                let Some(node) = node.filter(|_| nodes) else {
                    match outcome {
                        Some(end) => return final_item(end),
                        None => continue,
                    }
                };
                // The end, boxed: it lives across the node item's send only when
                // the task halts before an action (rare), and would otherwise
                // take room in every task's future.
                let end = outcome.map(Box::new);
                if self.lane.send(node_report(node), None).await.is_err() {
                    return Terminal::Cancelled {
                        action: next_name(app),
                    };
                }
                if let Some(end) = end {
                    return final_item(*end);
                }
            }
        }
    }

    /// The task's application. Without a persister there is nothing to
    /// load: it is built at once, with no future of its own.
    async fn build(&self) -> Result<Application, TaskError> {
        let spec = &self.spec;
        let error = |e| TaskError::build(&spec.key, &e, spec.entrypoint.as_deref());
        let builder = self.builder();
        if self.lane.config.persister.is_none() {
            return builder.build_fresh().map_err(error);
        }
        // Boxed: the builder's future is large and done with before the
        // first step, so it would only bloat every suspended task.
        Box::pin(builder.build()).await.map_err(error)
    }

    fn builder(&self) -> ApplicationBuilder {
        let spec = &self.spec;
        let lane = &self.lane;
        let config = &lane.config;
        // The identity (id, task path, run, partition key, spawning
        // parent) is the lane's, built only when something asks for it.
        let mut builder = Application::builder(spec.graph.clone())
            .task_identity(Arc::clone(lane) as Arc<dyn TaskIdentity>)
            .state(spec.state.clone())
            .stream_sink(Arc::clone(lane) as Arc<dyn StreamSink>);
        if !config.extensions.is_empty() {
            builder = builder.extensions(&config.extensions);
        }
        builder = builder.extension(TaskRuntime {
            lane: Arc::clone(lane),
        });
        if let Some(entry) = &spec.entrypoint {
            builder = builder.entrypoint(&**entry);
        }
        for hook in &config.hooks {
            builder = builder.hook_arc(Arc::clone(hook));
        }
        if let Some(persister) = &config.persister {
            builder = builder.persister(Arc::clone(persister)).resume();
        }
        builder
    }
}

/// Save that the user cancelled the task; hands its end back.
async fn save_cancelled(app: Application, terminal: Terminal) -> Terminal {
    if let Err(error) = app.save_cancelled().await {
        tracing::warn!(%error, "the task's cancellation could not be saved");
    }
    terminal
}

/// The node item of an intermediate step. A function of its own, taking
/// the record whole, so that the record takes no room in the actor's
/// future.
fn node_report(record: StepRecord) -> Report {
    Report {
        kind: ItemKind::NodeComplete,
        action: Some(record.action),
        result: Some(record.result),
        state: Some(record.state),
        error: None,
    }
}

/// An actor whose future was dropped before it first ran (its runtime shut
/// down) still leaves its run's table: its lane, filled in, holds its run,
/// and the table holds the lane. (Once it has run, its [`ExitGuard`] does
/// this.)
impl Drop for Actor {
    fn drop(&mut self) {
        if !self.lane.task.has_run() {
            self.lane.run.shared.unregister(self.lane.key(), &self.lane);
        }
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
            let cancelled = lane.is_cancelled();
            if !lane.terminal_sent() {
                let (kind, error) = if cancelled {
                    (ItemKind::Cancelled, lane.cancel_reason())
                } else {
                    (
                        ItemKind::Failed,
                        TaskError::new(
                            crate::error::TaskErrorKind::Panicked,
                            "the task's actor stopped unexpectedly",
                            None,
                        ),
                    )
                };
                lane.push_terminal(
                    Report::new(kind, None, Some(error)),
                    Some(SlotHold(Arc::clone(lane))),
                );
            }
            lane.run.shared.update_progress(Change::ended(if cancelled {
                Ended::Cancelled
            } else {
                Ended::Failed
            }));
        }
        lane.run.shared.unregister(lane.key(), lane);
        let _ = lane.run.shared.inbox.send(Inbox::Exited);
    }
}
