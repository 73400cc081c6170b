//! tributary's main job. Run with
//! `cargo run -p tributary-examples --example deep_research`
//! (add `-- --help` for the flags).
//!
//! A "deep research" run on the embedded defaults (SQLite in `.tributary/`,
//! nothing else needed): a parent graph plans subtopics, fans out one
//! subgraph per subtopic (search, read, summarise), each streaming tokens
//! with simulated, seeded latency (no network, no model), merges their
//! streams live and reduces them into a report. One live progress bar per
//! subtopic shows the merged stream. Flags choose the number of subtopics,
//! the merge mode, the completion policy, and a pause or cancel after a
//! given time to show control. Interrupt it (Ctrl-C) and run the same
//! command again: it resumes, says how many subtopics were already done and
//! does not redo them. At the end it prints where the run is stored and the
//! `tributary` command that shows its tree. With `--ui` it also serves the
//! web view of the live run (a lane per subtopic, the merged stream, pause
//! and cancel per lane) and of the runs recorded in its database, and
//! prints its address.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tributary::sqlite::{Database, SqlitePersister, SqliteTracker};
use tributary::ui::{DEFAULT_ADDR, LiveRun, UiServer};
use tributary::{
    FirstN, Graph, ItemKind, JoinAll, MergeMode, ParallelAction, Persister, QuickExit, RunConfig,
    RunHandle, Runtime, State, StepStatus, StreamItem, Subgraph, TaskSpec, action, child_app_id,
    default,
};
use tributary_examples::Rng;

const HELP: &str = "deep_research: plan subtopics, research them in parallel, write a report

usage: deep_research [options]
  --topic TEXT          what to research (default: \"how rivers shape cities\")
  --subtopics N         how many subtopics to research in parallel (default 6)
  --merge MODE          as-completed | zip | ordered | final-only (default as-completed)
  --policy POLICY       join-all | quick-exit | first-n:K (default join-all)
  --pause-after MS      pause the run after MS milliseconds ...
  --pause-for MS        ... for MS milliseconds (default 1000)
  --cancel-after MS     cancel the run after MS milliseconds (run again to resume)
  --speed F             latency multiplier: 0.1 is ten times faster (default 1)
  --db PATH             the SQLite database (default .tributary/tributary.db)
  --fresh               start a new run instead of resuming the last one
  --ui                  serve the web view of the run (127.0.0.1:7878, or a free port)
                        and keep it up after the run until Ctrl-C ...
  --exit-when-done      ... or exit when the run ends
  -h, --help            this text";

/// The command line.
#[derive(Debug, Clone)]
struct Args {
    topic: String,
    subtopics: usize,
    merge: MergeMode,
    policy: String,
    pause_after: Option<u64>,
    pause_for: u64,
    cancel_after: Option<u64>,
    speed: f64,
    db: PathBuf,
    fresh: bool,
    ui: bool,
    exit_when_done: bool,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        topic: "how rivers shape cities".into(),
        subtopics: 6,
        merge: MergeMode::AsCompleted,
        policy: "join-all".into(),
        pause_after: None,
        pause_for: 1000,
        cancel_after: None,
        speed: 1.0,
        db: PathBuf::from(".tributary/tributary.db"),
        fresh: false,
        ui: false,
        exit_when_done: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--topic" => args.topic = value()?,
            "--subtopics" => args.subtopics = value()?.parse()?,
            "--merge" => {
                args.merge = match value()?.as_str() {
                    "as-completed" => MergeMode::AsCompleted,
                    "zip" => MergeMode::Zip,
                    "ordered" => MergeMode::Ordered,
                    "final-only" => MergeMode::FinalOnly,
                    other => anyhow::bail!("unknown merge mode `{other}`"),
                }
            }
            "--policy" => args.policy = value()?,
            "--pause-after" => args.pause_after = Some(value()?.parse()?),
            "--pause-for" => args.pause_for = value()?.parse()?,
            "--cancel-after" => args.cancel_after = Some(value()?.parse()?),
            "--speed" => args.speed = value()?.parse()?,
            "--db" => args.db = PathBuf::from(value()?),
            "--fresh" => args.fresh = true,
            "--ui" => args.ui = true,
            "--exit-when-done" => args.exit_when_done = true,
            other => anyhow::bail!("unknown flag `{other}` (see --help)"),
        }
    }
    anyhow::ensure!(
        (1..=64).contains(&args.subtopics),
        "--subtopics must be between 1 and 64"
    );
    anyhow::ensure!(args.speed > 0.0, "--speed must be positive");
    Ok(Some(args))
}

