//! The web view's server over HTTP: recorded runs, live runs, the event
//! stream, controls and the security headers.

use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt;
use serde_json::json;
use tributary::{ItemKind, RunConfig, RunHandle, RunStream, Runtime, State, TaskSpec, action};
use tributary_ui::UiServer;

use crate::ui_support::{Served, first_event, get_json, record_demo_run, request};

/// Tasks `t0..tn` that each emit `tokens` tokens, then finish.
fn finite_run(n: usize, tokens: usize) -> (RunHandle, RunStream) {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| {
            TaskSpec::action(
                format!("t{i}"),
                action("speak").run(move |s: State, _, ctx| async move {
                    for k in 0..tokens {
                        ctx.emit(format!("w{k}")).await?;
                    }
                    Ok((json!({ "done": true }), s))
                }),
            )
        })
        .collect();
    Runtime::new().run(tasks, RunConfig::new())
}

/// Tasks `t0..tn` that emit a token every 20 ms until cancelled.
pub(crate) fn endless_run(n: usize) -> (RunHandle, RunStream) {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| {
            TaskSpec::action(
                format!("t{i}"),
                action("speak").run(|s: State, _, ctx| async move {
                    for k in 0u64.. {
                        ctx.emit(k).await?;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok((json!({ "never": true }), s))
                }),
            )
        })
        .collect();
    Runtime::new().run(tasks, RunConfig::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_list_collapses_children_under_their_root_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    record_demo_run(&db, "research-1", &["rivers", "lakes", "seas"]).await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;

    let list = get_json(&served.url("/api/runs")).await;
    let roots = list["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "children are not listed as roots: {list}");
    let root = &roots[0];
    assert_eq!(root["run"]["app_id"], "research-1");
    assert_eq!(root["run"]["status"], "completed");
    assert_eq!(root["run"]["steps"], 3);
    assert_eq!(root["descendants"]["total"], 3);
    assert_eq!(root["descendants"]["by_status"], json!({ "completed": 3 }));
    assert!(root["duration_us"].as_i64().unwrap() >= 0);

    let failed = get_json(&served.url("/api/runs?status=failed")).await;
    assert_eq!(failed["matched"], 0);
    let other = get_json(&served.url("/api/runs?partition=other")).await;
    assert_eq!(other["matched"], 0);
    let tenant = get_json(&served.url("/api/runs?partition=tenant&status=completed")).await;
    assert_eq!(tenant["matched"], 1);
    let future = get_json(&served.url("/api/runs?since=99999999999999999")).await;
    assert_eq!(future["matched"], 0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_has_its_tree_in_task_order_and_a_lane_per_child() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    record_demo_run(&db, "research-2", &["a", "b", "c", "d"]).await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;

    let run = get_json(&served.url("/api/runs/research-2")).await;
    let actions: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["plan", "research", "write"]);
    let children = run["tree"]["children"].as_array().unwrap();
    assert_eq!(children.len(), 4);
    assert!(children.iter().all(|c| c["spawn_action"] == "research"));
    assert_eq!(run["lanes"].as_array().unwrap().len(), 4);
    // Each child's step streamed its three tokens.
    for lane in run["lanes"].as_array().unwrap() {
        assert_eq!(lane["steps"][0]["items"], 3, "{lane}");
    }
    let (status, _, body) = request("GET", &served.url("/api/runs/nope"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no recorded run with app id `nope`"),
        "{body}"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_detail_diffs_the_state_against_the_previous_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    record_demo_run(&db, "research-3", &["x", "y"]).await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;

    let step = get_json(&served.url("/api/runs/research-3/steps/2")).await;
    assert_eq!(step["step"]["action"], "write");
    assert_eq!(step["previous_sequence_id"], 1);
    assert_eq!(
        step["changes"],
        json!([{ "op": "added", "path": "/report", "before": null, "after": "notes on x; notes on y" }])
    );
    assert_eq!(step["attempts"].as_array().unwrap().len(), 1);
    let research = get_json(&served.url("/api/runs/research-3/steps/1")).await;
    assert_eq!(research["spawned"].as_array().unwrap().len(), 2);
    let (status, _, _) = request("GET", &served.url("/api/runs/research-3/steps/9"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_browser_resumes_from_its_last_event_id() {
    let ui = UiServer::new();
    let (handle, stream) = finite_run(2, 3);
    let live = ui.attach_run("resume", handle);
    let items: Vec<_> = live.tap(stream).collect().await;
    assert_eq!(items.len(), 8);
    assert!(
        items
            .iter()
            .filter(|i| i.is_terminal())
            .all(|i| i.kind == ItemKind::Final)
    );
    let served = Served::start(ui).await;
    let url = served.url("/api/live/resume/events");

    // A new browser gets everything.
    let (id, all) = first_event(&url, None).await;
    assert_eq!(id, 9, "eight items and the end");
    assert_eq!(all["reset"], true);
    assert_eq!(all["lanes"].as_array().unwrap().len(), 2);
    assert_eq!(all["merged"].as_array().unwrap().len(), 8);
    assert_eq!(all["run"]["ended"], true);

    // One that saw up to event 5 gets the three items after it, in the
    // order the consumer received them.
    let (id, rest) = first_event(&url, Some(5)).await;
    assert_eq!(id, 9);
    assert_eq!(rest["reset"], false);
    let positions: Vec<u64> = rest["merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["pos"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [5, 6, 7]);
    let received: Vec<String> = items[5..].iter().map(|i| i.task_key.to_string()).collect();
    let sent: Vec<String> = rest["merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["task"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, received);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_items_reach_the_browser_batched_and_bounded() {
    let ui = UiServer::new();
    let (handle, stream) = finite_run(100, 100);
    let live = ui.attach_run("big", handle);
    let received = live.tap(stream).count().await;
    assert_eq!(received, 100 * 101);
    let served = Served::start(ui).await;

    let (_, update) = first_event(&served.url("/api/live/big/events"), None).await;
    let lanes = update["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 100, "one entry per lane, however many items");
    assert!(
        lanes
            .iter()
            .all(|l| l["tail"].as_array().unwrap().len() <= 3)
    );
    assert!(lanes.iter().all(|l| l["tokens"] == 100));
    assert_eq!(update["merged"].as_array().unwrap().len(), 500);
    assert_eq!(update["merged_gap"], true);
    assert_eq!(update["run"]["merged_total"], 10_100);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_need_control_on_and_the_pages_header() {
    // Read-only: refused, and the run is untouched.
    let ui = UiServer::new().read_only();
    let (handle, stream) = endless_run(2);
    let live = ui.attach_run("ro", handle.clone());
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let header = [("x-tributary-control", "1")];
    let (status, _, body) = request("POST", &served.url("/api/live/ro/pause"), &header).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) =
        request("POST", &served.url("/api/live/ro/lanes/t0/cancel"), &header).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!handle.is_paused());
    assert!(!handle.is_cancelled());
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;

    // Control on: the header is needed (a cross-site form cannot send it).
    let ui = UiServer::new();
    let (handle, stream) = endless_run(2);
    let live = ui.attach_run("rw", handle.clone());
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let (status, _, _) = request("POST", &served.url("/api/live/rw/lanes/t1/pause"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = request("POST", &served.url("/api/live/rw/lanes/t1/pause"), &header).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(
        Duration::from_secs(10),
        handle.progress().wait_for(|p| p.paused == 1),
    )
    .await
    .expect("the task pauses within 10 s")
    .unwrap();
    let (status, _, body) = request(
        "POST",
        &served.url("/api/live/rw/lanes/nope/pause"),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = request("POST", &served.url("/api/live/rw/explode"), &header).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = request("POST", &served.url("/api/live/rw/cancel"), &header).await;
    assert_eq!(status, StatusCode::OK);
    assert!(handle.is_cancelled());
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_runs_only_its_own_script_and_never_parses_data_as_html() {
    let served = Served::start(UiServer::new()).await;
    let (status, headers, html) = request("GET", &served.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    let (_, _, js) = request("GET", &served.url("/app.js"), &[]).await;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(sink), "the page's script uses {sink}");
    }
    // The API's errors carry the CSP too.
    let (status, headers, _) = request("GET", &served.url("/api/runs"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("content-security-policy"));
    served.stop().await;
}

#[test]
fn the_default_address_is_loopback() {
    let addr: std::net::SocketAddr = tributary_ui::DEFAULT_ADDR.parse().unwrap();
    assert!(addr.ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_detail_has_its_steps_state_diffs_and_tokens() {
    let graph = tributary::Graph::builder()
        .action(
            action("outline")
                .writes(["outline"])
                .run(|s: State, _, ctx| async move {
                    ctx.emit("thinking").await?;
                    Ok((
                        json!({ "parts": 2 }),
                        s.set("outline", json!(["intro", "body"])),
                    ))
                }),
        )
        .action(action("draft").reads(["outline"]).writes(["text"]).run(
            |s: State, _, ctx| async move {
                for word in ["rivers", "shape", "cities"] {
                    ctx.emit(word).await?;
                }
                Ok((json!({ "words": 3 }), s.set("text", "rivers shape cities")))
            },
        ))
        .transition("outline", "draft", tributary::default())
        .entrypoint("outline")
        .build()
        .unwrap();
    let ui = UiServer::new();
    let (handle, stream) =
        Runtime::new().run(vec![TaskSpec::new("essay", graph)], RunConfig::new());
    let live = ui.attach_run("essays", handle);
    let _: Vec<_> = live.tap(stream).collect().await;
    let served = Served::start(ui).await;

    let lane = get_json(&served.url("/api/live/essays/lanes/essay")).await;
    assert_eq!(lane["lane"]["status"], "completed");
    assert_eq!(
        lane["tail"],
        json!(["thinking", "rivers", "shape", "cities"])
    );
    let steps = lane["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["action"], "outline");
    assert_eq!(steps[0]["kind"], "node");
    assert_eq!(steps[0]["items"], 1);
    assert_eq!(
        steps[0]["changes"],
        json!([{ "op": "added", "path": "/outline", "before": null, "after": ["intro", "body"] }])
    );
    assert_eq!(steps[1]["action"], "draft");
    assert_eq!(steps[1]["kind"], "final");
    assert_eq!(steps[1]["items"], 3);
    assert_eq!(steps[1]["result"], json!({ "words": 3 }));
    assert_eq!(
        steps[1]["changes"],
        json!([{ "op": "added", "path": "/text", "before": null, "after": "rivers shape cities" }])
    );
    let (status, _, _) = request("GET", &served.url("/api/live/essays/lanes/nope"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_rounds_are_the_lanes_columns() {
    let tasks: Vec<TaskSpec> = [2usize, 4]
        .into_iter()
        .map(|n| {
            TaskSpec::action(
                format!("n{n}"),
                action("count").run(move |s: State, _, ctx| async move {
                    for k in 0..n {
                        ctx.emit(k).await?;
                    }
                    Ok((json!({ "n": n }), s))
                }),
            )
        })
        .collect();
    let ui = UiServer::new();
    let (handle, mut stream) = Runtime::new().run(
        tasks,
        RunConfig::new().merge_mode(tributary::MergeMode::Zip),
    );
    let live = ui.attach_run("zip", handle);
    let mut rounds = 0;
    while let Some(round) = stream.next_round().await {
        live.record_round(&round);
        rounds += 1;
    }
    live.record_end();
    assert_eq!(rounds, 5, "four tokens and a final for the longer task");
    let served = Served::start(ui).await;

    let (_, update) = first_event(&served.url("/api/live/zip/events"), None).await;
    let lanes = update["lanes"].as_array().unwrap();
    let columns = |key: &str| -> Vec<(u64, String)> {
        let lane = lanes.iter().find(|l| l["key"] == key).unwrap();
        serde_json::from_value(lane["columns"].clone()).unwrap()
    };
    let at = |k: &str| -> Vec<(u64, String)> {
        k.split(',')
            .map(|c| {
                let (seq, kind) = c.split_once(':').unwrap();
                (seq.parse().unwrap(), kind.to_owned())
            })
            .collect()
    };
    assert_eq!(columns("n2"), at("0:token,1:token,2:final"));
    assert_eq!(columns("n4"), at("0:token,1:token,2:token,3:token,4:final"));
    assert_eq!(update["run"]["max_seq"], 4);
    assert_eq!(update["run"]["ended"], true);
    served.stop().await;
}

#[test]
fn the_command_line_has_a_ui_subcommand() {
    use clap::Parser;
    use tributary_cli::{Cli, Command};
    let cli = Cli::parse_from([
        "tributary",
        "--db",
        "runs.db",
        "ui",
        "--addr",
        "127.0.0.1:9000",
        "--control",
    ]);
    match cli.command {
        Command::Ui { addr, control } => {
            assert_eq!(addr, "127.0.0.1:9000".parse().unwrap());
            assert!(control);
        }
        other => panic!("parsed as {other:?}"),
    }
    let cli = Cli::parse_from(["tributary", "ui"]);
    match cli.command {
        Command::Ui { addr, control } => {
            assert!(addr.ip().is_loopback());
            assert!(!control);
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_unknown_host_names_or_from_other_origins_are_refused() {
    let ui = UiServer::new().allow_host("ui.internal");
    let (handle, stream) = endless_run(1);
    let live = ui.attach_run("run", handle.clone());
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let port = served.addr.port().to_string();
    let control = ("x-tributary-control", "1");

    // A page whose name was made to resolve to this machine (DNS rebinding).
    let evil = format!("evil.example:{port}");
    let (status, headers, body) =
        request("GET", &served.url("/api/info"), &[("host", &evil)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    assert!(headers.contains_key("content-security-policy"));
    let (status, _, _) = request(
        "POST",
        &served.url("/api/live/run/pause"),
        &[("host", &evil), control],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A page of another origin posting to the real address.
    let (status, _, _) = request(
        "POST",
        &served.url("/api/live/run/pause"),
        &[("origin", "http://evil.example"), control],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!handle.is_paused());

    // Loopback addresses, localhost and allowed names are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        format!("UI.internal:{port}"),
    ] {
        let (status, _, _) = request("GET", &served.url("/api/info"), &[("host", &host)]).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    let own = format!("http://127.0.0.1:{port}");
    let (status, _, _) = request(
        "POST",
        &served.url("/api/live/run/pause"),
        &[("origin", &own), control],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(handle.is_paused());

    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_actions_children_get_lanes_under_their_parent() {
    // One top-level task whose graph races three children (quick exit).
    let study = tributary::Subgraph::action(action("study").reads(["ms"]).run(
        |s: State, _, ctx| async move {
            let ms: u64 = s.get_as("ms")?;
            for w in 0..4 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ctx.emit(format!("word {w}")).await?;
            }
            Ok((json!({ "ms": ms }), s))
        },
    ));
    let race = tributary::ParallelAction::map_states("race", study, |_: &State, _| {
        Ok([300u64, 5, 100].map(|ms| State::new().set("ms", ms)))
    })
    .writes(["winner"])
    .config(RunConfig::new().policy(tributary::QuickExit))
    .reduce(|s, outcomes| {
        let winner = outcomes.iter().position(|o| o.is_completed());
        Ok(s.set("winner", json!(winner)))
    })
    .build();
    let graph = tributary::Graph::builder()
        .action(race)
        .entrypoint("race")
        .build()
        .unwrap();
    let ui = UiServer::new();
    let (handle, stream) = Runtime::new().run(vec![TaskSpec::new("root", graph)], RunConfig::new());
    let live = ui.attach_run("nested", handle);
    let items: Vec<_> = live.tap(stream).collect().await;
    assert!(items.iter().any(|i| i.kind == ItemKind::Final));
    let served = Served::start(ui).await;

    let snapshot = get_json(&served.url("/api/live/nested")).await;
    let lanes = snapshot["lanes"].as_array().unwrap();
    let lane = |key: &str| lanes.iter().find(|l| l["key"] == key).unwrap().clone();
    let mut keys: Vec<&str> = lanes.iter().map(|l| l["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["root", "root/0", "root/1", "root/2"]);
    let root = lane("root");
    assert_eq!(root["status"], "completed");
    assert_eq!(root["tokens"], 0, "the children's words are theirs");
    assert_eq!(root["winner"], false);
    assert_eq!(root["control"], true);
    let winner = lane("root/1");
    assert_eq!(winner["parent"], "root");
    assert_eq!(winner["order"], json!([0, 1]));
    assert_eq!(
        winner["control"], true,
        "nested tasks are addressed by path"
    );
    assert_eq!(winner["status"], "completed");
    assert_eq!(winner["winner"], true);
    assert_eq!(winner["tokens"], 4);
    for loser in ["root/0", "root/2"] {
        assert_eq!(lane(loser)["status"], "cancelled", "{loser}");
        assert_eq!(lane(loser)["lost"], true, "{loser}");
    }
    // The merged stream names the child that produced each forwarded item.
    let merged_tasks: Vec<&str> = snapshot["merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["task"].as_str().unwrap())
        .collect();
    assert_eq!(items.len(), merged_tasks.len());
    assert_eq!(merged_tasks.iter().filter(|t| **t == "root/1").count(), 5);

    let header = [("x-tributary-control", "1")];
    let (status, _, body) = request(
        "POST",
        &served.url("/api/live/nested/lanes/root%2F1/pause"),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "the task has ended: {body}");
    assert!(body.contains("root/1"), "{body}");
    served.stop().await;
}

/// A live run of one task `root` whose parallel action runs children `0`
/// and `1`, each emitting a token every 20 ms until cancelled.
pub(crate) fn endless_nested_run() -> (RunHandle, RunStream) {
    let child = tributary::Subgraph::action(action("tick").run(|s: State, _, ctx| async move {
        for n in 0u64.. {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.emit(n).await?;
        }
        Ok((json!({}), s))
    }));
    let both = tributary::ParallelAction::map_states("both", child, |_: &State, _| {
        Ok([0, 1].map(|n| State::new().set("n", n)))
    })
    .build();
    let graph = tributary::Graph::builder()
        .action(both)
        .entrypoint("both")
        .build()
        .unwrap();
    Runtime::new().run(vec![TaskSpec::new("root", graph)], RunConfig::new())
}

/// Poll the run's snapshot until `done` holds of its lane `key` (30 s at
/// most); the lane as it was then.
pub(crate) async fn lane_when(
    served: &Served,
    run: &str,
    key: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = None;
    for _ in 0..600 {
        let snapshot = get_json(&served.url(&format!("/api/live/{run}"))).await;
        last = snapshot["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["key"] == key)
            .cloned();
        if let Some(lane) = last.as_ref().filter(|l| done(l)) {
            return lane.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lane {key} of {run} never got there in 30 s: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_lane_is_paused_and_resumed_by_its_path() {
    let ui = UiServer::new();
    let (handle, stream) = endless_nested_run();
    let live = ui.attach_run("tree", handle.clone());
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let header = [("x-tributary-control", "1")];
    let tokens = |l: &serde_json::Value| l["tokens"].as_u64().unwrap();
    lane_when(&served, "tree", "root/1", |l| tokens(l) >= 2).await;

    let (status, _, body) = request(
        "POST",
        &served.url("/api/live/tree/lanes/root%2F1/pause"),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The handle paused child `1` of `root`, and only it.
    let standing: Vec<_> = handle
        .tasks()
        .into_iter()
        .map(|t| (t.path.to_string(), t.status))
        .collect();
    assert!(
        standing.contains(&("root/1".to_owned(), tributary::LiveStatus::Paused)),
        "{standing:?}"
    );
    assert!(
        standing.contains(&("root/0".to_owned(), tributary::LiveStatus::Running)),
        "{standing:?}"
    );
    let paused = lane_when(&served, "tree", "root/1", |l| l["status"] == "paused").await;
    assert_eq!(paused["paused_here"], true);
    // Its sibling goes on while it emits at most the token it was at.
    let sibling = lane_when(&served, "tree", "root/0", |_| true).await;
    lane_when(&served, "tree", "root/0", |l| {
        tokens(l) >= tokens(&sibling) + 10
    })
    .await;
    let still = lane_when(&served, "tree", "root/1", |_| true).await;
    assert!(
        tokens(&still) <= tokens(&paused) + 1,
        "{still} after {paused}"
    );

    let (status, _, body) = request(
        "POST",
        &served.url("/api/live/tree/lanes/root%2F1/resume"),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resumed = lane_when(&served, "tree", "root/1", |l| {
        tokens(l) >= tokens(&still) + 3
    })
    .await;
    assert_eq!(resumed["status"], "running");

    // Cancelling the nested lane cancels that child only.
    let (status, _, body) = request(
        "POST",
        &served.url("/api/live/tree/lanes/root%2F1/cancel"),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = lane_when(&served, "tree", "root/1", |l| l["status"] == "cancelled").await;
    assert_eq!(cancelled["lost"], false);
    assert_eq!(
        lane_when(&served, "tree", "root/0", |_| true).await["status"],
        "running"
    );
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_tasks_have_lanes_that_can_be_cancelled_before_they_start() {
    let ui = UiServer::new();
    let speak = || {
        action("speak").run(|s: State, _, ctx| async move {
            for k in 0u64.. {
                ctx.emit(k).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok((json!({}), s))
        })
    };
    // One task at a time: two of the three wait for a slot (which one
    // starts first is the runtime's choice).
    let (handle, stream) = Runtime::new().run(
        vec![TaskSpec::action("t0", speak())],
        RunConfig::new().max_concurrency(1),
    );
    handle.add_task(TaskSpec::action("t1", speak())).unwrap();
    handle.add_task(TaskSpec::action("t2", speak())).unwrap();
    let live = ui.attach_run("queue", handle.clone());
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;
    let lanes = || async {
        get_json(&served.url("/api/live/queue")).await["lanes"]
            .as_array()
            .unwrap()
            .clone()
    };
    // The handle lists the queued tasks the run has taken: each has a
    // lane, with its buttons, before its first item.
    let mut queued = Vec::new();
    for _ in 0..600 {
        queued = lanes()
            .await
            .into_iter()
            .filter(|l| l["status"] == "queued")
            .collect();
        if !queued.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed_queued: Vec<String> = handle
        .tasks()
        .into_iter()
        .filter(|t| t.status == tributary::LiveStatus::Queued)
        .map(|t| t.path.to_string())
        .collect();
    let lane = queued.first().expect("a queued lane within 30 s");
    let key = lane["key"].as_str().unwrap().to_owned();
    assert!(listed_queued.contains(&key), "{listed_queued:?} {lane}");
    assert_eq!(lane["control"], true);
    assert_eq!(lane["items"], 0);

    let header = [("x-tributary-control", "1")];
    let (status, _, body) = request(
        "POST",
        &served.url(&format!("/api/live/queue/lanes/{key}/cancel")),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // It reports its end when it would have had a slot: until then the
    // handle lists it as cancelling, and so does its lane.
    let cancelling = lane_when(&served, "queue", &key, |l| l["status"] == "cancelling").await;
    assert_eq!(cancelling["tokens"], 0);
    assert!(
        handle
            .tasks()
            .iter()
            .any(|t| t.path.to_string() == key && t.status == tributary::LiveStatus::Cancelling),
        "{:?}",
        handle.tasks()
    );
    let running = lanes()
        .await
        .into_iter()
        .find(|l| l["status"] == "running")
        .expect("one task runs");
    let running = running["key"].as_str().unwrap().to_owned();
    let (status, _, body) = request(
        "POST",
        &served.url(&format!("/api/live/queue/lanes/{running}/cancel")),
        &header,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = lane_when(&served, "queue", &key, |l| l["status"] == "cancelled").await;
    assert_eq!(
        cancelled["tokens"], 0,
        "a cancelled queued task never starts"
    );
    assert!(
        handle.tasks().iter().all(|t| t.path.to_string() != key),
        "{key} has ended"
    );
    handle.cancel().await;
    consumer.await.unwrap();
    served.stop().await;
}
