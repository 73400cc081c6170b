//! The merger: the consumer's side of a run.
//!
//! The merger runs inside the consumer's `poll_next`: items go from a task
//! straight into the mailbox (or the task's own channel) and from there to
//! the consumer, with no extra hop through a task of its own. It applies the
//! merge mode, the completion policy and the failure policy, and ends the
//! stream once every task has reported its terminal item.

mod as_completed;
mod ordered;
mod zip;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::config::{FailurePolicy, MergeMode, RunConfig};
use crate::end::RunEnd;
use crate::error::RunError;
use crate::handle::RunHandle;
use crate::item::{ItemKind, StreamItem};
use crate::mailbox::reorder::{LaneReceiver, Reorder};
use crate::mailbox::{Ctl, Envelope};
use crate::outcome::TaskOutcome;

use crate::policy::{CompletionPolicy, Decision};
use crate::progress::Progress;
use crate::reason::CancelReason;
use crate::shared::RunShared;
pub use zip::Round;

/// The counts of a run that completed, from [`RunStream::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunReport {
    /// The final counts.
    pub progress: Progress,
    /// Whether the completion policy finished the run (quick exit, first-N,
    /// ...) rather than every task running to its end.
    pub finished_by_policy: bool,
}

/// The stream of a run's items, merged by its [`MergeMode`]. Reading it
/// drives the run; dropping it cancels the run.
///
/// # Cancel safety
///
/// [`next()`](RunStream::next) is cancel safe: an item is only taken from
/// the run when it is returned, so it can sit in a `select!` loop.
pub struct RunStream {
    shared: Arc<RunShared>,
    /// How many keys the paths of the run's own tasks have.
    depth: usize,
    mode: MergeMode,
    failure: FailurePolicy,
    policy: Box<dyn CompletionPolicy>,
    mail: mpsc::Receiver<Envelope>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    ctl_open: bool,
    total: Option<u64>,
    terminals: u64,
    out: VecDeque<StreamItem>,
    reorder: Reorder,
    lanes: VecDeque<LaneReceiver>,
    sealed: u64,
    round: u64,
    rounds: VecDeque<Round>,
    finished_by_policy: bool,
    failed: bool,
    done: bool,
}

