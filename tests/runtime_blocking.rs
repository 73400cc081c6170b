//! The blocking facade, from plain synchronous code.

use serde_json::json;
use tributary::blocking::BlockingRuntime;
use tributary::{ItemKind, RunConfig, State, TaskSource, TaskSpec};

use crate::support::{Count, two_step};

#[test]
fn a_sync_program_iterates_a_run_and_controls_it() {
    let rt = BlockingRuntime::new().unwrap();
    let graph = two_step(1, Count::default());
    let tasks = (0..4).map(move |i| {
        TaskSpec::new(format!("t{i}"), graph.clone()).state(State::new().set("i", i))
    });
    let run = rt.run(TaskSource::iter(tasks), RunConfig::new());
    assert_eq!(run.handle().progress_now().failed, 0);
    let items: Vec<_> = run.collect();
    assert_eq!(
        items.iter().filter(|i| i.kind == ItemKind::Final).count(),
        4
    );
    assert!(items.iter().all(|i| i.result.is_some()));

    let graph = two_step(1, Count::default());
    let outcomes = rt
        .run(vec![TaskSpec::new("only", graph)], RunConfig::new())
        .outcomes()
        .unwrap();
    assert_eq!(outcomes[0].result(), Some(&json!({ "action": "second" })));
}

#[test]
fn cancel_from_sync_code_waits_for_the_tasks() {
    let rt = BlockingRuntime::new().unwrap();
    let started = Count::default();
    let s = started.clone();
    let forever =
        tributary::Graph::single(tributary::action("wait").run(move |st: State, _, _| {
            let s = s.clone();
            async move {
                s.bump();
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                Ok((json!({}), st))
            }
        }));
    let tasks: Vec<_> = (0..3)
        .map(|i| TaskSpec::new(format!("t{i}"), forever.clone()))
        .collect();
    let run = rt.run(tasks, RunConfig::new());
    rt.block_on(async {
        run.handle()
            .progress()
            .wait_for(|p| p.running == 3)
            .await
            .unwrap();
    });
    run.cancel();
    assert!(run.handle().is_cancelled());
    assert_eq!(run.filter(|i| i.kind == ItemKind::Cancelled).count(), 3);
}

#[test]
fn actions_under_the_blocking_facade_can_open_sockets() {
    let rt = BlockingRuntime::new().unwrap();
    let graph = tributary::Graph::single(tributary::action("listen").run(
        |s: State, _, _| async move {
            // Needs the runtime's I/O driver.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let (accepted, connected) = tokio::join!(
                listener.accept(),
                tokio::net::TcpStream::connect(("127.0.0.1", port))
            );
            accepted?;
            connected?;
            Ok((json!({ "port": port }), s))
        },
    ));
    let outcomes = rt
        .run(vec![TaskSpec::new("net", graph)], RunConfig::new())
        .outcomes()
        .unwrap();
    assert!(outcomes[0].is_completed(), "{:?}", outcomes[0].status);
}
