//! tributary's main job. Run with
//! `cargo run -p tributary-examples --example deep_research`
//! (add `-- --help` for the flags).
//!
//! A "deep research" run on the embedded defaults (SQLite in `.tributary/`,
//! nothing else needed): a parent graph plans sub-questions, fans out one
//! subgraph per sub-question (search, read, summarise), each streaming
//! tokens, merges their streams live and reduces them into a report with a
//! section and sources per sub-question. By default the search, the reading
//! and the answers are simulated with seeded latency (no network, no
//! model); with `--model URL` each answer comes from an OpenAI-compatible
//! chat-completions endpoint (a local llama.cpp or Ollama server), its
//! tokens streamed as the model writes them. One live progress bar per
//! sub-question shows the merged stream. Flags choose the number of
//! sub-questions, the merge mode, the completion policy, and a pause or
//! cancel after a given time to show control. Interrupt it (Ctrl-C): the
//! bars say "cancelled"; run the same command again and it resumes, each
//! bar starting from the items already recorded, without redoing finished
//! sub-questions. At the end it prints where the run is stored and the
//! `tributary` command that shows its tree. With `--ui` it also serves the
//! web view of the live run (a lane per sub-question, the merged stream,
//! pause and cancel per lane) and of the runs recorded in its database, and
//! prints its address.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tributary::sqlite::{Database, RunReader, SqlitePersister, SqliteTracker, TrackedStepStatus};
use tributary::ui::{DEFAULT_ADDR, Goal, LiveRun, StepWatch, UiServer};
use tributary::{
    FirstN, Graph, ItemKind, JoinAll, MergeMode, ParallelAction, Persister, QuickExit, RunConfig,
    RunHandle, Runtime, State, StepStatus, StreamItem, Subgraph, TaskSpec, action, child_app_id,
    default,
};
use tributary_examples::Rng;
use tributary_examples::chat::ChatClient;

/// deep_research: plan sub-questions, research them in parallel, write a report.
#[derive(Debug, Clone, Parser)]
#[command(name = "deep_research")]
struct Args {
    /// What to research
    #[arg(long, default_value = "how rivers shape cities")]
    topic: String,
    /// How many sub-questions to research in parallel (1 to 64)
    #[arg(long = "subtopics", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
    subtopics: u16,
    /// How the sub-questions' streams are merged
    #[arg(long, value_enum, default_value_t = Merge::AsCompleted)]
    merge: Merge,
    /// When the research is done: join-all, quick-exit or first-n:K
    #[arg(long, default_value = "join-all")]
    policy: String,
    /// Pause the run after MS milliseconds ...
    #[arg(long, value_name = "MS")]
    pause_after: Option<u64>,
    /// ... for MS milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pause_for: u64,
    /// Cancel the run after MS milliseconds (run again to resume)
    #[arg(long, value_name = "MS")]
    cancel_after: Option<u64>,
    /// Latency multiplier of the simulated steps: 0.1 is ten times faster
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// An OpenAI-compatible chat-completions endpoint that answers the
    /// sub-questions (http://127.0.0.1:8080/v1 for llama.cpp,
    /// http://127.0.0.1:11434/v1 for Ollama); the key, if any, is read from
    /// OPENAI_API_KEY. Without it the answers are simulated.
    #[arg(long, value_name = "URL")]
    model: Option<String>,
    /// The model to ask for at that endpoint
    #[arg(long, value_name = "NAME", default_value = "default")]
    model_name: String,
    /// The SQLite database
    #[arg(long, default_value = ".tributary/tributary.db")]
    db: PathBuf,
    /// Start a new run instead of resuming the last one
    #[arg(long)]
    fresh: bool,
    /// Serve the web view of the run (127.0.0.1:7878, or a free port) and
    /// keep it up after the run until Ctrl-C ...
    #[arg(long)]
    ui: bool,
    /// ... or exit when the run ends
    #[arg(long)]
    exit_when_done: bool,
}

/// The merge modes, as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Merge {
    AsCompleted,
    Zip,
    Ordered,
    FinalOnly,
}

