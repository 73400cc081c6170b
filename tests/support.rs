//! Helpers shared by the runtime tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tributary::{FnAction, Graph, State, StreamItem, action, default};

/// Counts live values: +1 when made, -1 when dropped.
#[derive(Clone, Default)]
pub(crate) struct Live(pub(crate) Arc<AtomicUsize>);

pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl Live {
    pub(crate) fn guard(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(Arc::clone(&self.0))
    }
    pub(crate) fn now(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A shared counter.
#[derive(Clone, Default)]
pub(crate) struct Count(pub(crate) Arc<AtomicUsize>);

impl Count {
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An action that sleeps `ms` per token (reading `delay_ms` from the state
/// when present), emits `tokens` tokens named `{name}{i}`, counts its runs.
pub(crate) fn streamer(name: &'static str, tokens: usize, runs: Count) -> FnAction {
    action(name).run(move |s: State, _, ctx| {
        let runs = runs.clone();
        async move {
            runs.bump();
            let delay = s.get("delay_ms").and_then(|v| v.as_u64()).unwrap_or(0);
            for i in 0..tokens {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                ctx.emit(format!("{name}{i}")).await?;
            }
            Ok((json!({ "action": name }), s))
        }
    })
}

/// `first` -> `second`, both streaming `tokens` tokens.
pub(crate) fn two_step(tokens: usize, runs: Count) -> Graph {
    Graph::builder()
        .action(streamer("first", tokens, runs.clone()))
        .action(streamer("second", tokens, runs))
        .transition("first", "second", default())
        .entrypoint("first")
        .build()
        .unwrap()
}

/// The items of each task, by task index.
pub(crate) fn by_task(items: &[StreamItem]) -> std::collections::BTreeMap<u64, Vec<&StreamItem>> {
    let mut map = std::collections::BTreeMap::<u64, Vec<&StreamItem>>::new();
    for item in items {
        map.entry(item.task_index).or_default().push(item);
    }
    map
}
