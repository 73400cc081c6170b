//! Checkpoints after every step, resume, fork, and the in-memory persister.

use std::sync::Arc;

use serde_json::json;
use tributary::{Application, BuildError, InMemoryPersister, Persister, State, StepStatus};

use crate::persister_contract::{Counters, Open, graph};

fn memory() -> Open {
    let p: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
    Arc::new(move || {
        let p = Arc::clone(&p);
        Box::pin(async move { p })
    })
}

crate::persister_contract_tests!(memory());

#[tokio::test]
async fn resume_without_a_checkpoint_starts_fresh_from_the_given_state() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let app = Application::builder(graph(&k))
        .app_id("new")
        .state(State::new().set("trail", json!(["seed"])))
        .persister(p.clone())
        .resume()
        .build()
        .await
        .unwrap();
    assert_eq!(app.next_action(), Some("a"));
    assert_eq!(app.state().get("trail"), Some(&json!(["seed"])));
}

#[tokio::test]
async fn resume_and_fork_errors_are_clear() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let no_persister = Application::builder(graph(&k))
        .resume()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(no_persister, BuildError::NoPersister));
    let self_fork = Application::builder(graph(&k))
        .app_id("x")
        .persister(p.clone())
        .fork_from("x", None)
        .build()
        .await
        .unwrap_err();
    assert_eq!(self_fork.to_string(), "cannot fork app `x` from itself");
    let missing = Application::builder(graph(&k))
        .persister(p.clone())
        .fork_from("ghost", Some(4))
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no checkpoint of app `ghost` at sequence 4 to fork from"
    );
    let bad_entry = Application::builder(graph(&k))
        .entrypoint("zzz")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(bad_entry, BuildError::UnknownEntrypoint(ref e) if e == "zzz"));
}

#[tokio::test]
async fn a_checkpoint_of_an_unknown_action_is_refused() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    p.save(&tributary::Checkpoint::new(
        "old",
        3,
        "removed_action",
        StepStatus::Completed,
        State::new(),
    ))
    .await
    .unwrap();
    let err = Application::builder(graph(&k))
        .app_id("old")
        .persister(p.clone())
        .resume()
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownCheckpointAction { ref action, .. } if action == "removed_action")
    );
}
