//! Run with `cargo run -p tributary-examples --example service_loop`.
//!
//! Shows how a service consumes a run inside `tokio::select!`, beside a
//! shutdown signal (Ctrl-C, or a deadline here so the example ends by
//! itself) and a control channel through which other parts of the service
//! pause, resume and cancel tasks. `RunStream::next` is cancel safe, so no
//! item is lost when another branch wins.
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tributary::{Graph, ItemKind, RunConfig, Runtime, State, TaskSpec, action};

/// What the rest of the service may ask of the running job.
#[derive(Debug)]
enum Command {
    Pause,
    Resume,
    CancelTask(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ticker = Graph::single(action("tick").run(|s: State, _, ctx| async move {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ctx.emit(i).await?;
        }
        Ok((json!({}), s))
    }));
    let tasks: Vec<_> = (0..4)
        .map(|i| TaskSpec::new(format!("job-{i}"), ticker.clone()))
        .collect();
    let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new());

    // Another part of the service sends commands.
    let (control, mut commands) = mpsc::channel::<Command>(8);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let _ = control.send(Command::Pause).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = control.send(Command::CancelTask("job-3".into())).await;
        let _ = control.send(Command::Resume).await;
    });
    let shutdown = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(shutdown);

    let (mut tokens, mut finals, mut cancelled) = (0, 0, 0);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(item) => match item.kind {
                    ItemKind::Token => tokens += 1,
                    ItemKind::Final => finals += 1,
                    ItemKind::Cancelled => cancelled += 1,
                    _ => {}
                },
                None => break,
            },
            Some(command) = commands.recv() => {
                println!("command: {command:?}");
                match command {
                    Command::Pause => handle.pause(),
                    Command::Resume => handle.resume(),
                    Command::CancelTask(key) => handle.cancel_task(&key)?,
                }
            }
            _ = tokio::signal::ctrl_c() => {
                println!("ctrl-c: cancelling");
                handle.cancel().await;
            }
            _ = &mut shutdown => {
                println!("deadline: cancelling");
                handle.cancel().await;
            }
        }
    }
    println!("tokens {tokens}, finished {finals}, cancelled {cancelled}");
    anyhow::ensure!(
        finals == 3 && cancelled == 1,
        "three jobs finish, one is cancelled"
    );
    Ok(())
}
