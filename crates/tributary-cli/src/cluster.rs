//! `tributary cluster`: a cluster's task queue, dead-lettered tasks and
//! workers, read from its broker; and a dead-lettered task published again.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use tributary_cluster::{ClusterOptions, DeadTask, Fleet, NatsBroker, RedisBroker, WorkerBeat};

use crate::render::{Align, Table, clean, format_duration, truncate};
use crate::{CliError, write_json};

/// Where a cluster's queues are.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker: redis://host:port or nats://host:port
    #[arg(long, env = "TRIBUTARY_BROKER", value_name = "URL")]
    pub broker: String,
    /// The cluster's namespace (the prefix of its queue names)
    #[arg(long, env = "TRIBUTARY_NAMESPACE", default_value = "tributary")]
    pub namespace: String,
}

/// The `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Task-queue depth, dead-lettered tasks, and the workers that answer
    Status {
        /// The cluster's broker and namespace.
        #[command(flatten)]
        at: BrokerArgs,
        /// How long to wait for the workers' answers, in milliseconds (0: do not ask)
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        wait: u64,
    },
    /// The dead-lettered tasks with their errors
    Dead {
        /// The cluster's broker and namespace.
        #[command(flatten)]
        at: BrokerArgs,
    },
    /// Publish a dead-lettered task again (and remove it from the dead letters)
    Retry {
        /// The cluster's broker and namespace.
        #[command(flatten)]
        at: BrokerArgs,
        /// The dead letter's id, as `dead` lists it
        id: String,
    },
}

/// Run a `cluster` subcommand on a runtime of its own.
pub(crate) fn cluster(
    command: &ClusterCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Output)?;
    runtime.block_on(async {
        match command {
            ClusterCommand::Status { at, wait } => {
                let fleet = connect(at).await?;
                let status = fleet.status(Duration::from_millis(*wait)).await?;
                if json {
                    return write_json(out, &status);
                }
                let mut head = Table::plain();
                head.row(["namespace".into(), status.namespace.clone()]);
                head.row(["queue depth".into(), status.queue_depth.to_string()]);
                head.row([
                    "waiting".into(),
                    status
                        .waiting
                        .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                ]);
                head.row(["claimed".into(), status.claimed.to_string()]);
                head.row(["dead tasks".into(), status.dead.len().to_string()]);
                head.row([
                    "workers".into(),
                    match wait {
                        0 => "not asked (--wait 0)".to_owned(),
                        _ => format!("{} answered within {wait} ms", status.workers.len()),
                    },
                ]);
                head.write(out)?;
                if !status.workers.is_empty() {
                    writeln!(out)?;
                    workers_table(&status.workers, out)?;
                }
                if !status.dead.is_empty() {
                    writeln!(out)?;
                    dead_table(&status.dead, out)?;
                }
                Ok(())
            }
            ClusterCommand::Dead { at } => {
                let dead = connect(at).await?.dead().await?;
                if json {
                    return write_json(out, &dead);
                }
                if dead.is_empty() {
                    writeln!(
                        out,
                        "no dead-lettered tasks in namespace {}",
                        clean(&at.namespace)
                    )?;
                    return Ok(());
                }
                dead_table(&dead, out)
            }
            ClusterCommand::Retry { at, id } => {
                let retried = connect(at).await?.retry_dead(id).await?;
                if json {
                    return write_json(out, &retried);
                }
                let t = &retried.task;
                writeln!(
                    out,
                    "published task {} again (run {}, task {}, graph {}); its claims continue after {}",
                    clean(&t.key),
                    clean(&t.run),
                    t.index,
                    clean(&t.graph),
                    retried.earlier_claims
                )?;
                Ok(())
            }
        }
    })
}

async fn connect(at: &BrokerArgs) -> Result<Fleet, CliError> {
    let options = ClusterOptions::new().namespace(at.namespace.clone());
    let url = at.broker.as_str();
    let fleet = if url.starts_with("redis://") || url.starts_with("rediss://") {
        Fleet::connect(RedisBroker::new(url), options).await?
    } else if url.starts_with("nats://") || url.starts_with("tls://") {
        Fleet::connect(NatsBroker::new(url), options).await?
    } else {
        return Err(CliError::BrokerUrl {
            url: url.to_owned(),
        });
    };
    Ok(fleet)
}

fn workers_table(workers: &[WorkerBeat], out: &mut dyn Write) -> Result<(), CliError> {
    let mut table = Table::new([
        ("WORKER", Align::Left),
        ("HELD", Align::Right),
        ("CONCURRENCY", Align::Right),
        ("LAST BEAT", Align::Right),
        ("TASKS", Align::Left),
    ]);
    for w in workers {
        let tasks: Vec<String> = w
            .held
            .iter()
            .map(|(run, task)| format!("{run}#{task}"))
            .collect();
        table.row([
            w.worker.clone(),
            w.held.len().to_string(),
            w.concurrency.to_string(),
            format!(
                "{} ago",
                format_duration(i64::try_from(w.beat_age_ms).unwrap_or(i64::MAX / 1000) * 1000)
            ),
            truncate(&tasks.join(" "), 72),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn dead_table(dead: &[DeadTask], out: &mut dyn Write) -> Result<(), CliError> {
    let mut table = Table::new([
        ("ID", Align::Left),
        ("RUN", Align::Left),
        ("TASK", Align::Right),
        ("KEY", Align::Left),
        ("GRAPH", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for d in dead {
        let (run, task, key, graph) = match &d.task {
            Some(t) => (
                t.run.clone(),
                t.index.to_string(),
                t.key.clone(),
                t.graph.clone(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let mut error = d.error.clone().unwrap_or_else(|| "-".into());
        if let Some(why) = &d.unreadable {
            error = format!("{error} ({why})");
        }
        let attempts = match d.earlier_claims {
            0 => d.attempts.to_string(),
            n => format!("{} (+{n} before)", d.attempts),
        };
        table.row([
            d.id.clone(),
            run,
            task,
            key,
            graph,
            attempts,
            truncate(&error, 72),
        ]);
    }
    table.write(out)?;
    Ok(())
}
