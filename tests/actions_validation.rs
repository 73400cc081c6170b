//! Validation after every action, inputs, panics and blocking work.

use async_trait::async_trait;
use serde_json::{Value, json};
use tributary::{
    Action, ActionContext, ActionError, ActionResult, Application, ApplicationError, Graph, Inputs,
    RunOptions, State, action,
};

async fn app_of(a: impl Action, state: State) -> Application {
    Application::builder(Graph::single(a))
        .state(state)
        .build()
        .await
        .unwrap()
}

async fn failing_step(a: impl Action) -> (ActionError, Application) {
    let start = State::new().update([("kept", json!(1)), ("__rt", json!("x"))]);
    let mut app = app_of(a, start.clone()).await;
    let err = app.step(&Inputs::new()).await.unwrap_err();
    // On any error the state is exactly as before and the action is next again.
    assert_eq!(app.state(), &start);
    assert_eq!(
        app.next_action(),
        app.graph().actions().next().map(|a| a.name())
    );
    match err {
        ApplicationError::Step {
            source,
            sequence_id,
        } => {
            assert_eq!(sequence_id, 0);
            (source, app)
        }
        other => panic!("expected a step error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_undeclared_write_is_an_error_naming_action_and_key() {
    let a = action("sneaky")
        .writes(["allowed"])
        .run(|s: State, _, _| async move { Ok((json!({}), s.set("allowed", 1).set("secret", 2))) });
    let (err, _) = failing_step(a).await;
    assert!(
        matches!(&err, ActionError::UndeclaredWrite { action, key } if action == "sneaky" && key == "secret")
    );
    assert_eq!(
        err.to_string(),
        "action `sneaky` wrote key `secret`, which it does not declare in its writes"
    );
}

#[tokio::test]
async fn deleting_an_undeclared_key_is_an_undeclared_write() {
    let a =
        action("deleter").run(|s: State, _, _| async move { Ok((json!({}), s.remove("kept"))) });
    let (err, _) = failing_step(a).await;
    assert!(matches!(err, ActionError::UndeclaredWrite { key, .. } if key == "kept"));
}

#[tokio::test]
async fn a_missing_declared_write_is_an_error() {
    let a = action("lazy")
        .writes(["out"])
        .run(|s: State, _, _| async move { Ok((json!({}), s)) });
    let (err, _) = failing_step(a).await;
    assert!(
        matches!(&err, ActionError::MissingWrite { action, key } if action == "lazy" && key == "out")
    );
}

#[tokio::test]
async fn a_result_that_is_not_an_object_is_an_error() {
    let a = action("shape").run(|s: State, _, _| async move { Ok((json!([1, 2]), s)) });
    let (err, _) = failing_step(a).await;
    assert!(matches!(
        err,
        ActionError::ResultNotObject {
            found: "a list",
            ..
        }
    ));
}

#[tokio::test]
async fn writing_a_reserved_key_is_an_error() {
    let a = action("rt")
        .writes(["__rt"])
        .run(|s: State, _, _| async move { Ok((json!({}), s.set("__rt", "y"))) });
    let (err, _) = failing_step(a).await;
    assert!(matches!(err, ActionError::ReservedKey { key, .. } if key == "__rt"));
}

#[tokio::test]
async fn an_error_returned_by_the_action_is_wrapped_with_its_name() {
    let a = action("boom")
        .run(|_s: State, _, _| async move { Err::<(Value, State), _>("disk full".into()) });
    let (err, _) = failing_step(a).await;
    assert_eq!(err.to_string(), "action `boom` failed: disk full");
}

#[tokio::test]
async fn a_panic_inside_an_action_becomes_an_error_and_the_app_survives() {
    let a = action("panics").run(|s: State, _, _| async move {
        if s.get("kept").is_some() {
            panic!("kaboom");
        }
        Ok((json!({}), s))
    });
    let (err, mut app) = failing_step(a).await;
    assert!(matches!(&err, ActionError::Panicked { message, .. } if message == "kaboom"));
    // The application is still usable.
    app.set_state(State::new());
    assert!(app.step(&Inputs::new()).await.unwrap().is_some());
}

#[tokio::test]
async fn required_inputs_are_checked_and_undeclared_inputs_filtered() {
    let a = action("echo")
        .inputs(["q"])
        .optional_inputs(["limit"])
        .writes(["seen"])
        .run(|s: State, inputs: Inputs, _| async move {
            let seen = Value::Object(inputs.as_map().clone());
            Ok((json!({}), s.set("seen", seen)))
        });
    let mut app = app_of(a, State::new()).await;
    let err = app.step(&Inputs::new().with("limit", 3)).await.unwrap_err();
    assert_eq!(
        err.action_error().unwrap().to_string(),
        "action `echo` requires input `q`, which was not given"
    );
    let rec = app
        .step(&Inputs::new().with("q", "rust").with("extra", true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state.get("seen"), Some(&json!({ "q": "rust" })));
}

#[tokio::test]
async fn run_blocking_runs_off_the_async_thread() {
    // The test's current-thread runtime polls the action on this thread; the
    // blocking body must run on another one.
    let test_thread = format!("{:?}", std::thread::current().id());
    let a = action("cpu")
        .writes(["sum", "thread"])
        .run_blocking(|s: State, _| {
            let sum: u64 = (1..=100u64).sum();
            let thread = format!("{:?}", std::thread::current().id());
            Ok((
                json!({ "sum": sum }),
                s.set("sum", sum).set("thread", thread),
            ))
        });
    let mut app = app_of(a, State::new()).await;
    let rec = app.step(&Inputs::new()).await.unwrap().unwrap();
    assert_eq!(rec.result, json!({ "sum": 5050 }));
    assert_ne!(rec.state.get("thread"), Some(&json!(test_thread)));
}

#[tokio::test]
async fn a_blocking_panic_is_an_error() {
    let a = action("cpu").run_blocking(|_s: State, _| panic!("bad math"));
    let (err, _) = failing_step(a).await;
    assert!(
        err.to_string().contains("blocking task panicked: bad math"),
        "{err}"
    );
}

struct Scale {
    factor: i64,
    reads: Vec<String>,
    writes: Vec<String>,
}

#[async_trait]
impl Action for Scale {
    fn name(&self) -> &str {
        "scale"
    }
    fn reads(&self) -> &[String] {
        &self.reads
    }
    fn writes(&self) -> &[String] {
        &self.writes
    }
    async fn run(&self, state: State, _: Inputs, ctx: ActionContext) -> ActionResult {
        let n: i64 = state.get_as("n")?;
        ctx.emit(json!({ "scaling": n })).await?;
        let out = n * self.factor;
        Ok((
            json!({ "n": out, "seq": ctx.sequence_id(), "app": ctx.app_id() }),
            state.set("n", out),
        ))
    }
}

#[tokio::test]
async fn trait_actions_run_with_their_context() {
    let scale = Scale {
        factor: 3,
        reads: vec!["n".into()],
        writes: vec!["n".into()],
    };
    let mut app = Application::builder(Graph::single(scale))
        .app_id("scaler")
        .state(State::new().set("n", 2))
        .build()
        .await
        .unwrap();
    let out = app.run(RunOptions::after(["scale"])).await.unwrap();
    assert_eq!(
        out.result,
        Some(json!({ "n": 6, "seq": 0, "app": "scaler" }))
    );
}
