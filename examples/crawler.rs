//! Run with `cargo run -p tributary-examples --example crawler`
//! (add `-- --help` for the flags).
//!
//! Shows `add_task` feeding a live run: the example serves a site of linked
//! pages on 127.0.0.1 (an axum server), seeds the run with the home page,
//! and each crawl task fetches its page (a reqwest client), reads its links
//! with an HTML parser (scraper) and adds the pages it discovers to its own
//! run (each page once) until the site is covered. Progress comes from the
//! handle's `watch`.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State as Extract;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use clap::Parser;
use serde_json::json;
use tributary::{Graph, ItemKind, RunConfig, Runtime, State, TaskRuntime, TaskSpec, action};

/// crawler: crawl a local site of linked pages, one task per page.
#[derive(Debug, Parser)]
#[command(name = "crawler")]
struct Args {
    /// Pages of the site (page i links to pages 2i+1 and 2i+2, and home)
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pages: u32,
    /// Pages fetched at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
}

/// A site of `n` pages: path -> HTML.
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
                .map(|c| format!("<li><a href=\"/page/{c}\">page {c}</a></li>"))
                .collect();
            let html = format!(
                "<!doctype html><html><head><title>page {i}</title></head>\
                 <body><h1>page {i}</h1><ul>{links}</ul><p><a href='/'>home</a></p></body></html>"
            );
            (path, html)
        })
        .collect()
}

/// Serve `pages` on a free port of 127.0.0.1 until the handle is aborted.
async fn serve(
    pages: HashMap<String, String>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    async fn page(Extract(pages): Extract<Arc<HashMap<String, String>>>, uri: Uri) -> Response {
        match pages.get(uri.path()) {
            Some(html) => Html(html.clone()).into_response(),
            None => (StatusCode::NOT_FOUND, "not found").into_response(),
        }
    }
    let app = axum::Router::new()
        .fallback(page)
        .with_state(Arc::new(pages));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the site's server stopped: {e}");
        }
    });
    Ok((addr, server))
}

/// The `<title>` and the paths the page links to on its own site.
fn read_page(html: &str) -> (String, Vec<String>) {
    let doc = scraper::Html::parse_document(html);
    let title = scraper::Selector::parse("title").expect("a valid selector");
    let links = scraper::Selector::parse("a[href]").expect("a valid selector");
    let title = doc
        .select(&title)
        .next()
        .map(|t| t.text().collect::<String>())
        .unwrap_or_default();
    let links = doc
        .select(&links)
        .filter_map(|a| a.value().attr("href"))
        .filter(|href| href.starts_with('/'))
        .map(str::to_owned)
        .collect();
    (title, links)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pages = args.pages as usize;
    let (addr, server) = serve(site(pages)).await?;
    println!("serving {pages} pages on http://{addr}");

    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::from(["/".to_owned()])));
    let graph: Arc<OnceLock<Graph>> = Arc::new(OnceLock::new());
    let crawl = crawl_graph(http, addr, Arc::clone(&seen), Arc::clone(&graph));
    graph
        .set(crawl.clone())
        .map_err(|_| anyhow::anyhow!("graph set twice"))?;

    let seed = TaskSpec::new("/", crawl).state(State::new().set("path", "/"));
    let (handle, mut stream) = Runtime::builder()
        .max_concurrency(args.concurrency as usize)
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
                println!(
                    "crawled {:<10} {:<10} {} new links",
                    item.task_key, r["title"], r["new_links"]
                );
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
    http: reqwest::Client,
    addr: SocketAddr,
    seen: Arc<Mutex<HashSet<String>>>,
    graph: Arc<OnceLock<Graph>>,
) -> Graph {
    Graph::single(
        action("crawl")
            .reads(["path"])
            .writes(["title"])
            .run(move |s: State, _, ctx| {
                let (http, seen, graph) = (http.clone(), Arc::clone(&seen), Arc::clone(&graph));
                async move {
                    let path: String = s.get_as("path")?;
                    let response = http.get(format!("http://{addr}{path}")).send().await?;
                    let status = response.status();
                    if !status.is_success() {
                        return Err(format!("GET {path}: {status}").into());
                    }
                    let is_html = response
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/html"));
                    let body = response.text().await?;
                    let (title, links) = if is_html {
                        read_page(&body)
                    } else {
                        (String::new(), Vec::new())
                    };
                    let run = ctx
                        .extensions()
                        .get::<TaskRuntime>()
                        .ok_or("not on a runtime")?
                        .handle()
                        .clone();
                    let mut new_links = 0;
                    for link in links {
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
