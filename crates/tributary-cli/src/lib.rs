//! The `tributary` command: inspect the runs a
//! [`SqliteTracker`](tributary_sqlite::SqliteTracker) recorded.
//!
//! ```text
//! tributary runs                          # root runs: id, partition, status, steps, children, active time, start
//! tributary runs --all                    # every app, children included, with its task path
//! tributary show <app-id>                 # one run, step by step (every attempt of a retried step)
//! tributary tree <app-id>                 # the subgraphs it spawned, by task key, in task order
//! tributary export <app-id> --format dot  # its actions, observed transitions and child subgraphs
//! tributary ui --addr 127.0.0.1:7878      # the web view of the recorded runs, read-only (SQLite or PostgreSQL)
//! tributary cluster status --broker redis://127.0.0.1:6379   # a cluster's queue depth, dead-lettered tasks, workers
//! tributary cluster dead --broker nats://127.0.0.1:4222      # its dead-lettered tasks with their errors
//! tributary cluster retry <id> --broker redis://127.0.0.1:6379  # publish a dead-lettered task again
//! ```
//!
//! The `cluster` commands read a cluster's queues on its broker (namespace
//! `--namespace`, default `tributary`), not a database.
//!
//! The database is `--db PATH`, else `$TRIBUTARY_DB`, else
//! `.tributary/tributary.db` in the current directory. It is opened
//! read-only and never written, so a database of another user can be
//! read. A `postgres://` (or `postgresql://`) URL instead of a path reads
//! a PostgreSQL tracker's records (schema `--schema`, default `tributary`)
//! with the same output; `show --follow` then goes on printing the run's
//! new steps as they are recorded, announced by the database (no polling). Output is a human-readable table; `--json` prints JSON for
//! scripts. Every text taken from the database is sanitised before it
//! reaches the terminal: control characters and escape sequences are shown
//! as `\u{..}` escapes (in JSON, as `\uXXXX`). Errors are one line on
//! stderr and a non-zero exit; a row that cannot be read is listed as
//! `unreadable` with the reason, the other rows as usual.
//!
//! The logic lives here, in a library, so it can be tested without a
//! process: [`run`] takes the parsed [`Cli`] and a writer.
//!
//! # Examples
//!
//! ```
//! use clap::Parser;
//! use tributary_cli::{Cli, CliError, run};
//!
//! let dir = tempfile::tempdir()?;
//! let cli = Cli::parse_from(["tributary", "--db", &dir.path().join("none.db").display().to_string(), "runs"]);
//! let mut out = Vec::new();
//! let err = run(&cli, &mut out).unwrap_err();
//! assert!(matches!(err, CliError::Database(_)));
//! assert!(err.to_string().starts_with("no tributary database at"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cluster;
mod export;
mod postgres;
mod render;
mod tree;
mod ui;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tributary_core::ParentPointer;
use tributary_sqlite::{
    JournaledStep, RunReader, RunSource, RunSummary, SqliteError, TrackedStep, TrackedStepStatus,
};

pub use crate::cluster::{BrokerArgs, ClusterCommand};
pub use crate::ui::serve_ui;

use crate::render::{Align, Guard, SafeJson, Table, clean, format_duration, format_time, truncate};

/// Where the database is when neither `--db` nor `TRIBUTARY_DB` says.
pub const DEFAULT_DB: &str = ".tributary/tributary.db";

