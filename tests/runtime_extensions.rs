//! Dependency injection: values given to a run (or a parallel action)
//! reach every action, nested children included; actions read their own
//! task key and path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tributary::{ParallelAction, RunConfig, Runtime, State, Subgraph, TaskSpec, action};

/// A stand-in for an HTTP client or a pool: counts its uses, never cloned.
#[derive(Debug, Default)]
struct Pool {
    uses: AtomicUsize,
}

#[derive(Debug, Clone, PartialEq)]
struct Region(&'static str);

#[tokio::test]
async fn an_extension_reaches_every_task_and_every_nested_child() {
    let pool = Arc::new(Pool::default());
    let leaf = Subgraph::action(action("leaf").run(|s: State, _, ctx| async move {
        let pool = ctx
            .extension::<Arc<Pool>>()
            .expect("inherited from the run");
        pool.uses.fetch_add(1, Ordering::SeqCst);
        let region = ctx.extension::<Region>().cloned();
        let path: Vec<String> = ctx.task_path().iter().map(|k| k.to_string()).collect();
        Ok((
            json!({ "key": ctx.task_key(), "path": path, "region": region.map(|r| r.0) }),
            s,
        ))
    }));
    let fan = ParallelAction::map_states("fan", leaf, |_, _| Ok(vec![State::new(); 3]))
        .writes(["children"])
        .extension(Region("eu"))
        .reduce(|s, outcomes| {
            let results: Vec<_> = outcomes.iter().map(|o| o.result().cloned()).collect();
            Ok(s.set("children", json!(results)))
        })
        .build();
    let direct = action("direct").run(|s: State, _, ctx| async move {
        let pool = ctx.extension::<Arc<Pool>>().unwrap();
        pool.uses.fetch_add(1, Ordering::SeqCst);
        Ok((
            json!({ "region": ctx.extension::<Region>().map(|r| r.0) }),
            s,
        ))
    });
    let config = RunConfig::new()
        .extension(Arc::clone(&pool))
        .extension(Region("us"));
    let tasks = vec![TaskSpec::action("p", fan), TaskSpec::action("d", direct)];
    let (_h, stream) = Runtime::new().run(tasks, config);
    let outcomes = stream.outcomes().await.unwrap();
    assert_eq!(pool.uses.load(Ordering::SeqCst), 4);
    let children = outcomes[0]
        .state()
        .unwrap()
        .get("children")
        .cloned()
        .unwrap();
    assert_eq!(
        children[1],
        json!({ "key": "1", "path": ["p", "1"], "region": "eu" })
    );
    // The parallel action's value overrides the run's for its children only.
    assert_eq!(outcomes[1].result(), Some(&json!({ "region": "us" })));
}
