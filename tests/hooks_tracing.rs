//! Hooks fire in order; runs and steps are tracing spans.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tributary::{
    AppInfo, Application, ApplicationError, Graph, Hook, RunOptions, RunOutcome, State, StepInfo,
    StepOutcome, StreamItemInfo, action, default,
};

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Hook for Recorder {
    fn on_create(&self, app: &AppInfo, _: &State) {
        self.push(format!("create {}", app.app_id));
    }
    fn before_run(&self, _: &AppInfo, _: &State) {
        self.push("before_run".into());
    }
    fn after_run(&self, _: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {
        match outcome {
            Err(ApplicationError::Abandoned { .. }) => self.push("after_run abandoned".into()),
            _ => self.push(format!("after_run ok={}", outcome.is_ok())),
        }
    }
    fn before_step(&self, step: &StepInfo<'_>) {
        self.push(format!("before_step {} {}", step.sequence_id, step.action));
    }
    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let what = match outcome {
            StepOutcome::Completed { items, .. } => format!("completed items={items}"),
            StepOutcome::Failed { .. } => "failed".into(),
            StepOutcome::Abandoned { items } => format!("abandoned items={items}"),
            _ => "other".into(),
        };
        self.push(format!("after_step {} {what}", step.action));
    }
    fn on_stream_item(&self, item: &StreamItemInfo<'_>, value: &Value) {
        self.push(format!("item {} {} {value}", item.action, item.index));
    }
}

fn graph() -> Graph {
    Graph::builder()
        .action(action("one").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("two").run(|s: State, _, ctx| async move {
            ctx.emit("x").await?;
            ctx.emit("y").await?;
            Ok((json!({}), s))
        }))
        .transition("one", "two", default())
        .entrypoint("one")
        .build()
        .unwrap()
}

#[tokio::test]
async fn hooks_fire_in_lifecycle_order() {
    let rec = Arc::new(Recorder::default());
    let mut app = Application::builder(graph())
        .app_id("h")
        .hook_arc(rec.clone())
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap();
    assert_eq!(
        rec.take(),
        [
            "create h",
            "before_run",
            "before_step 0 one",
            "after_step one completed items=0",
            "before_step 1 two",
            "item two 0 \"x\"",
            "item two 1 \"y\"",
            "after_step two completed items=2",
            "after_run ok=true",
        ]
    );
}

#[tokio::test]
async fn an_abandoned_stream_step_is_reported() {
    let rec = Arc::new(Recorder::default());
    let chatty = Graph::single(action("chatty").run(|s: State, _, ctx| async move {
        for i in 0..100 {
            ctx.emit(i).await?;
        }
        Ok((json!({}), s))
    }));
    let mut app = Application::builder(chatty)
        .hook_arc(rec.clone())
        .build()
        .await
        .unwrap();
    {
        let mut stream = app
            .stream_result(RunOptions::after(["chatty"]))
            .await
            .unwrap();
        assert_eq!(stream.next().await, Some(json!(0)));
    }
    let log = rec.take();
    let [.., step, run] = &log[..] else {
        panic!("{log:?}")
    };
    assert!(
        step.starts_with("after_step chatty abandoned items="),
        "{log:?}"
    );
    // The run that told its hooks it started tells them it was abandoned.
    assert_eq!(run, "after_run abandoned", "{log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("after_run")).count(),
        1,
        "{log:?}"
    );
}

/// (span, its parent's name) pairs.
type Parents = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Records the names of spans as they are created, with their fields, and
/// each span's parent; then every field recorded on a span later
/// (`"{span} | field=value"`) and every event (`"event {span} | fields"`).
#[derive(Default, Clone)]
struct SpanNames(Arc<Mutex<Vec<String>>>, Parents, Arc<Mutex<Vec<String>>>);

/// A span's description, kept in its extensions.
struct Desc(String);

/// Writes fields as ` name=value`.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanNames
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = Fields(attrs.metadata().name().to_owned());
        attrs.record(&mut v);
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent().map(|p| p.name().to_owned()));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Desc(v.0.clone()));
        }
        self.1.lock().unwrap().push((v.0.clone(), parent));
        self.0.lock().unwrap().push(v.0);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let desc = span
            .extensions()
            .get::<Desc>()
            .map(|d| d.0.clone())
            .unwrap_or_default();
        let mut v = Fields(format!("{desc} |"));
        values.record(&mut v);
        self.2.lock().unwrap().push(v.0);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let desc = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<Desc>().map(|d| d.0.clone()))
            .unwrap_or_default();
        let mut v = Fields(format!("event {} {desc} |", event.metadata().level()));
        event.record(&mut v);
        self.2.lock().unwrap().push(v.0);
    }
}