/// The command line of `tributary`.
#[derive(Debug, Parser)]
#[command(
    name = "tributary",
    version,
    about = "Inspect the runs recorded by tributary's SQLite or PostgreSQL tracker"
)]
pub struct Cli {
    /// The tracker's database: a file, or a postgres:// URL [default: .tributary/tributary.db]
    #[arg(long, env = "TRIBUTARY_DB", global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// The PostgreSQL schema of the tracker's tables, for a `postgres://` URL
    #[arg(
        long,
        env = "TRIBUTARY_SCHEMA",
        global = true,
        default_value = "tributary"
    )]
    pub schema: String,

    /// Print JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List root runs: app id, partition key, status, steps, children, active time, start
    Runs {
        /// Only the runs of this partition key
        #[arg(long, value_name = "KEY")]
        partition: Option<String>,
        /// Every app, children included, with its task path
        #[arg(long)]
        all: bool,
    },
    /// Show one run step by step
    Show {
        /// The run's app id
        app_id: String,
        /// Then print each new step as it is recorded (PostgreSQL)
        #[arg(long)]
        follow: bool,
    },
    /// Draw the tree of subgraphs a run spawned, with their statuses
    Tree {
        /// The root's app id
        app_id: String,
    },
    /// Export a run's actions and observed transitions as a graph
    Export {
        /// The run's app id
        app_id: String,
        /// The graph language
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
    /// Serve the web view of the recorded runs (read-only) until Ctrl-C
    Ui {
        /// Where to listen (loopback unless told otherwise)
        #[arg(long, default_value = tributary_ui::DEFAULT_ADDR)]
        addr: std::net::SocketAddr,
        /// Allow controls (they act on live runs attached in-process; a
        /// recorded database stays read-only)
        #[arg(long)]
        control: bool,
    },
    /// Inspect a cluster's queues on its broker: status, dead, retry
    Cluster {
        /// What to do.
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// A graph language for `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// Why a command failed. Displayed as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The database could not be opened or read.
    #[error(transparent)]
    Database(#[from] SqliteError),
    /// No run has this app id.
    #[error("no run with app id `{app_id}` in {}", path.display())]
    UnknownApp {
        /// The app id asked for.
        app_id: String,
        /// The database.
        path: PathBuf,
    },
    /// The web view could not be served.
    #[error(transparent)]
    Ui(#[from] tributary_ui::UiError),
    /// The PostgreSQL database could not be read.
    #[error(transparent)]
    Postgres(#[from] tributary_postgres::PostgresError),
    /// The records read from PostgreSQL could not be copied for reading.
    #[error("cannot copy the PostgreSQL records into a temporary file: {reason}")]
    Snapshot {
        /// Why.
        reason: String,
    },
    /// `--follow` was asked of a SQLite file, which announces nothing.
    #[error("--follow needs a PostgreSQL database (--db postgres://...)")]
    FollowNeedsPostgres,
    /// A `--broker` URL of no known scheme.
    #[error("`{url}` is not a broker URL (redis://, rediss://, nats:// or tls://)")]
    BrokerUrl {
        /// The URL given.
        url: String,
    },
    /// A cluster operation failed.
    #[error(transparent)]
    Cluster(#[from] tributary_cluster::OpsError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    /// Whether the reader of the output went away (`tributary runs | head`):
    /// not worth an error message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl Cli {
    /// The database this command line names.
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
    }
}

/// Run `cli`, writing its output to `out`.
///
/// # Errors
///
/// [`CliError`] for a missing, corrupt or newer database, an unknown app
/// id, or a failed write.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), CliError> {
    if let Command::Ui { addr, control } = &cli.command {
        return ui_until_ctrl_c(cli, *addr, *control);
    }
    if let Command::Cluster { command } = &cli.command {
        return cluster::cluster(command, cli.json, &mut Guard(out));
    }
    let db = cli.db_path();
    let url = db.to_str().filter(|d| postgres::is_url(d));
    let follow = matches!(cli.command, Command::Show { follow: true, .. });
    let feed = match (url, follow) {
        (Some(url), true) => Some(postgres::listen(url, &cli.schema)?),
        (None, true) => return Err(CliError::FollowNeedsPostgres),
        _ => None,
    };
    let open = || open_source(&db, &cli.schema);
    let out = &mut Guard(out);
    match &cli.command {
        Command::Runs { partition, all } => {
            runs(&open()?, partition.as_deref(), *all, cli.json, out)
        }
        Command::Show { app_id, .. } => {
            let reader = open()?;
            show(&reader, app_id, cli.json, out)?;
            match feed {
                Some((rt, feed)) => postgres::follow(rt, feed, &*reader, app_id, out),
                None => Ok(()),
            }
        }
        Command::Tree { app_id } => {
            let reader = open()?;
            tree::tree(&*reader, &find(&reader, app_id)?, cli.json, out)
        }
        Command::Export { app_id, format } => {
            let reader = open()?;
            let run = find(&reader, app_id)?;
            export::export(&*reader, &run, *format, cli.json, out)
        }
        Command::Ui { .. } | Command::Cluster { .. } => unreachable!("run above"),
    }
}

/// `tributary ui`: serve until Ctrl-C on a runtime of its own.
fn ui_until_ctrl_c(cli: &Cli, addr: std::net::SocketAddr, control: bool) -> Result<(), CliError> {
    if control {
        eprintln!(
            "tributary ui: controls act on live runs attached in-process \
             (tributary::ui::UiServer::attach_run); recorded runs stay read-only"
        );
    }
    let serve_error = |source| {
        CliError::Ui(tributary_ui::UiError::Serve {
            addr: addr.to_string(),
            source,
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(serve_error)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(serve_error)?;
        let at = listener.local_addr().unwrap_or(addr);
        let ctrl_c = async {
            // An error installing the handler means Ctrl-C ends the process
            // as usual.
            let _ = tokio::signal::ctrl_c().await;
        };
        serve_ui(cli, listener, ctrl_c, |what| {
            eprintln!("tributary ui: serving {} on http://{at}", clean(what));
        })
        .await
    })
}

/// The reader of either backend, its errors those of the command.
pub type Reader = dyn RunSource<Error = CliError>;

/// The reader of the runs in `db`: a SQLite file, or a PostgreSQL database
/// (a `postgres://` URL, its tracker's tables in `schema`), queried
/// directly; every command reads through it.
///
/// A blocking reader: from async code, call it inside `spawn_blocking`.
///
/// # Errors
///
/// [`CliError::Database`] for a file that cannot be read,
/// [`CliError::Postgres`] for a database that cannot be read.
pub fn open_reader(db: &Path, schema: &str) -> Result<Box<Reader>, CliError> {
    Ok(open_source(db, schema)?.reader)
}

fn open_source(db: &Path, schema: &str) -> Result<Source, CliError> {
    Ok(match db.to_str().filter(|d| postgres::is_url(d)) {
        Some(url) => {
            let runs = postgres::PostgresRuns::connect(url, schema)?;
            Source {
                label: runs.source(),
                reader: Box::new(Errors(runs)),
            }
        }
        None => {
            let runs = RunReader::open(db)?;
            Source {
                label: runs.path().display().to_string(),
                reader: Box::new(Errors(runs)),
            }
        }
    })
}

/// The reader, and the database's name for messages (the file, or the
/// PostgreSQL server, database and schema).
struct Source {
    reader: Box<Reader>,
    label: String,
}

impl std::ops::Deref for Source {
    type Target = Reader;

    fn deref(&self) -> &Reader {
        &*self.reader
    }
}

/// A backend's reader whose errors become the command's.
struct Errors<R>(R);

impl<R: RunSource> RunSource for Errors<R>
where
    CliError: From<R::Error>,
{
    type Error = CliError;

    fn runs(&self) -> Result<Vec<RunSummary>, CliError> {
        Ok(self.0.runs()?)
    }

    fn roots(&self) -> Result<Vec<RunSummary>, CliError> {
        Ok(self.0.roots()?)
    }

    fn run(&self, app_id: &str) -> Result<Option<RunSummary>, CliError> {
        Ok(self.0.run(app_id)?)
    }

    fn children(&self, app_id: &str) -> Result<Vec<RunSummary>, CliError> {
        Ok(self.0.children(app_id)?)
    }

    fn steps(&self, app_id: &str) -> Result<Vec<TrackedStep>, CliError> {
        Ok(self.0.steps(app_id)?)
    }

    fn journal(&self, app_id: &str) -> Result<Vec<JournaledStep>, CliError> {
        Ok(self.0.journal(app_id)?)
    }
}

fn find(reader: &Source, app_id: &str) -> Result<RunSummary, CliError> {
    reader.run(app_id)?.ok_or_else(|| CliError::UnknownApp {
        app_id: app_id.to_owned(),
        path: PathBuf::from(&reader.label),
    })
}

fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, SafeJson::new());
    value.serialize(&mut ser).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// The active time, and the dead gaps when there were any:
/// `5.02s (+4.4s while no process ran)`.
fn active_text(run: &RunSummary) -> String {
    let Some(active) = run.active_micros else {
        return "-".into();
    };
    let dead: i64 = run.gaps.iter().filter_map(|g| g.micros()).sum();
    match dead {
        0 => format_duration(active),
        d => format!(
            "{} (+{} while no process ran)",
            format_duration(active),
            format_duration(d)
        ),
    }
}

/// `2`, `2 (1 retry)`, `3 (resumed 1×)`, `3 (1 retry, resumed 2×)`.
fn steps_text(run: &RunSummary) -> String {
    let mut notes = Vec::new();
    match run.retries {
        0 => {}
        1 => notes.push("1 retry".to_owned()),
        n => notes.push(format!("{n} retries")),
    }
    if run.resumes > 0 {
        notes.push(format!("resumed {}×", run.resumes));
    }
    match notes.is_empty() {
        true => run.steps.to_string(),
        false => format!("{} ({})", run.steps, notes.join(", ")),
    }
}

/// Rows that could not be read, one line each after a listing.
fn write_problems(runs: &[RunSummary], out: &mut dyn Write) -> Result<(), CliError> {
    for run in runs.iter().filter(|r| r.problem.is_some()) {
        writeln!(
            out,
            "unreadable row {}: {}",
            clean(&run.app_id),
            clean(run.problem.as_deref().unwrap_or_default())
        )?;
    }
    Ok(())
}

fn runs(
    reader: &Source,
    partition: Option<&str>,
    all: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let listed = if all { reader.runs()? } else { reader.roots()? };
    let runs: Vec<RunSummary> = listed
        .into_iter()
        .filter(|r| partition.is_none() || r.partition_key.as_deref() == partition)
        .collect();
    if json {
        return write_json(out, &runs);
    }
    if runs.is_empty() {
        writeln!(out, "no runs in {}", clean(&reader.label))?;
        return Ok(());
    }
    let mut columns = vec![
        ("APP ID", Align::Left),
        ("PARTITION", Align::Left),
        ("STATUS", Align::Left),
        ("STEPS", Align::Right),
        ("CHILDREN", Align::Right),
        ("ACTIVE", Align::Right),
        ("STARTED", Align::Left),
    ];
    if all {
        columns.push(("TASK PATH", Align::Left));
    }
    let mut table = Table::new(columns);
    for run in &runs {
        let mut cells = vec![
            run.app_id.clone(),
            run.partition_key.clone().unwrap_or_else(|| "-".into()),
            run.status.to_string(),
            run.steps.to_string(),
            run.children.to_string(),
            active_text(run),
            format_time(run.started_at.unwrap_or(run.created_at)),
        ];
        if all {
            cells.push(run.task_path.join(" / "));
        }
        table.row(cells);
    }
    table.write(out)?;
    write_problems(&runs, out)
}

fn pointer_text(p: &ParentPointer) -> String {
    match &p.action {
        Some(action) => format!("{} step {} ({action})", p.app_id, p.sequence_id),
        None => format!("{} step {}", p.app_id, p.sequence_id),
    }
}

fn show(reader: &Source, app_id: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let journal = reader.journal(app_id)?;
    // A durable workflow that no tracker recorded still has its journal.
    let run = match reader.run(app_id)? {
        Some(run) => run,
        None if !journal.is_empty() => {
            if json {
                return write_json(out, &json!({ "app_id": app_id, "journal": journal }));
            }
            let mut head = Table::plain();
            head.row(["app id".into(), app_id.to_owned()]);
            head.row(["journaled".into(), journal.len().to_string()]);
            head.write(out)?;
            return write_journal(&journal, out);
        }
        None => {
            return Err(CliError::UnknownApp {
                app_id: app_id.to_owned(),
                path: PathBuf::from(&reader.label),
            });
        }
    };
    let steps = reader.steps(app_id)?;
    let children = reader.children(app_id)?;
    if json {
        let children: Vec<&str> = children.iter().map(|c| c.app_id.as_str()).collect();
        return write_json(
            out,
            &json!({ "run": run, "steps": steps, "children": children, "journal": journal }),
        );
    }
    let mut head = Table::plain();
    head.row(["app id".into(), run.app_id.clone()]);
    if let Some(label) = run
        .label
        .as_ref()
        .filter(|l| Some(*l) != run.task_key.as_ref())
    {
        head.row(["label".into(), label.clone()]);
    }
    if let Some(key) = &run.task_key {
        head.row(["task".into(), key.clone()]);
    }
    if run.task_path.len() > 1 {
        head.row(["task path".into(), run.task_path.join(" / ")]);
    }
    if let Some(id) = &run.run_id {
        head.row(["run id".into(), id.clone()]);
    }
    if let Some(key) = &run.partition_key {
        head.row(["partition".into(), key.clone()]);
    }
    head.row(["status".into(), run.status.to_string()]);
    if let Some(problem) = &run.problem {
        head.row(["problem".into(), problem.clone()]);
    }
    // Steps are sequence ids; a retried or resumed step adds attempts, not
    // steps.
    head.row(["steps".into(), steps_text(&run)]);
    head.row(["created".into(), format_time(run.created_at)]);
    if run.active_micros.is_some() {
        head.row(["active".into(), active_text(&run)]);
    }
    for gap in &run.gaps {
        head.row([
            "no process".into(),
            format!(
                "{} to {} ({})",
                format_time(gap.from),
                format_time(gap.to),
                gap.micros().map_or("-".into(), format_duration)
            ),
        ]);
    }
    if let Some(p) = &run.parent {
        head.row(["forked from".into(), pointer_text(p)]);
    }
    if let Some(p) = &run.spawning_parent {
        head.row(["spawned by".into(), pointer_text(p)]);
    }
    if !children.is_empty() {
        head.row(["children".into(), children.len().to_string()]);
    }
    if !journal.is_empty() {
        head.row(["journaled".into(), journal.len().to_string()]);
    }
    // Steps that paused from inside their action (a durable step out of
    // retries): what waits and why, and when it was resumed.
    for step in &steps {
        let Some(pause) = &step.pause else { continue };
        let when = match pause.resumed_at {
            None => format!("since {}", format_time(pause.at)),
            Some(resumed) => format!(
                "{} to {} ({}), resumed",
                format_time(pause.at),
                format_time(resumed),
                format_duration(resumed.saturating_sub(pause.at))
            ),
        };
        head.row([
            "paused".into(),
            truncate(
                &format!(
                    "step {} ({}) {when}: {} out of retries: {}",
                    step.sequence_id, step.action, pause.waiting, pause.reason
                ),
                120,
            ),
        ]);
    }
    head.write(out)?;
    if steps.is_empty() {
        return write_journal(&journal, out);
    }
    writeln!(out)?;
    let mut table = Table::new([
        ("SEQ", Align::Right),
        ("ATTEMPT", Align::Right),
        ("ACTION", Align::Left),
        ("STATUS", Align::Left),
        ("DURATION", Align::Right),
        ("ITEMS", Align::Right),
        ("RESULT / ERROR", Align::Left),
    ]);
    for step in &steps {
        let mut detail = match (&step.error, &step.result) {
            (Some(error), _) => error.clone(),
            (None, Some(result)) => result.to_string(),
            (None, None) => String::new(),
        };
        for note in [&step.unrecorded, &step.unreadable].into_iter().flatten() {
            detail = format!("{detail} ({note})").trim_start().to_owned();
        }
        if step.resumed {
            detail = format!("resumed; {detail}");
        }
        // A step that waits, paused from inside its action, is still
        // running as far as its attempt goes: say that it waits.
        let status = match &step.pause {
            Some(p) if p.is_waiting() && step.status == TrackedStepStatus::Running => {
                detail = format!("waits for {}; {detail}", p.waiting)
                    .trim_end_matches("; ")
                    .to_owned();
                "paused".to_owned()
            }
            _ => step.status.to_string(),
        };
        table.row([
            step.sequence_id.to_string(),
            step.attempt.to_string(),
            step.action.clone(),
            status,
            step.duration_micros().map_or("-".into(), format_duration),
            step.items.to_string(),
            truncate(&detail, 72),
        ]);
    }
    table.write(out)?;
    write_journal(&journal, out)
}

/// The durable steps of a run: each journaled outcome, which a replay
/// returns instead of running the step again, and whether the latest
/// execution (run, retry or resume) ran it or replayed it.
fn write_journal(journal: &[JournaledStep], out: &mut dyn Write) -> Result<(), CliError> {
    if journal.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "journal (durable steps)")?;
    let mut table = Table::new([
        ("SEQ", Align::Right),
        ("POS", Align::Right),
        ("STEP", Align::Left),
        ("KIND", Align::Left),
        ("STATUS", Align::Left),
        ("LATEST", Align::Left),
        ("VALUE / ERROR", Align::Left),
    ]);
    for entry in journal {
        let detail = match (&entry.error, &entry.value) {
            (Some(error), _) => error.clone(),
            (None, Some(value)) => value.clone(),
            (None, None) => String::new(),
        };
        table.row([
            entry.sequence_id.to_string(),
            entry.position.to_string(),
            format!("{}#{}", entry.step, entry.occurrence),
            entry.kind.clone(),
            entry.status.clone(),
            entry.replay.map_or("-", |r| r.as_str()).to_owned(),
            truncate(&detail, 72),
        ]);
    }
    table.write(out)?;
    Ok(())
}