impl From<Merge> for MergeMode {
    fn from(m: Merge) -> Self {
        match m {
            Merge::AsCompleted => MergeMode::AsCompleted,
            Merge::Zip => MergeMode::Zip,
            Merge::Ordered => MergeMode::Ordered,
            Merge::FinalOnly => MergeMode::FinalOnly,
        }
    }
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

/// One angle of a topic: its sub-question (asked of the topic: "How rivers
/// shape cities: what does history show?"), what the simulated research
/// finds, and the simulated sources it cites.
struct Angle {
    name: &'static str,
    question: &'static str,
    finding: &'static str,
    sources: [&'static str; 2],
}

const ANGLES: [Angle; 8] = [
    Angle {
        name: "history",
        question: "what does history show?",
        finding: "The oldest records show that the first settlements chose the ford, the highest bank and the last point a boat could reach. Those choices fixed the street plan for centuries: later growth followed the old crossings rather than the new roads [1]. Where the river was moved, the old course still shows in property lines and street names [2].",
        sources: [
            "City archive: charters and river charts, 1200-1900",
            "Historical atlas of river towns, chapter 3",
        ],
    },
    Angle {
        name: "economics",
        question: "what did it mean for trade and land values?",
        finding: "Waterfronts were first the most valuable land because cargo arrived there, then the least valuable once rail and road took the cargo away [1]. The recent reversal, riverside land priced above the city average again, follows clean-up and public access rather than trade [2].",
        sources: [
            "Port authority tonnage series, 1850-2020",
            "Land value survey of riverside districts",
        ],
    },
    Angle {
        name: "ecology",
        question: "what does it do to the living river and its banks?",
        finding: "Straightened, walled channels lose most of their habitat and their fish; stretches given back their bends and shallows recover within about a decade [1]. Urban riverbanks now hold a large share of a city's remaining biodiversity, which makes them a priority of restoration plans [2].",
        sources: [
            "River restoration monitoring report",
            "Urban biodiversity index, riverside plots",
        ],
    },
    Angle {
        name: "flood risk",
        question: "how is the risk of floods managed?",
        finding: "Walls and dykes protect against the floods they were built for and raise the damage of the larger ones that overtop them [1]. Cities now combine defences with room for the river: parks and squares built to flood, and buildings raised above the expected levels [2].",
        sources: [
            "National flood risk assessment",
            "Design guide: room for the river",
        ],
    },
    Angle {
        name: "transport",
        question: "how does it shape the ways people and goods move?",
        finding: "Bridges decided where roads met, so the busiest districts grew at the crossings [1]. Rivers that were once highways for cargo now carry commuters on ferries and cyclists on towpaths, while the number of crossings still limits traffic between the banks [2].",
        sources: [
            "Transport network study: crossings and congestion",
            "Ferry and towpath usage counts",
        ],
    },
    Angle {
        name: "culture",
        question: "what place does the river hold in city life?",
        finding: "Festivals, markets and promenades gather along the water; surveys rank the riverside among the places residents value most [1]. The river also divides: the bank 'across the water' often kept a separate identity and lower status for generations [2].",
        sources: [
            "Resident survey on valued public spaces",
            "Oral history collection: the other bank",
        ],
    },
    Angle {
        name: "water supply",
        question: "what does it mean for drinking water and sanitation?",
        finding: "Cities drew their water upstream and discharged downstream, and epidemics followed when the two were confused [1]. Modern treatment lets the river supply water again, but droughts and pollution upstream make the supply only as safe as the whole basin [2].",
        sources: [
            "Water utility abstraction and quality data",
            "Public health history of waterborne disease",
        ],
    },
    Angle {
        name: "planning",
        question: "what should planners do about it today?",
        finding: "Plans now treat the river as a corridor to protect and open, not a back side to build against [1]. The common recommendations are public access along both banks, no new building in the floodplain, and crossings for people on foot every few hundred metres [2].",
        sources: [
            "Metropolitan spatial plan, river corridor chapter",
            "Guidelines for riverside development",
        ],
    },
];

/// The angle of sub-question `i`.
fn angle(i: usize) -> &'static Angle {
    &ANGLES[i % ANGLES.len()]
}

/// Emit `words` with seeded latency; returns them joined.
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

/// Tokens the simulated steps of sub-question `i` stream: search, read,
/// summarise.
fn simulated_tokens(i: usize) -> [usize; 3] {
    [4, 6, angle(i).finding.split(' ').count()]
}

const SYSTEM_PROMPT: &str = "You are a careful research assistant. Answer the question in one \
    paragraph of at most 120 words, using the sources given and citing them as [1] and [2]. \
    Plain text, no headings.";

/// The sub-question's answer: from the model, its pieces streamed as they
/// come, or simulated.
async fn answer(
    ctx: &tributary::ActionContext,
    model: Option<&ChatClient>,
    s: &State,
    speed: f64,
) -> Result<String, tributary::BoxError> {
    let index: usize = s.get_as("index")?;
    let Some(model) = model else {
        let mut rng = Rng::from_str_seed(&format!("{index}/summarise"));
        let words: Vec<&str> = angle(index).finding.split(' ').collect();
        return stream_words(ctx, &mut rng, &words, (40, 100), speed).await;
    };
    let topic: String = s.get_as("topic")?;
    let question: String = s.get_as("question")?;
    let sources: Vec<String> = s.get_as("sources")?;
    let notes: String = s.get_as("notes")?;
    let prompt = format!(
        "Topic: {topic}\nQuestion: {question}\nSources:\n[1] {}\n[2] {}\nNotes: {notes}",
        sources[0], sources[1]
    );
    let mut answer = String::new();
    let mut pieces = model.ask(SYSTEM_PROMPT, &prompt).await?;
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        ctx.emit(piece.as_str()).await?;
        answer.push_str(&piece);
    }
    Ok(answer.trim().to_owned())
}

