//! A chain of steps for the persistence tests and their helper processes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tributary::{Graph, State, action, default};

/// A graph of `steps` actions `step0 -> step1 -> ...`, each appending its
/// name to the state's `trail`. Each step first appends `"{app_id}
/// {action}"` to `exec_log` (when given), so a test can count how often
/// every step really ran, then waits `delay`.
///
/// # Panics
///
/// When `steps` is 0.
pub fn chain_graph(steps: usize, delay: Duration, exec_log: Option<PathBuf>) -> Graph {
    assert!(steps > 0, "a chain has at least one step");
    let mut builder = Graph::builder();
    for i in 0..steps {
        let name = format!("step{i}");
        let log = exec_log.clone();
        builder = builder.action(action(name.clone()).reads(["trail"]).writes(["trail"]).run(
            move |s: State, _, ctx| {
                let log = log.clone();
                let name = name.clone();
                async move {
                    if let Some(log) = log {
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(log)?;
                        // One write call: a process killed mid-line must
                        // not leave half a line for the next one to extend.
                        file.write_all(format!("{} {name}\n", ctx.app_id()).as_bytes())?;
                    }
                    if delay.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                    Ok((json!({ "done": name }), s.append("trail", name.as_str())?))
                }
            },
        ));
        if i > 0 {
            builder = builder.transition(format!("step{}", i - 1), format!("step{i}"), default());
        }
    }
    builder.entrypoint("step0").build().expect("a valid chain")
}
