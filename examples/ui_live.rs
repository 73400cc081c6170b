//! Run with `cargo run -p tributary-examples --example ui_live`, then open
//! the address it prints.
//!
//! A service that serves the web view of its own live run: twelve simulated
//! writers draft paragraphs word by word (one of them fails, to show how a
//! failure looks), the consumer reads the run through the view's tap so the
//! merged-stream panel shows what it received, and the page can pause,
//! resume and cancel the run or any one writer. After the run ends the view
//! stays up until Ctrl-C (`--exit-when-done` exits instead).
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tributary::ui::{DEFAULT_ADDR, UiServer};
use tributary::{FailurePolicy, ItemKind, RunConfig, Runtime, State, TaskSpec, action};

const TEXT: &str = "rivers carve valleys over long years and carry silt to the sea \
    where deltas grow and cities gather along their banks to trade and to drink";

fn writer(i: u64) -> TaskSpec {
    TaskSpec::action(
        format!("writer-{i:02}"),
        action("draft").run(move |s: State, _, ctx| async move {
            let words: Vec<&str> = TEXT.split(' ').collect();
            for (n, word) in words.iter().enumerate() {
                // Each writer has its own pace; writer 07 gives up half way.
                tokio::time::sleep(Duration::from_millis(120 + 45 * i)).await;
                if i == 7 && n == words.len() / 2 {
                    return Err(format!("writer-{i:02} lost its notes").into());
                }
                ctx.emit(*word).await?;
            }
            Ok((json!({ "words": words.len() }), s.set("paragraph", TEXT)))
        }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exit_when_done = std::env::args().any(|a| a == "--exit-when-done");
    let tasks: Vec<TaskSpec> = (0..12).map(writer).collect();
    let config = RunConfig::new().failure_policy(FailurePolicy::Continue);
    let (handle, stream) = Runtime::new().run(tasks, config);

    // The view: this run, with controls (the handle is given).
    let ui = UiServer::new();
    let live = ui.attach_run("writers", handle.clone());
    let listener = match TcpListener::bind(DEFAULT_ADDR).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?, // the usual port is taken
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ui.serve_with_shutdown(listener, async move {
        let _ = stopped.await;
    }));
    println!("the web view of this run: http://{addr}/#/live/writers");

    // The service's own consumer, reading through the view's tap.
    let mut stream = live.tap(stream);
    let (mut words, mut done, mut failed) = (0, 0, 0);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(item) => match item.kind {
                    ItemKind::Token => words += 1,
                    ItemKind::Final => done += 1,
                    ItemKind::Failed | ItemKind::Cancelled => failed += 1,
                    ItemKind::NodeComplete => {}
                },
                None => break,
            },
            _ = tokio::signal::ctrl_c() => {
                println!("cancelling the run");
                handle.cancel().await;
            }
        }
    }
    println!("run ended: {words} words, {done} paragraphs, {failed} failed or cancelled");

    if !exit_when_done {
        println!("the view stays up until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