impl std::fmt::Debug for RunStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStream")
            .field("mode", &self.mode)
            .field("total", &self.total)
            .field("terminals", &self.terminals)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RunStream {
    pub(crate) fn new(
        shared: Arc<RunShared>,
        config: &RunConfig,
        mail: mpsc::Receiver<Envelope>,
        ctl: mpsc::UnboundedReceiver<Ctl>,
    ) -> Self {
        RunStream {
            depth: shared.prefix.len() + 1,
            shared,
            mode: config.merge_mode,
            failure: config.failure,
            policy: config.make_policy(),
            mail,
            ctl,
            ctl_open: true,
            total: None,
            terminals: 0,
            out: VecDeque::new(),
            reorder: Reorder::default(),
            lanes: VecDeque::new(),
            sealed: 0,
            round: 0,
            rounds: VecDeque::new(),
            finished_by_policy: false,
            failed: false,
            done: false,
        }
    }

    /// A handle to the run.
    pub fn handle(&self) -> RunHandle {
        RunHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The next item of the run: the same as `StreamExt::next`, without
    /// the import.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is only taken from the run when it is
    /// returned, so `next` can sit in a `select!` loop.
    pub async fn next(&mut self) -> Option<StreamItem> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// How the run ended; `None` while it has not.
    pub fn end(&self) -> Option<&RunEnd> {
        self.shared.end.get()
    }

    /// Whether an item comes from one of the run's own tasks (not from a
    /// task nested in one of them).
    pub(crate) fn is_own(&self, item: &StreamItem) -> bool {
        item.path.len() == self.depth
    }

    /// Read the run to its end, dropping the items, and say how it ended.
    ///
    /// # Errors
    ///
    /// [`RunError::TaskFailed`] when a task failed under the fail-fast
    /// policy; [`RunError::Cancelled`] when the run was cancelled (through
    /// its handle, or by the task it is nested in).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, in that the items read so far are simply gone and the
    /// stream can no longer be used (it is consumed).
    pub async fn finish(mut self) -> Result<RunReport, RunError> {
        while self.next().await.is_some() {}
        self.summary()
    }

    /// Read the run to its end and return the outcome of every one of its
    /// own tasks in task order, whatever order they completed in. Buffers
    /// one outcome per task; for runs too large for that, fold items as
    /// they come instead.
    ///
    /// # Errors
    ///
    /// As [`finish`](Self::finish).
    pub async fn outcomes(mut self) -> Result<Vec<TaskOutcome>, RunError> {
        let mut outcomes = Vec::new();
        while let Some(item) = self.next().await {
            if !self.is_own(&item) {
                continue;
            }
            if let Some(outcome) = TaskOutcome::from_item(&item) {
                outcomes.push(outcome);
            }
        }
        self.summary()?;
        outcomes.sort_by_key(|o| o.index);
        Ok(outcomes)
    }

    /// The next round of a [`MergeMode::Zip`] run (do not mix with `next`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_round(&mut self) -> Option<Round> {
        std::future::poll_fn(|cx| self.poll_next_round(cx)).await
    }

    fn poll_next_round(&mut self, cx: &mut Context<'_>) -> Poll<Option<Round>> {
        loop {
            if let Some(round) = self.rounds.pop_front() {
                return Poll::Ready(Some(round));
            }
            if self.done {
                return Poll::Ready(None);
            }
            if !self.drive(cx) {
                return Poll::Pending;
            }
        }
    }

    /// How the run ended so far: its error, or its counts.
    pub(crate) fn summary(&self) -> Result<RunReport, RunError> {
        if let Some(error) = self.shared.end.get().and_then(RunEnd::error) {
            return Err(error);
        }
        Ok(RunReport {
            progress: self.shared.progress_now(),
            finished_by_policy: self.finished_by_policy,
        })
    }

    // ===== driving =====

    /// Make progress; returns whether anything changed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        while self.ctl_open {
            match self.ctl.poll_recv(cx) {
                Poll::Ready(Some(ctl)) => {
                    self.on_ctl(ctl);
                    progressed = true;
                }
                Poll::Ready(None) => self.ctl_open = false,
                Poll::Pending => break,
            }
        }
        progressed |= match self.mode {
            MergeMode::AsCompleted | MergeMode::FinalOnly => self.poll_mail(cx),
            MergeMode::Ordered => self.poll_ordered(cx),
            MergeMode::Zip => self.poll_zip(cx),
        };
        if !self.done && self.total == Some(self.terminals) && self.reorder.is_idle() {
            self.done = true;
            progressed = true;
            let end = if self.shared.root.is_cancelled() && !self.finished_by_policy {
                RunEnd::Cancelled {
                    reason: self.shared.inherited_reason(),
                }
            } else {
                RunEnd::Completed {
                    by_policy: self.finished_by_policy,
                }
            };
            self.shared.set_end(end);
        }
        progressed
    }

    fn on_ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Closed { total } => self.total = Some(total),
            Ctl::Seal { cohort } => self.sealed = self.sealed.max(cohort + 1),
            Ctl::Register { index, cohort, rx } => {
                let lane = LaneReceiver::new(index, cohort, rx);
                let at = self.lanes.partition_point(|l| l.index < index);
                self.lanes.insert(at, lane);
            }
            Ctl::Terminal(env) => {
                self.on_arrival(&env.item);
                match self.mode {
                    MergeMode::AsCompleted | MergeMode::FinalOnly => {
                        if let Some(env) = self.reorder.terminal(env) {
                            self.emit(env);
                        }
                    }
                    MergeMode::Ordered | MergeMode::Zip => {
                        let index = env.index;
                        if let Some(lane) = self.lanes.iter_mut().find(|l| l.index == index) {
                            lane.set_terminal(env);
                        } else if let Some(slot) = env.slot {
                            slot.release_all();
                        }
                    }
                }
            }
        }
    }

    /// A terminal item arrived: the completion and failure policies decide.
    fn on_arrival(&mut self, item: &StreamItem) {
        if item.kind == ItemKind::Failed
            && self.failure == FailurePolicy::FailFast
            && !self.finished_by_policy
            && !self.failed
        {
            self.failed = true;
            if let Some(error) = &item.error {
                self.shared.set_end(RunEnd::Failed {
                    task: item.path.clone(),
                    error: error.clone(),
                });
            }
            self.shared.cancel(CancelReason::FailFast);
        }
        self.decide(item);
    }

    /// The completion policy sees an item of one of the run's own tasks.
    fn decide(&mut self, item: &StreamItem) {
        if item.path.len() != self.depth {
            return;
        }
        match self.policy.on_item(item) {
            Decision::Continue => {}
            Decision::Finish => {
                if !self.finished_by_policy && !self.failed {
                    self.finished_by_policy = true;
                    self.shared.set_end(RunEnd::Completed { by_policy: true });
                    self.shared.cancel(CancelReason::Policy);
                }
            }
            Decision::CancelTask(key) => {
                if let Some(task) = self.shared.task(&key) {
                    task.cancel(CancelReason::Policy);
                }
            }
        }
    }

    /// Hand an item to the consumer.
    fn emit(&mut self, env: Envelope) {
        let item = self.account(env);
        self.out.push_back(item);
    }

    /// The bookkeeping of handing an item over: a terminal item releases its
    /// task's slot and counts towards the end of the run.
    fn account(&mut self, env: Envelope) -> StreamItem {
        if env.terminal {
            if let Some(slot) = env.slot {
                slot.release_all();
            }
            self.terminals += 1;
            self.reorder.ended(env.index);
        }
        env.item
    }
}

impl Stream for RunStream {
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if let Some(round) = this.rounds.pop_front() {
                this.out.extend(round.slots.into_iter().flatten());
                continue;
            }
            if this.done {
                return Poll::Ready(None);
            }
            if !this.drive(cx) {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        if !self.done {
            if self.shared.root.is_cancelled() {
                self.shared.set_end(RunEnd::Cancelled {
                    reason: self.shared.inherited_reason(),
                });
            } else {
                self.shared.set_end(RunEnd::Cancelled {
                    reason: CancelReason::StreamDropped,
                });
                self.shared.cancel(CancelReason::StreamDropped);
            }
        }
    }
}