impl SpanNames {
    /// The records and events of spans whose description contains `needle`.
    fn records_of(&self, needle: &str) -> Vec<String> {
        self.2
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

/// Installs one global recorder for the whole test binary: a scoped
/// subscriber races with other tests over tracing's callsite cache.
fn global_spans() -> &'static SpanNames {
    static SPANS: std::sync::OnceLock<SpanNames> = std::sync::OnceLock::new();
    SPANS.get_or_init(|| {
        let names = SpanNames::default();
        let subscriber = tracing_subscriber::registry().with(names.clone());
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        names
    })
}

#[tokio::test]
async fn every_run_and_step_is_a_tracing_span() {
    let names = global_spans();
    let mut app = Application::builder(graph())
        .app_id("traced")
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap();
    let mine: Vec<String> = names
        .0
        .lock()
        .unwrap()
        .iter()
        // Exactly this app id: the runtime test next door runs `traced-task-app`.
        .filter(|s| s.split(' ').any(|field| field == "app_id=traced"))
        .cloned()
        .collect();
    assert_eq!(
        mine,
        [
            "tributary.run app_id=traced",
            "tributary.step app_id=traced action=one sequence_id=0",
            "tributary.step app_id=traced action=two sequence_id=1",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runtime_task_is_a_tracing_span_around_its_steps() {
    let names = global_spans();
    let task = tributary::TaskSpec::new("traced-task", graph()).app_id("traced-task-app");
    let (_h, stream) = tributary::Runtime::new().run(vec![task], tributary::RunConfig::new());
    stream.finish().await.unwrap();
    let mine: Vec<String> = names
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.contains("traced-task"))
        .cloned()
        .collect();
    assert_eq!(
        mine,
        [
            "tributary.task task=traced-task index=0 app_id=traced-task-app",
            "tributary.step app_id=traced-task-app action=one sequence_id=0",
            "tributary.step app_id=traced-task-app action=two sequence_id=1",
        ]
    );
    // The steps run inside the task's span.
    let parents: Vec<Option<String>> = names
        .1
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("tributary.step app_id=traced-task-app"))
        .map(|(_, parent)| parent.clone())
        .collect();
    assert_eq!(
        parents,
        [
            Some("tributary.task".to_owned()),
            Some("tributary.task".to_owned())
        ]
    );
}

#[tokio::test]
async fn step_spans_carry_their_outcome_and_a_failure_is_an_event() {
    let names = global_spans();
    let flaky = Graph::builder()
        .action(action("fine").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("breaks").run(|_, _, _| async move { Err("no route to host".into()) }))
        .transition("fine", "breaks", default())
        .entrypoint("fine")
        .build()
        .unwrap();
    let mut app = Application::builder(flaky)
        .app_id("spans-outcomes")
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap_err();
    let records = names.records_of("app_id=spans-outcomes ");
    let fine = "tributary.step app_id=spans-outcomes action=fine sequence_id=0 |";
    let breaks = "tributary.step app_id=spans-outcomes action=breaks sequence_id=1 |";
    let run = "tributary.run app_id=spans-outcomes |";
    let expected = [
        format!("{fine} outcome=completed"),
        format!("{breaks} outcome=failed"),
        format!("{breaks} error_kind=action_failed"),
        format!(
            "event WARN {breaks} message=step failed error_kind=action_failed \
             error=step 1 failed: action `breaks` failed: no route to host"
        ),
        format!("{run} outcome=failed"),
        format!("{run} error_kind=action_failed"),
    ];
    for line in &expected {
        assert!(records.contains(line), "missing {line:?} in {records:#?}");
    }
}

#[tokio::test]
async fn an_abandoned_step_span_says_so() {
    let names = global_spans();
    let waits = Graph::single(action("waits").run(|s, _, _| async move {
        std::future::pending::<()>().await;
        Ok((json!({}), s))
    }));
    let mut app = Application::builder(waits)
        .app_id("spans-abandoned")
        .build()
        .await
        .unwrap();
    assert!(
        futures_util::FutureExt::now_or_never(app.run(RunOptions::new())).is_none(),
        "the step waits"
    );
    let records = names.records_of("app_id=spans-abandoned ");
    let step = "tributary.step app_id=spans-abandoned action=waits sequence_id=0 |";
    assert!(
        records.contains(&format!("{step} outcome=abandoned")),
        "{records:#?}"
    );
}