fn policy(spec: &str) -> anyhow::Result<RunConfig> {
    let config = RunConfig::new();
    Ok(match spec {
        "join-all" => config.policy(JoinAll),
        "quick-exit" => config.policy(QuickExit),
        other => match other.strip_prefix("first-n:") {
            Some(n) => config.policy(FirstN::new(n.parse()?)),
            None => anyhow::bail!("unknown policy `{other}`"),
        },
    })
}

const ANGLES: [&str; 8] = [
    "history",
    "economics",
    "ecology",
    "flood risk",
    "transport",
    "culture",
    "water supply",
    "planning",
];

/// Emit `n` words with seeded latency; returns them joined.
async fn stream_words(
    ctx: &tributary::ActionContext,
    rng: &mut Rng,
    words: &[&str],
    ms: (u64, u64),
    speed: f64,
) -> Result<String, tributary::BoxError> {
    let mut out = Vec::new();
    for w in words {
        let wait = rng.latency(ms.0, ms.1).mul_f64(speed);
        tokio::time::sleep(wait).await;
        ctx.emit(*w).await?;
        out.push(*w);
    }
    Ok(out.join(" "))
}

/// search -> read -> summarise, for one subtopic.
fn research_subgraph(speed: f64) -> Subgraph {
    let step = |name: &'static str,
                writes: &'static str,
                words: &'static [&'static str],
                ms: (u64, u64)| {
        action(name)
            .reads(["subtopic"])
            .writes([writes])
            .run(move |s: State, _, ctx| async move {
                let subtopic: String = s.get_as("subtopic")?;
                // Each subtopic has its own pace: later angles take longer.
                let mut rng = Rng::from_str_seed(&format!("{subtopic}/{name}"));
                let pace = 1.0
                    + ANGLES
                        .iter()
                        .position(|a| subtopic.ends_with(a))
                        .unwrap_or(0) as f64
                        * 0.35;
                let text = stream_words(&ctx, &mut rng, words, ms, speed * pace).await?;
                Ok((
                    json!({ name: text.clone() }),
                    s.set(writes, format!("{subtopic}: {text}")),
                ))
            })
    };
    let graph = Graph::builder()
        .action(step(
            "search",
            "sources",
            &["found", "4", "sources", "on"],
            (60, 140),
        ))
        .action(step(
            "read",
            "notes",
            &["reading", "maps,", "records", "and", "two", "surveys"],
            (50, 120),
        ))
        .action(step(
            "summarise",
            "summary",
            &[
                "rivers", "set", "where", "the", "city", "grew", "and", "how", "it", "moved",
            ],
            (40, 100),
        ))
        .transition("search", "read", default())
        .transition("read", "summarise", default())
        .entrypoint("search")
        .build()
        .expect("a valid research graph");
    Subgraph::new(graph).halt_after(["summarise"])
}

/// plan -> research (in parallel) -> report.
fn parent_graph(args: &Args) -> anyhow::Result<Graph> {
    let speed = args.speed;
    let n = args.subtopics;
    let plan = action("plan").reads(["topic"]).writes(["subtopics"]).run(
        move |s: State, _, ctx| async move {
            let topic: String = s.get_as("topic")?;
            let mut rng = Rng::from_str_seed(&topic);
            stream_words(
                &ctx,
                &mut rng,
                &["planning", "subtopics", "..."],
                (80, 160),
                speed,
            )
            .await?;
            let subtopics: Vec<String> = (0..n)
                .map(|i| format!("{topic}: {}", ANGLES[i % ANGLES.len()]))
                .collect();
            Ok((
                json!({ "subtopics": subtopics.len() }),
                s.set("subtopics", json!(subtopics)),
            ))
        },
    );
    let research =
        ParallelAction::map_states("research", research_subgraph(speed), |s: &State, _| {
            let subtopics: Vec<String> = s.get_as("subtopics")?;
            Ok(subtopics
                .into_iter()
                .map(|t| State::new().set("subtopic", t)))
        })
        .reads(["subtopics"])
        .writes(["summaries"])
        .config(
            policy(&args.policy)?
                .merge_mode(args.merge)
                .max_concurrency(8),
        )
        .reduce(|s, outcomes| {
            let summaries: Vec<Value> = outcomes
                .iter()
                .map(|o| match o.state() {
                    Some(st) => st.get("summary").cloned().unwrap_or(Value::Null),
                    None => json!(format!("(subtopic {} not researched)", o.key)),
                })
                .collect();
            Ok(s.set("summaries", Value::Array(summaries)))
        })
        .build();
    let report = action("report")
        .reads(["topic", "summaries"])
        .writes(["report"])
        .run(move |s: State, _, ctx| async move {
            let topic: String = s.get_as("topic")?;
            let summaries: Vec<Value> = s.get_as("summaries")?;
            let mut lines = vec![format!("# {topic}")];
            for summary in &summaries {
                let line = format!("- {}", summary.as_str().unwrap_or("(none)"));
                tokio::time::sleep(Duration::from_millis(30).mul_f64(speed)).await;
                ctx.emit(line.clone()).await?;
                lines.push(line);
            }
            let report = lines.join("\n");
            Ok((json!({ "lines": lines.len() }), s.set("report", report)))
        });
    Ok(Graph::builder()
        .action(plan)
        .action(research)
        .action(report)
        .transition("plan", "research", default())
        .transition("research", "report", default())
        .entrypoint("plan")
        .build()?)
}