/// search -> read -> summarise, for one sub-question.
fn research_subgraph(speed: f64, model: Option<Arc<ChatClient>>) -> Subgraph {
    // Each sub-question has its own pace: later angles take longer.
    let pace = move |s: &State| -> Result<(usize, f64), tributary::BoxError> {
        let index: usize = s.get_as("index")?;
        Ok((index, speed * (1.0 + (index % ANGLES.len()) as f64 * 0.35)))
    };
    let search = action("search").reads(["index"]).writes(["sources"]).run(
        move |s: State, _, ctx| async move {
            let (index, speed) = pace(&s)?;
            let mut rng = Rng::from_str_seed(&format!("{index}/search"));
            let words = ["found", "2", "sources", "on"];
            let text = stream_words(&ctx, &mut rng, &words, (60, 140), speed).await?;
            let sources: Vec<String> = angle(index)
                .sources
                .iter()
                .map(|src| src.to_string())
                .collect();
            Ok((json!({ "search": text }), s.set("sources", json!(sources))))
        },
    );
    let read = action("read")
        .reads(["index", "sources"])
        .writes(["notes"])
        .run(move |s: State, _, ctx| async move {
            let (index, speed) = pace(&s)?;
            let mut rng = Rng::from_str_seed(&format!("{index}/read"));
            let words = ["reading", "maps,", "records", "and", "two", "surveys"];
            let text = stream_words(&ctx, &mut rng, &words, (50, 120), speed).await?;
            Ok((
                json!({ "read": text }),
                s.set("notes", format!("read {text}")),
            ))
        });
    let summarise = action("summarise")
        .reads(["topic", "question", "index", "sources", "notes"])
        .writes(["summary"])
        .run(move |s: State, _, ctx| {
            let model = model.clone();
            async move {
                let (_, speed) = pace(&s)?;
                let summary = answer(&ctx, model.as_deref(), &s, speed).await?;
                Ok((
                    json!({ "words": summary.split_whitespace().count() }),
                    s.set("summary", summary),
                ))
            }
        });
    let graph = Graph::builder()
        .action(search)
        .action(read)
        .action(summarise)
        .transition("search", "read", default())
        .transition("read", "summarise", default())
        .entrypoint("search")
        .build()
        .expect("a valid research graph");
    Subgraph::new(graph).halt_after(["summarise"])
}

