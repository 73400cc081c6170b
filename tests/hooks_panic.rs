//! A hook that panics becomes a typed error naming the hook method, from
//! `run`, `iterate` and `stream_result` alike; it never unwinds through the
//! application, and two panicking hooks never abort the process.

use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tributary::{
    ActionError, AppInfo, Application, ApplicationError, BuildError, Graph, Hook, HookMethod,
    HookPanic, RunOptions, RunOutcome, State, StepInfo, StepOutcome, StreamItemInfo, action,
    default,
};

/// Panics in every method listed, with the message `boom in {method}`.
struct Panics(Vec<HookMethod>);

impl Panics {
    fn maybe(&self, method: HookMethod) {
        if self.0.contains(&method) {
            panic!("boom in {method}");
        }
    }
}

impl Hook for Panics {
    fn on_create(&self, _: &AppInfo, _: &State) {
        self.maybe(HookMethod::OnCreate);
    }
    fn before_run(&self, _: &AppInfo, _: &State) {
        self.maybe(HookMethod::BeforeRun);
    }
    fn after_run(&self, _: &AppInfo, _: Result<&RunOutcome, &ApplicationError>) {
        self.maybe(HookMethod::AfterRun);
    }
    fn before_step(&self, _: &StepInfo<'_>) {
        self.maybe(HookMethod::BeforeStep);
    }
    fn after_step(&self, _: &StepInfo<'_>, _: &StepOutcome<'_>) {
        self.maybe(HookMethod::AfterStep);
    }
    fn on_stream_item(&self, _: &StreamItemInfo<'_>, _: &Value) {
        self.maybe(HookMethod::OnStreamItem);
    }
}

/// Counts what the other hooks are told, so a test sees that a panicking
/// hook does not keep them from being called.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
    fn count(log: &[String], prefix: &str) -> usize {
        log.iter().filter(|l| l.starts_with(prefix)).count()
    }
}

impl Hook for Log {
    fn before_run(&self, _: &AppInfo, _: &State) {
        self.0.lock().unwrap().push("before_run".into());
    }
    fn after_run(&self, _: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {
        let what = match outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("err {e}"),
        };
        self.0.lock().unwrap().push(format!("after_run {what}"));
    }
    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let what = match outcome {
            StepOutcome::Completed { .. } => "completed",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::Abandoned { .. } => "abandoned",
            _ => "other",
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("after_step {} {what}", step.action));
    }
}

