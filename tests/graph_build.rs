//! Graph building errors and transition order.

use serde_json::json;
use tributary::{
    Application, Condition, Graph, GraphError, RunOptions, State, action, condition, default, when,
};

fn noop(name: &str) -> tributary::FnAction {
    action(name).run(|s: State, _, _| async move { Ok((json!({}), s)) })
}

#[test]
fn unknown_action_in_a_transition_is_refused() {
    let err = Graph::builder()
        .action(noop("a"))
        .transition("a", "ghost", default())
        .entrypoint("a")
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        GraphError::UnknownAction {
            from: "a".into(),
            to: "ghost".into(),
            unknown: "ghost".into()
        }
    );
    let err = Graph::builder()
        .action(noop("a"))
        .transition("ghost", "a", default())
        .entrypoint("a")
        .build()
        .unwrap_err();
    assert!(matches!(err, GraphError::UnknownAction { unknown, .. } if unknown == "ghost"));
}

#[test]
fn duplicate_names_are_refused() {
    let err = Graph::builder()
        .action(noop("a"))
        .action(noop("a"))
        .entrypoint("a")
        .build()
        .unwrap_err();
    assert_eq!(err, GraphError::DuplicateAction("a".into()));
}

#[test]
fn two_defaults_from_one_node_are_refused() {
    let err = Graph::builder()
        .action(noop("a"))
        .action(noop("b"))
        .transition("a", "b", default())
        .transition("a", "a", when("x", 1))
        .transition("a", "a", default())
        .entrypoint("a")
        .build()
        .unwrap_err();
    assert_eq!(err, GraphError::DuplicateDefault("a".into()));
    assert_eq!(
        err.to_string(),
        "action `a` has more than one default transition"
    );
}

#[test]
fn missing_or_unknown_entrypoint_and_empty_graph_are_refused() {
    assert_eq!(
        Graph::builder().action(noop("a")).build().unwrap_err(),
        GraphError::MissingEntrypoint
    );
    assert_eq!(
        Graph::builder()
            .action(noop("a"))
            .entrypoint("b")
            .build()
            .unwrap_err(),
        GraphError::UnknownEntrypoint("b".into())
    );
    assert_eq!(
        Graph::builder().entrypoint("a").build().unwrap_err(),
        GraphError::Empty
    );
}

/// A graph whose `start` has transitions to `first`, `second` and `third`,
/// added in that order with the given conditions.
async fn route(conditions: [Condition; 3], state: State) -> Option<String> {
    let mut builder = Graph::builder().action(noop("start"));
    for (name, cond) in ["first", "second", "third"].into_iter().zip(conditions) {
        builder = builder.action(noop(name)).transition("start", name, cond);
    }
    let graph = builder.entrypoint("start").build().unwrap();
    let mut app = Application::builder(graph)
        .state(state)
        .build()
        .await
        .unwrap();
    app.step(&Default::default()).await.unwrap();
    app.next_action().map(str::to_owned)
}

#[tokio::test]
async fn first_matching_transition_in_insertion_order_wins() {
    let s = State::new().update([("x", json!(1)), ("y", json!(2))]);
    // Both the second and third hold: the second wins.
    assert_eq!(
        route([when("x", 9), when("x", 1), when("y", 2)], s.clone())
            .await
            .as_deref(),
        Some("second")
    );
    // A default listed first wins over a later matching condition.
    assert_eq!(
        route([default(), when("x", 1), when("y", 2)], s.clone())
            .await
            .as_deref(),
        Some("first")
    );
    // Nothing holds: the run ends.
    assert_eq!(
        route([when("x", 2), when("y", 1), !when("x", 1)], s).await,
        None
    );
}

#[tokio::test]
async fn not_and_or_and_closure_conditions() {
    let s = State::new().update([("x", json!(1)), ("y", json!(2))]);
    let big_y = condition("y > 1", ["y"], |s: &State| {
        s.get("y").and_then(|v| v.as_i64()) > Some(1)
    });
    assert_eq!(
        route(
            [
                when("x", 2) | !big_y.clone(),
                when("x", 1) & big_y.clone(),
                default()
            ],
            s.clone()
        )
        .await
        .as_deref(),
        Some("second")
    );
    assert_eq!(
        route(
            [
                !(when("x", 1) & big_y),
                when("x", 2) | when("y", 2),
                default()
            ],
            s
        )
        .await
        .as_deref(),
        Some("second")
    );
}

#[tokio::test]
async fn a_condition_on_a_missing_key_fails_the_step_naming_the_key() {
    let graph = Graph::builder()
        .action(noop("a"))
        .action(noop("b"))
        .transition("a", "b", when("typo", 1))
        .entrypoint("a")
        .build()
        .unwrap();
    let mut app = Application::builder(graph).build().await.unwrap();
    let err = app.run(RunOptions::new()).await.unwrap_err();
    let action_err = err.action_error().unwrap();
    assert_eq!(
        action_err.to_string(),
        "transition condition `typo == 1` out of action `a` reads key `typo`, which the state lacks"
    );
    assert_eq!(app.next_action(), Some("a"));
}

#[test]
fn transitions_are_listed_in_insertion_order() {
    let graph = Graph::builder()
        .action(noop("a"))
        .action(noop("b"))
        .transition("a", "b", when("k", "v"))
        .transition("a", "a", default())
        .transitions_from(["a", "b"], "b", when("z", 1))
        .entrypoint("a")
        .build()
        .unwrap();
    let listed: Vec<String> = graph
        .transitions()
        .map(|t| format!("{}->{} [{}]", t.from, t.to, t.condition))
        .collect();
    assert_eq!(
        listed,
        [
            "a->b [k == \"v\"]",
            "a->a [default]",
            "a->b [z == 1]",
            "b->b [z == 1]"
        ]
    );
}
