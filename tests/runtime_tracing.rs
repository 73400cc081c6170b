//! Observability: a nested run's spans hang under the parent's step span,
//! so one run is one trace; tasks carry their outcome; events mark task
//! start, end, failure, retry and cancel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tributary::{
    FailurePolicy, ParallelAction, RetryPolicy, RunConfig, Runtime, State, Subgraph, TaskSpec,
    action,
};

#[derive(Debug, Clone)]
struct SpanRec {
    name: String,
    parent: Option<u64>,
    fields: String,
}

/// Records every span (name, parent, fields) and every event (message,
/// fields).
#[derive(Default, Clone)]
struct Recorder {
    spans: Arc<Mutex<HashMap<u64, SpanRec>>>,
    events: Arc<Mutex<Vec<String>>>,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent().map(|p| p.id().into_u64()));
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            SpanRec {
                name: attrs.metadata().name().to_owned(),
                parent,
                fields: fields.0,
            },
        );
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.fields.push_str(&fields.0);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields(format!("{}:", event.metadata().level()));
        event.record(&mut fields);
        self.events.lock().unwrap().push(fields.0);
    }
}

// A current-thread runtime with a thread-local subscriber: every task of the
// run is polled on this thread, so the recorder sees all of it.
#[tokio::test]
async fn a_two_level_nested_runs_span_tree_has_one_root() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let leaf = Subgraph::action(action("leaf").run(|s: State, _, _| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok((json!({}), s))
    }));
    let middle = Subgraph::action(
        ParallelAction::map_states("inner", leaf, |_, _| Ok(vec![State::new(); 2])).build(),
    );
    let outer =
        ParallelAction::map_states("outer", middle, |_, _| Ok(vec![State::new(); 2])).build();
    let root = tracing::info_span!("request");
    async {
        let (_h, stream) =
            Runtime::new().run(vec![TaskSpec::action("top", outer)], RunConfig::new());
        stream.finish().await.unwrap();
    }
    .instrument(root)
    .await;

    let spans = recorder.spans.lock().unwrap().clone();
    let roots: Vec<_> = spans.values().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "roots: {roots:?}");
    assert_eq!(roots[0].name, "request");
    // 1 + 2 + 4 tasks, every one completed.
    let tasks: Vec<_> = spans
        .values()
        .filter(|s| s.name == "tributary.task")
        .collect();
    assert_eq!(tasks.len(), 7);
    assert!(
        tasks
            .iter()
            .all(|t| t.fields.contains("outcome=\"completed\"")),
        "{tasks:?}"
    );
    // A leaf's task span sits under a step span of its parent task.
    let leaf_task = spans
        .iter()
        .find(|(_, s)| s.name == "tributary.step" && s.fields.contains("action=leaf"))
        .and_then(|(_, s)| s.parent)
        .unwrap();
    let leaf_parent = spans[&leaf_task].parent.unwrap();
    assert_eq!(spans[&leaf_parent].name, "tributary.step");
    assert!(spans[&leaf_parent].fields.contains("action=inner"));
    // Events mark each task's start and end.
    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events.iter().filter(|e| e.contains("task started")).count(),
        7
    );
    assert_eq!(
        events.iter().filter(|e| e.contains("task ended")).count(),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn failures_retries_and_cancels_are_events_with_outcomes_on_the_task_span() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let failing = TaskSpec::action(
        "flaky",
        action("call").run(|_s: State, _, _| async move { Err("503".into()) }),
    );
    let slow = TaskSpec::action(
        "slow",
        action("wait").run(|s: State, _, _| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok((json!({}), s))
        }),
    );
    let config = RunConfig::new()
        .retry(RetryPolicy::exponential(2, Duration::from_millis(10)))
        .failure_policy(FailurePolicy::FailFast);
    let (_h, stream) = Runtime::new().run(vec![failing, slow], config);
    let _ = stream.finish().await;

    let events = recorder.events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("INFO:") && e.contains("retrying")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("WARN:") && e.contains("task failed")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("task cancelled")),
        "{events:?}"
    );
    let spans = recorder.spans.lock().unwrap().clone();
    let outcome = |key: &str| {
        spans
            .values()
            .find(|s| s.name == "tributary.task" && s.fields.contains(&format!("task={key}")))
            .map(|s| s.fields.clone())
            .unwrap()
    };
    assert!(outcome("flaky").contains("outcome=\"failed\""));
    assert!(outcome("slow").contains("outcome=\"cancelled\""));
}

#[tokio::test]
async fn a_persisted_run_without_a_run_id_warns_that_it_cannot_resume_elsewhere() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let warnings = || {
        recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("WARN") && e.contains("cannot resume across processes"))
            .count()
    };

    let leaf =
        Subgraph::action(action("leaf").run(|s: State, _, _| async move { Ok((json!({}), s)) }));
    let map = ParallelAction::map_states("map", leaf, |_, _| Ok(vec![State::new(); 2])).build();
    let persister = Arc::new(tributary::InMemoryPersister::new());
    let run = |config: RunConfig| {
        let (_h, stream) = Runtime::new().run(vec![TaskSpec::action("top", map.clone())], config);
        stream.finish()
    };
    run(RunConfig::new().persister(persister.clone()))
        .await
        .unwrap();
    // Once, for the top-level run; its nested run's children have app ids
    // derived from their parent's.
    assert_eq!(warnings(), 1);
    run(RunConfig::new().persister(persister).run_id("named"))
        .await
        .unwrap();
    run(RunConfig::new()).await.unwrap();
    assert_eq!(
        warnings(),
        1,
        "a named run or one without a persister does not warn"
    );
}