/// `text` with its first letter upper-case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The report: a title, a line on what was done, a section per
/// sub-question with its answer and sources.
fn report_sections(topic: &str, findings: &[Value]) -> Vec<String> {
    let answered = findings.iter().filter(|f| f["summary"].is_string()).count();
    let mut sections = vec![format!(
        "# {}\n\n{} questions researched in parallel; {answered} answered.",
        capitalised(topic),
        findings.len()
    )];
    for (i, f) in findings.iter().enumerate() {
        let heading = format!(
            "## {}. {}\n\n*{}*",
            i + 1,
            capitalised(f["angle"].as_str().unwrap_or("?")),
            f["question"].as_str().unwrap_or("?")
        );
        let body = match f["summary"].as_str() {
            Some(summary) => {
                let sources: Vec<String> = f["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(n, s)| format!("[{}] {}", n + 1, s.as_str().unwrap_or("?")))
                    .collect();
                format!("{summary}\n\nSources: {}", sources.join("; "))
            }
            None => "(not researched: the run's policy stopped this question)".to_owned(),
        };
        sections.push(format!("{heading}\n\n{body}"));
    }
    sections
}

/// plan -> research (in parallel) -> report.
fn parent_graph(args: &Args, model: Option<Arc<ChatClient>>) -> anyhow::Result<Graph> {
    let speed = args.speed;
    let n = usize::from(args.subtopics);
    let plan = action("plan").reads(["topic"]).writes(["questions"]).run(
        move |s: State, _, ctx| async move {
            let topic: String = s.get_as("topic")?;
            let mut rng = Rng::from_str_seed(&topic);
            stream_words(
                &ctx,
                &mut rng,
                &["planning", "sub-questions", "..."],
                (80, 160),
                speed,
            )
            .await?;
            let questions: Vec<String> = (0..n)
                .map(|i| format!("{}: {}", capitalised(&topic), angle(i).question))
                .collect();
            Ok((
                json!({ "questions": questions.len() }),
                s.set("questions", json!(questions)),
            ))
        },
    );
    let research = ParallelAction::map_states(
        "research",
        research_subgraph(speed, model),
        |s: &State, _| {
            let topic: String = s.get_as("topic")?;
            let questions: Vec<String> = s.get_as("questions")?;
            Ok(questions.into_iter().enumerate().map(move |(i, q)| {
                State::new()
                    .set("topic", topic.clone())
                    .set("index", i)
                    .set("question", q)
            }))
        },
    )
    .reads(["topic", "questions"])
    .writes(["findings"])
    .config(
        policy(&args.policy)?
            .merge_mode(args.merge.into())
            .max_concurrency(8),
    )
    .reduce(|s, outcomes| {
        let questions: Vec<String> = s.get_as("questions")?;
        let findings: Vec<Value> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut finding = json!({
                    "angle": angle(i).name,
                    "question": questions.get(i).cloned().unwrap_or_default(),
                });
                if let Some(st) = o.state() {
                    finding["summary"] = st.get("summary").cloned().unwrap_or(Value::Null);
                    finding["sources"] = st.get("sources").cloned().unwrap_or(Value::Null);
                }
                finding
            })
            .collect();
        Ok(s.set("findings", Value::Array(findings)))
    })
    .build();
    let report = action("report")
        .reads(["topic", "findings"])
        .writes(["report"])
        .run(move |s: State, _, ctx| async move {
            let topic: String = s.get_as("topic")?;
            let findings: Vec<Value> = s.get_as("findings")?;
            let sections = report_sections(&topic, &findings);
            for section in &sections {
                tokio::time::sleep(Duration::from_millis(30).mul_f64(speed)).await;
                ctx.emit(section.as_str()).await?;
            }
            let report = sections.join("\n\n");
            Ok((
                json!({ "sections": sections.len() }),
                s.set("report", report),
            ))
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
    let args = Args::parse();
    anyhow::ensure!(args.speed > 0.0, "--speed must be positive");
    let model = args
        .model
        .as_deref()
        .map(|url| {
            let key = std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty());
            ChatClient::new(url, &args.model_name, key).map(Arc::new)
        })
        .transpose()?;
    let n = usize::from(args.subtopics);
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
    match already_done(&persister, &app_id, n).await? {
        None => println!("starting {app_id}: {} subtopics of \"{}\"", n, args.topic),
        Some(done)
            if done == n
                && persister
                    .load(&app_id, None)
                    .await?
                    .is_some_and(|c| c.action == "report") =>
        {
            println!("{app_id} is already complete (use --fresh for a new run)");
        }
        Some(done) => {
            println!("resuming {app_id}: {done} of {n} subtopics already researched, not redone")
        }
    }
    if let Some(model) = &model {
        println!(
            "answers from the model `{}` at {}",
            args.model_name,
            model.url()
        );
    }
    // What each sub-question had streamed when an earlier run stopped.
    let recorded = recorded_items(&args.db, &app_id, n)?;

    let graph = parent_graph(&args, model.clone())?;
    let task = TaskSpec::new("deep-research", graph)
        .app_id(app_id.clone())
        .state(State::new().set("topic", args.topic.clone()));
    let mut config = RunConfig::new()
        .persister(Arc::new(persister.clone()))
        .hook(tracker.clone());
    // The web view learns each lane's step, its retries and the action
    // that runs a parent's children from this hook.
    let watch = args.ui.then(StepWatch::new);
    if let Some(watch) = &watch {
        config = config.hook(watch.hook());
    }
    let (handle, mut stream) = Runtime::new().run(vec![task], config);
    let view = match watch {
        Some(watch) => Some(View::start(&handle, &args.db, watch).await?),
        None => None,
    };
    if let Some((view, n)) = view.as_ref().zip(
        args.policy
            .strip_prefix("first-n:")
            .and_then(|n| n.parse().ok()),
    ) {
        // The research task's lane counts its sub-questions toward the policy.
        view.live.lane_goal("deep-research", Goal::first_n(n));
    }

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
    let model_on = model.is_some();
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
            let key = item.task_key.to_string();
            let bar = bars
                .entry(key.clone())
                .or_insert_with(|| new_bar(&key, &recorded, model_on, &multi, &style, &say));
            show_child(&item, bar, &say);
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
    // The children of a cancelled run end with it (its own `Cancelled`
    // item stands for theirs): their bars say so.
    let mut keys: Vec<&String> = bars.keys().collect();
    keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(usize::MAX));
    for key in keys {
        let bar = &bars[key];
        if bar.is_finished() {
            continue;
        }
        if interrupted {
            bar.abandon_with_message("cancelled");
            say(format!(
                "subtopic {key}: cancelled at {}/{} items",
                bar.position(),
                bar.length().unwrap_or(0)
            ));
        } else {
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
    async fn start(
        handle: &RunHandle,
        db: &std::path::Path,
        watch: StepWatch,
    ) -> anyhow::Result<View> {
        let ui = UiServer::new().database(db)?;
        let live = ui.attach_run("deep-research", handle.clone());
        live.watch(watch);
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

/// What a sub-question had streamed when an earlier run stopped: the
/// tokens of its completed steps and their node completions, as the tracker
/// recorded them; and whether it was summarised. By sub-question key.
fn recorded_items(
    db: &std::path::Path,
    app_id: &str,
    n: usize,
) -> anyhow::Result<HashMap<String, (u64, bool)>> {
    let reader = RunReader::open(db)?;
    let mut recorded = HashMap::new();
    for j in 0..n {
        // `plan` is step 0, so `research` runs at sequence 1.
        let child = child_app_id(app_id, 1, "research", &j.to_string());
        let mut items = 0;
        let mut summarised = false;
        for step in reader.steps(&child)? {
            if step.status != TrackedStepStatus::Completed {
                continue;
            }
            items += step.items;
            if step.action == "summarise" {
                summarised = true;
            } else {
                items += 1; // its node completion
            }
        }
        if items > 0 {
            recorded.insert(j.to_string(), (items, summarised));
        }
    }
    Ok(recorded)
}

/// The bar of sub-question `key`, starting from what was recorded of it.
fn new_bar(
    key: &str,
    recorded: &HashMap<String, (u64, bool)>,
    model_on: bool,
    multi: &MultiProgress,
    style: &ProgressStyle,
    say: &impl Fn(String),
) -> ProgressBar {
    let index: usize = key.parse().unwrap_or(0);
    let [search, read, summarise] = simulated_tokens(index);
    // A model's answer has as many tokens as it writes: a guess, grown as
    // they come.
    let summarise = if model_on { 40 } else { summarise };
    let bar = multi.add(ProgressBar::new((search + read + summarise + 2) as u64));
    bar.set_style(style.clone());
    bar.set_prefix(format!("subtopic {key} ({})", angle(index).name));
    if let Some(&(items, summarised)) = recorded.get(key) {
        bar.set_length(bar.length().unwrap_or(0).max(items));
        bar.set_position(items);
        let total = bar.length().unwrap_or(items);
        say(format!(
            "subtopic {key}: {items}/{total} items already recorded{}",
            if summarised { ", summarised" } else { "" }
        ));
    }
    bar
}

/// Update the bar of the sub-question an item belongs to.
fn show_child(child: &StreamItem, bar: &ProgressBar, say: &impl Fn(String)) {
    let key = &child.task_key;
    match child.kind {
        ItemKind::Token => {
            if bar.position() + 2 >= bar.length().unwrap_or(0) {
                bar.inc_length(1);
            }
            bar.inc(1);
            let text = child
                .result
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default();
            bar.set_message(text.trim().chars().take(40).collect::<String>());
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
        ItemKind::Cancelled => {
            bar.abandon_with_message("cancelled");
            say(format!("subtopic {key}: cancelled"));
        }
        ItemKind::Failed => {
            let why = child
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            bar.abandon_with_message(format!("failed: {why}"));
            say(format!("subtopic {key}: failed: {why}"));
        }
    }
}