fn slug(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Which subtopics an earlier, interrupted run already finished.
async fn already_done(
    persister: &SqlitePersister,
    app_id: &str,
    n: usize,
) -> anyhow::Result<Option<usize>> {
    let Some(last) = persister.load(app_id, None).await? else {
        return Ok(None);
    };
    if last.action == "report" && last.status == StepStatus::Completed {
        return Ok(Some(n));
    }
    // `plan` is step 0, so `research` runs at sequence 1.
    let mut done = 0;
    for j in 0..n {
        let child = child_app_id(app_id, 1, "research", &j.to_string());
        if let Some(cp) = persister.load(&child, None).await? {
            done += usize::from(cp.action == "summarise" && cp.status == StepStatus::Completed);
        }
    }
    Ok(Some(done))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else {
        println!("{HELP}");
        return Ok(());
    };
    let db = Database::open(&args.db).await?;
    let persister = SqlitePersister::new(db.clone());
    let tracker = Arc::new(SqliteTracker::new(db.clone()));

    let mut app_id = format!("research-{}", slug(&args.topic));
    if args.fresh {
        app_id = format!(
            "{app_id}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
    }
    match already_done(&persister, &app_id, args.subtopics).await? {
        None => println!(
            "starting {app_id}: {} subtopics of \"{}\"",
            args.subtopics, args.topic
        ),
        Some(done)
            if done == args.subtopics
                && persister
                    .load(&app_id, None)
                    .await?
                    .is_some_and(|c| c.action == "report") =>
        {
            println!("{app_id} is already complete (use --fresh for a new run)");
        }
        Some(done) => println!(
            "resuming {app_id}: {done} of {} subtopics already researched, not redone",
            args.subtopics
        ),
    }

    let graph = parent_graph(&args)?;
    let task = TaskSpec::new("deep-research", graph)
        .app_id(app_id.clone())
        .state(State::new().set("topic", args.topic.clone()));
    let config = RunConfig::new()
        .persister(Arc::new(persister.clone()))
        .hook(tracker.clone());
    let (handle, mut stream) = Runtime::new().run(vec![task], config);
    let view = if args.ui {
        Some(View::start(&handle, &args.db).await?)
    } else {
        None
    };

    // One bar per subtopic (on a terminal); plain lines otherwise.
    let fancy = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if fancy {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:24}] {pos:>2}/{len} {msg}")?
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let say = |line: String| {
        if fancy {
            multi.println(line).ok();
        } else {
            println!("{line}");
        }
    };

    if let Some(ms) = args.pause_after {
        let (h, pause_for, bars) = (handle.clone(), args.pause_for, multi.clone());
        let note = move |line: &str| {
            if fancy {
                bars.println(line).ok();
            } else {
                println!("{line}");
            }
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            h.pause();
            note(&format!(
                "-- paused for {pause_for} ms: no step starts, tokens wait --"
            ));
            tokio::time::sleep(Duration::from_millis(pause_for)).await;
            h.resume();
            note("-- resumed --");
        });
    }
    let cancel_at = args
        .cancel_after
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let cancel_timer = async {
        match cancel_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancel_timer);

    let mut report = None;
    let mut interrupted = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => match item { Some(item) => item, None => break },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                say("-- interrupted: stopping; run the same command again to resume --".into());
                handle.cancel().await;
                continue;
            }
            _ = &mut cancel_timer, if !interrupted => {
                interrupted = true;
                say("-- cancelled by --cancel-after; run the same command again to resume --".into());
                handle.cancel().await;
                continue;
            }
        };
        if let Some(view) = &view {
            view.live.record(&item);
        }
        if item.is_nested() {
            // A subtopic's item: its path is [topic task, subtopic].
            show_child(&item, &mut bars, &multi, &style, &say);
            continue;
        }
        match (item.kind, item.action.as_deref()) {
            (ItemKind::Token, Some("plan")) => {
                let word = item
                    .result
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                say(format!("plan: {word}"))
            }
            (ItemKind::NodeComplete, Some("research")) => say("writing the report...".into()),
            (ItemKind::Final, _) => {
                report = item.state_update.and_then(|s| s.get("report").cloned())
            }
            (ItemKind::Failed, _) => say(format!(
                "run failed: {}",
                item.error.map(|e| e.message).unwrap_or_default()
            )),
            _ => {}
        }
    }
    for bar in bars.values() {
        if !bar.is_finished() {
            bar.abandon();
        }
    }
    tracker.flush().await?;
    db.flush().await?;
    if let Some(report) = report {
        println!("\n{}", report.as_str().unwrap_or_default());
    } else {
        println!("\nthe run stopped before its report; run the same command again to resume");
    }
    println!("\nstored in {}", args.db.display());
    println!(
        "see its tree: cargo run -p tributary-cli -- --db {} tree {app_id}",
        args.db.display()
    );
    if let Some(view) = view {
        view.live.record_end();
        if !args.exit_when_done {
            println!("the web view stays up at {} until Ctrl-C", view.url);
            tokio::signal::ctrl_c().await?;
        }
        view.stop().await?;
    }
    Ok(())
}