/// one -> two; `two` emits two items.
fn graph() -> Graph {
    Graph::builder()
        .action(action("one").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(
            action("two")
                .writes(["done"])
                .run(|s: State, _, ctx| async move {
                    ctx.emit("x").await?;
                    ctx.emit("y").await?;
                    Ok((json!({ "done": true }), s.set("done", true)))
                }),
        )
        .transition("one", "two", default())
        .entrypoint("one")
        .build()
        .unwrap()
}

async fn app(hooks: Vec<Arc<dyn Hook>>) -> Application {
    let mut builder = Application::builder(graph()).app_id("panicky");
    for hook in hooks {
        builder = builder.hook_arc(hook);
    }
    builder.build().await.unwrap()
}

/// The step-level methods, which panic inside a step.
const STEP_METHODS: [HookMethod; 3] = [
    HookMethod::BeforeStep,
    HookMethod::AfterStep,
    HookMethod::OnStreamItem,
];

/// Every method an application calls during a run.
const RUN_METHODS: [HookMethod; 5] = [
    HookMethod::BeforeRun,
    HookMethod::AfterRun,
    HookMethod::BeforeStep,
    HookMethod::AfterStep,
    HookMethod::OnStreamItem,
];

fn expected(method: HookMethod) -> HookPanic {
    HookPanic {
        method,
        message: format!("boom in {method}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Drive {
    Run,
    Iterate,
    StreamResult,
}

/// Drive `app` to its end and return the error that ended it, if any.
async fn drive(app: &mut Application, how: Drive) -> Option<ApplicationError> {
    match how {
        Drive::Run => app.run(RunOptions::new()).await.err(),
        Drive::Iterate => {
            let items: Vec<_> = app.iterate(RunOptions::new()).collect().await;
            let errors: Vec<_> = items.into_iter().filter_map(Result::err).collect();
            assert!(errors.len() <= 1, "at most one error ends a run");
            errors.into_iter().next()
        }
        Drive::StreamResult => match app.stream_result(RunOptions::after(["two"])).await {
            Err(e) => Some(e),
            Ok(mut stream) => {
                while stream.next().await.is_some() {}
                stream.get().await.err()
            }
        },
    }
}

#[tokio::test]
async fn each_hook_method_panicking_is_a_typed_error_naming_it() {
    for how in [Drive::Run, Drive::Iterate, Drive::StreamResult] {
        for method in RUN_METHODS {
            let log = Arc::new(Log::default());
            let mut app = app(vec![Arc::new(Panics(vec![method])), log.clone()]).await;
            let err = drive(&mut app, how)
                .await
                .unwrap_or_else(|| panic!("{how:?} {method}: the run succeeded"));
            assert_eq!(
                err.hook_panic(),
                Some(&expected(method)),
                "{how:?} {method}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("`{method}` panicked")),
                "{err}"
            );
            // The other hook still heard the run end, exactly once.
            let log = log.take();
            assert_eq!(
                Log::count(&log, "before_run"),
                1,
                "{how:?} {method} {log:?}"
            );
            assert_eq!(Log::count(&log, "after_run"), 1, "{how:?} {method} {log:?}");
        }
    }
}

#[tokio::test]
async fn the_error_variant_says_whether_the_step_was_kept() {
    for method in STEP_METHODS {
        let mut app = app(vec![Arc::new(Panics(vec![method]))]).await;
        let err = app.run(RunOptions::new()).await.unwrap_err();
        match method {
            // The step fails: the state is as before it, the action is next.
            HookMethod::BeforeStep | HookMethod::OnStreamItem => {
                let Some(ActionError::HookPanicked { action, panic }) = err.action_error() else {
                    panic!("{method}: {err:?}");
                };
                assert_eq!(panic, &expected(method));
                let failed = if method == HookMethod::BeforeStep {
                    "one"
                } else {
                    "two"
                };
                assert_eq!(action, failed);
                assert_eq!(app.next_action(), Some(failed));
                assert_eq!(app.state().get("done"), None);
            }
            // The step is kept (it completed); the run stops after it.
            _ => {
                let ApplicationError::Hook(panic) = &err else {
                    panic!("{method}: {err:?}");
                };
                assert_eq!(panic, &expected(method));
                assert_eq!(app.sequence_id(), Some(0));
                assert_eq!(app.next_action(), Some("two"));
            }
        }
    }
}

#[tokio::test]
async fn a_panic_in_on_create_refuses_the_build() {
    let err = Application::builder(graph())
        .hook(Panics(vec![HookMethod::OnCreate]))
        .build()
        .await
        .unwrap_err();
    let BuildError::Hook(panic) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(panic, &expected(HookMethod::OnCreate));
}

#[tokio::test]
async fn two_hooks_panicking_in_every_method_give_the_first_error_and_no_abort() {
    // Two hooks panicking in before_step and again in after_step (the
    // after_step of a failed step) used to unwind out of the step and panic
    // again in its drop guard: "panic in a destructor during cleanup", and
    // the whole test binary aborted.
    let all = RUN_METHODS.to_vec();
    let log = Arc::new(Log::default());
    let mut app = app(vec![
        Arc::new(Panics(all.clone())),
        Arc::new(Panics(all)),
        log.clone(),
    ])
    .await;
    let err = app.run(RunOptions::new()).await.unwrap_err();
    assert_eq!(err.hook_panic(), Some(&expected(HookMethod::BeforeRun)));
    assert_eq!(log.take(), ["before_run", &format!("after_run err {err}")]);

    let mut app = app_with(vec![
        Panics(vec![HookMethod::BeforeStep, HookMethod::AfterStep]),
        Panics(vec![HookMethod::BeforeStep, HookMethod::AfterStep]),
    ])
    .await;
    let err = app.run(RunOptions::new()).await.unwrap_err();
    assert_eq!(err.hook_panic(), Some(&expected(HookMethod::BeforeStep)));
}

async fn app_with(hooks: Vec<Panics>) -> Application {
    app(hooks
        .into_iter()
        .map(|h| Arc::new(h) as Arc<dyn Hook>)
        .collect())
    .await
}

#[tokio::test]
async fn a_hook_panicking_while_an_abandoned_step_is_reported_does_not_abort() {
    // A step dropped mid-way is reported from a drop guard: the hooks'
    // panics there must be caught too.
    let waits = Graph::single(action("waits").run(|s, _, _| async move {
        std::future::pending::<()>().await;
        Ok((json!({}), s))
    }));
    let log = Arc::new(Log::default());
    let mut app = Application::builder(waits)
        .hook(Panics(vec![HookMethod::AfterStep, HookMethod::AfterRun]))
        .hook(Panics(vec![HookMethod::AfterStep, HookMethod::AfterRun]))
        .hook_arc(log.clone())
        .build()
        .await
        .unwrap();
    assert!(app.run(RunOptions::new()).now_or_never().is_none());
    {
        let mut steps = app.iterate(RunOptions::new());
        assert!(steps.next().now_or_never().is_none());
    }
    let log = log.take();
    let want = [
        "before_run",
        "after_step waits abandoned",
        "after_run err the run of app",
        "before_run",
        "after_step waits abandoned",
        "after_run err the run of app",
    ];
    assert_eq!(log.len(), want.len(), "{log:?}");
    for (got, want) in log.iter().zip(want) {
        assert!(got.starts_with(want), "{log:?}");
    }
    assert_eq!(app.next_action(), Some("waits"));
}

#[tokio::test]
async fn call_hooks_calls_every_hook_and_returns_the_first_panic() {
    let log = Arc::new(Log::default());
    let hooks: Vec<Arc<dyn Hook>> = vec![
        Arc::new(Panics(vec![HookMethod::BeforeRun])),
        log.clone(),
        Arc::new(Panics(vec![HookMethod::BeforeRun])),
    ];
    let app = app(vec![]).await;
    let result = tributary::call_hooks(&hooks, HookMethod::BeforeRun, |hook| {
        hook.before_run(app.info(), app.state())
    });
    assert_eq!(result, Err(expected(HookMethod::BeforeRun)));
    assert_eq!(log.take(), ["before_run"]);
    let quiet = tributary::call_hooks(&hooks, HookMethod::AfterStep, |_| {});
    assert_eq!(quiet, Ok(()));
}
