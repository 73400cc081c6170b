//! What an action reads from its context: its task key and path, and the
//! services attached to the application (dependency injection).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tributary::{AppInfo, Application, Extensions, Graph, Hook, RunOptions, State, action};

/// One action that writes what its context says about the task.
fn where_am_i() -> Graph {
    Graph::single(
        action("where")
            .writes(["key", "path"])
            .run(|s: State, _, ctx| async move {
                let key = ctx.task_key().map(str::to_owned);
                let path: Vec<String> = ctx.task_path().iter().map(|k| k.to_string()).collect();
                Ok((json!({}), s.set("key", key).set("path", path)))
            }),
    )
}

#[tokio::test]
async fn outside_a_runtime_the_task_key_is_none_and_the_path_empty() {
    let mut app = Application::builder(where_am_i()).build().await.unwrap();
    let out = app.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("key"), Some(&json!(null)));
    assert_eq!(out.state.get("path"), Some(&json!([])));
    assert_eq!(app.info().task_key(), None);
}

#[tokio::test]
async fn the_builder_sets_the_task_path_and_the_key_is_its_last_element() {
    #[derive(Default)]
    struct SeesPath(std::sync::Mutex<Vec<String>>);
    impl Hook for SeesPath {
        fn on_create(&self, app: &AppInfo, _: &State) {
            let path = app.task_path().join("/");
            self.0.lock().unwrap().push(path);
        }
    }
    let hook = Arc::new(SeesPath::default());
    let mut app = Application::builder(where_am_i())
        .task_path(["report", "city-3", "flood risk"])
        .hook_arc(hook.clone())
        .build()
        .await
        .unwrap();
    let out = app.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("key"), Some(&json!("flood risk")));
    assert_eq!(
        out.state.get("path"),
        Some(&json!(["report", "city-3", "flood risk"]))
    );
    // Hooks see the same path through the application's identity.
    assert_eq!(*hook.0.lock().unwrap(), ["report/city-3/flood risk"]);
}

#[tokio::test]
async fn app_info_serialises_its_task_path_only_when_it_has_one() {
    let plain = Application::builder(where_am_i())
        .app_id("p")
        .build()
        .await
        .unwrap();
    let encoded = serde_json::to_value(plain.info().as_ref()).unwrap();
    assert!(encoded.get("task_path").is_none(), "{encoded}");
    let placed = Application::builder(where_am_i())
        .app_id("q")
        .task_path(["a", "b"])
        .build()
        .await
        .unwrap();
    let encoded = serde_json::to_value(placed.info().as_ref()).unwrap();
    assert_eq!(encoded["task_path"], json!(["a", "b"]));
    let decoded: AppInfo = serde_json::from_value(encoded).unwrap();
    assert_eq!(&decoded, placed.info().as_ref());
}

/// A service every action reaches without capturing it.
#[derive(Debug)]
struct Counter(AtomicUsize);

#[tokio::test]
async fn actions_read_typed_extensions_attached_by_the_builder() {
    let graph = Graph::single(
        action("count")
            .writes(["n"])
            .run(|s: State, _, ctx| async move {
                let counter = ctx.extension::<Arc<Counter>>().ok_or("no counter")?;
                let n = counter.0.fetch_add(1, Ordering::Relaxed) + 1;
                Ok((json!({}), s.set("n", n)))
            }),
    );
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    for expected in 1..=2 {
        let mut app = Application::builder(graph.clone())
            .extension(counter.clone())
            .build()
            .await
            .unwrap();
        let out = app.run(RunOptions::new()).await.unwrap();
        assert_eq!(out.state.get("n"), Some(&json!(expected)));
    }
    // Without the extension the action says so instead of panicking.
    let mut bare = Application::builder(graph).build().await.unwrap();
    let err = bare.run(RunOptions::new()).await.unwrap_err();
    assert!(err.to_string().contains("no counter"), "{err}");
}

#[tokio::test]
async fn a_shared_extension_map_is_merged_and_later_values_win() {
    let mut shared = Extensions::new();
    shared.insert(7u32);
    shared.insert("from the map");
    let graph = Graph::single(action("read").writes(["n", "s"]).run(
        |s: State, _, ctx| async move {
            let n = *ctx.extension::<u32>().ok_or("no u32")?;
            let text = *ctx.extension::<&str>().ok_or("no str")?;
            Ok((json!({}), s.set("n", n).set("s", text)))
        },
    ));
    let mut app = Application::builder(graph)
        .extension("set before")
        .extensions(&shared)
        .extension(8u32)
        .build()
        .await
        .unwrap();
    let out = app.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("n"), Some(&json!(8)));
    assert_eq!(out.state.get("s"), Some(&json!("from the map")));
}