/// The web view of the run (`--ui`), served on loopback until stopped.
struct View {
    live: LiveRun,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tributary::ui::UiError>>,
}

impl View {
    /// Serve the live run (with its controls) and the database's recorded
    /// runs; print the address.
    async fn start(handle: &RunHandle, db: &std::path::Path) -> anyhow::Result<View> {
        let ui = UiServer::new().database(db)?;
        let live = ui.attach_run("deep-research", handle.clone());
        let listener = match TcpListener::bind(DEFAULT_ADDR).await {
            Ok(listener) => listener,
            Err(_) => TcpListener::bind("127.0.0.1:0").await?, // the usual port is taken
        };
        let url = format!("http://{}/#/live/deep-research", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ui.serve_with_shutdown(listener, async move {
            let _ = stopped.await;
        }));
        println!("the web view of this run: {url}");
        Ok(View {
            live,
            url,
            stop,
            server,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

/// Update the bar of the child an item belongs to.
fn show_child(
    child: &StreamItem,
    bars: &mut HashMap<String, ProgressBar>,
    multi: &MultiProgress,
    style: &ProgressStyle,
    say: &impl Fn(String),
) {
    let key = child.task_key.to_string();
    let bar = bars.entry(key.clone()).or_insert_with(|| {
        // search + read + summarise tokens, and two node completions.
        let bar = multi.add(ProgressBar::new(4 + 6 + 10 + 2));
        bar.set_style(style.clone());
        let angle = ANGLES
            .get(key.parse::<usize>().unwrap_or(0) % ANGLES.len())
            .copied()
            .unwrap_or("");
        bar.set_prefix(format!("subtopic {key} ({angle})"));
        bar
    });
    match child.kind {
        ItemKind::Token => {
            bar.inc(1);
            bar.set_message(
                child
                    .result
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        ItemKind::NodeComplete => {
            bar.inc(1);
            say(format!(
                "subtopic {key}: {} done",
                child.action.as_deref().unwrap_or("?")
            ));
        }
        ItemKind::Final => {
            bar.finish_with_message("done");
            say(format!("subtopic {key}: summarised"));
        }
        ItemKind::Failed | ItemKind::Cancelled => {
            let why = child
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            bar.abandon_with_message(why.clone());
            say(format!("subtopic {key}: {why}"));
        }
    }
}
