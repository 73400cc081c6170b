//! Run with `cargo run -p tributary-examples --example crawler`.
//!
//! Shows `add_task` feeding a live run: the example starts a small HTTP
//! server on 127.0.0.1 with a site of linked pages, seeds the run with the
//! home page, and each crawl task adds the pages it discovers to its own
//! run (each page once) until the site is covered. Progress comes from the
//! handle's `watch`.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;
use tributary::{Graph, ItemKind, RunConfig, Runtime, State, TaskRuntime, TaskSpec, action};
use tributary_examples::http;

/// A site of `n` pages; page i links to 2i+1 and 2i+2 (a tree) and home.
fn site(n: usize) -> HashMap<String, String> {
    (0..n)
        .map(|i| {
            let path = if i == 0 {
                "/".to_owned()
            } else {
                format!("/page/{i}")
            };
            let links: String = [2 * i + 1, 2 * i + 2]
                .into_iter()
                .filter(|c| *c < n)
                .map(|c| format!("<a href=\"/page/{c}\">page {c}</a> "))
                .collect();
            (
                path,
                format!("<html><h1>page {i}</h1>{links}<a href=\"/\">home</a></html>"),
            )
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pages = 31;
    let (addr, server) = http::serve(site(pages)).await?;
    println!("serving {pages} pages on http://{addr}");

    let seen: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::from(["/".to_owned()])));
    let graph: Arc<OnceLock<Graph>> = Arc::new(OnceLock::new());
    let crawl = crawl_graph(addr, Arc::clone(&seen), Arc::clone(&graph));
    graph
        .set(crawl.clone())
        .map_err(|_| anyhow::anyhow!("graph set twice"))?;

    let seed = TaskSpec::new("/", crawl).state(State::new().set("path", "/"));
    let (handle, mut stream) = Runtime::builder()
        .max_concurrency(4)
        .build()
        .run(vec![seed], RunConfig::new());
    let mut progress = handle.progress();
    let watcher = tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            let p = *progress.borrow();
            if p.done() > 0 && p.done() % 10 == 0 {
                println!("progress: {} of {} pages crawled", p.done(), p.total);
            }
        }
    });

    let mut crawled = Vec::new();
    while let Some(item) = stream.next().await {
        match item.kind {
            ItemKind::Final => {
                let r = item.result.unwrap_or_default();
                println!("crawled {:<10} {} new links", item.task_key, r["new_links"]);
                crawled.push(item.task_key.to_string());
            }
            ItemKind::Failed => anyhow::bail!("{} failed: {:?}", item.task_key, item.error),
            _ => {}
        }
    }
    watcher.abort();
    server.abort();
    println!("crawled {} pages", crawled.len());
    anyhow::ensure!(crawled.len() == pages, "every page crawled exactly once");
    Ok(())
}

fn crawl_graph(
    addr: SocketAddr,
    seen: Arc<Mutex<HashSet<String>>>,
    graph: Arc<OnceLock<Graph>>,
) -> Graph {
    Graph::single(
        action("crawl")
            .reads(["path"])
            .writes(["title"])
            .run(move |s: State, _, ctx| {
                let (seen, graph) = (Arc::clone(&seen), Arc::clone(&graph));
                async move {
                    let path: String = s.get_as("path")?;
                    let (status, body) = http::get(addr, &path).await?;
                    if status != 200 {
                        return Err(format!("GET {path}: {status}").into());
                    }
                    let title = body
                        .split("<h1>")
                        .nth(1)
                        .and_then(|t| t.split("</h1>").next())
                        .unwrap_or("")
                        .to_owned();
                    let run = ctx
                        .extensions()
                        .get::<TaskRuntime>()
                        .ok_or("not on a runtime")?
                        .handle()
                        .clone();
                    let mut new_links = 0;
                    for link in http::links(&body) {
                        // Each page is crawled once: only the first finder adds it.
                        if seen.lock().expect("not poisoned").insert(link.clone()) {
                            let spec =
                                TaskSpec::new(link.clone(), graph.get().expect("set").clone())
                                    .state(State::new().set("path", link));
                            run.add_task(spec).map_err(|e| e.to_string())?;
                            new_links += 1;
                        }
                    }
                    Ok((
                        json!({ "title": title, "new_links": new_links }),
                        s.set("title", title),
                    ))
                }
            }),
    )
}
