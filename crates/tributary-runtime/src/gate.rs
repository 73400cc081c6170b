//! Pause gates: a run's, a task's, and those of the runs a task is nested
//! in, checked together between steps.

use std::sync::Arc;

use tokio::sync::watch;

use crate::task_control::TaskShared;

/// A chain of pause gates (a run's, its task's, and those of the runs it is
/// nested in): open when none is paused.
#[derive(Clone, Default)]
pub(crate) struct GateChain {
    gates: Arc<[Gate]>,
    /// A task's own gate, kept apart so that a task's chain shares its
    /// run's instead of copying it.
    task: Option<Arc<TaskShared>>,
}

/// One pause gate of a chain.
#[derive(Clone)]
pub(crate) enum Gate {
    /// A run's gate.
    Run(Arc<watch::Sender<bool>>),
    /// A task's gate.
    Task(Arc<TaskShared>),
}

impl Gate {
    fn sender(&self) -> Option<&watch::Sender<bool>> {
        match self {
            Gate::Run(gate) => Some(gate),
            Gate::Task(task) => task.pause_gate(),
        }
    }
}

impl GateChain {
    fn all(&self) -> impl Iterator<Item = Gate> + '_ {
        self.gates
            .iter()
            .cloned()
            .chain(self.task.iter().map(|t| Gate::Task(Arc::clone(t))))
    }

    /// Make every task gate of the chain now (a task's gate is otherwise
    /// made on its first pause), so that a wait begun now sees a later
    /// first pause.
    pub(crate) fn materialize(&self) {
        for gate in self.all() {
            if let Gate::Task(task) = gate {
                task.pause_gate_or_init();
            }
        }
    }

    /// This chain and then `gate`.
    pub(crate) fn with(&self, gate: Gate) -> GateChain {
        match (gate, &self.task) {
            (Gate::Task(task), None) => GateChain {
                gates: Arc::clone(&self.gates),
                task: Some(task),
            },
            (gate, _) => {
                let mut gates: Vec<_> = self.all().collect();
                gates.push(gate);
                GateChain {
                    gates: gates.into(),
                    task: None,
                }
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.all().all(|g| g.sender().is_none_or(|g| !*g.borrow()))
    }

    /// Wait until some gate of the chain is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_closed(&self) {
        loop {
            // Subscribe first, then look: a change after the look wakes us.
            let mut receivers: Vec<_> = self
                .all()
                .filter_map(|g| g.sender().map(watch::Sender::subscribe))
                .collect();
            if !self.is_open() {
                return;
            }
            if receivers.is_empty() {
                return std::future::pending().await;
            }
            let changes = receivers.iter_mut().map(|rx| {
                Box::pin(async move {
                    // A dropped gate never closes again.
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
            });
            futures_util::future::select_all(changes).await;
        }
    }

    /// Wait until every gate is open at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_open(&self) {
        loop {
            let mut waited = false;
            for gate in self.all() {
                let Some(gate) = gate.sender() else { continue };
                if *gate.borrow() {
                    waited = true;
                    let mut rx = gate.subscribe();
                    // A dropped gate counts as open.
                    let _ = rx.wait_for(|paused| !*paused).await;
                }
            }
            if !waited {
                return;
            }
        }
    }
}
