//! A process killed with SIGKILL mid-run resumes from its PostgreSQL
//! checkpoints: finished steps never run again and the final state equals
//! an uninterrupted run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tributary::StepStatus;
use tributary_postgres::PostgresPersister;

use crate::postgres_support::{TestSchema, url};

const STEPS: usize = 8;

fn spawn(schema: &str, app_id: &str, log: &Path, delay_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_postgres_crash_app"))
        .arg(url())
        .arg(schema)
        .arg(app_id)
        .arg(log)
        .arg(STEPS.to_string())
        .arg(delay_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines `child` prints, read on a thread so the test can wait for them
/// with a bound.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("helper still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the helper to the end and returns what it printed.
fn run_to_end(schema: &str, app_id: &str, log: &Path) -> Vec<String> {
    let mut child = spawn(schema, app_id, log, 5);
    let rx = lines(&mut child);
    assert!(wait_bounded(&mut child, Duration::from_secs(60)).success());
    rx.iter().collect()
}

/// How often each step of `app_id` started, from the execution log.
fn executions(log: &Path, app_id: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(action) = line.strip_prefix(&format!("{app_id} ")) {
            *counts.entry(action.to_owned()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_killed_process_resumes_from_postgres_without_rerunning_finished_steps() {
    let schema = TestSchema::new("crash");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("exec.log");

    // First run: SIGKILL once three steps are done (250 ms a step leaves
    // it more than a second of work to be killed in).
    let mut child = spawn(&schema.name, "job", &log, 250);
    let rx = lines(&mut child);
    let mut done = Vec::new();
    while done.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the helper reports its steps");
        done.push(line);
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(done, ["done 0 step0", "done 1 step1", "done 2 step2"]);

    // Second process, same schema, `.resume()`: it goes on after the last
    // checkpoint.
    let printed = run_to_end(&schema.name, "job", &log);
    let resumed: Vec<&String> = printed.iter().filter(|l| l.starts_with("done")).collect();
    assert!(!resumed.is_empty());
    assert!(
        resumed.iter().all(|l| !done.contains(l)),
        "finished steps ran again: {resumed:?}"
    );
    let final_state = printed.last().unwrap().clone();
    let runs = executions(&log, "job");
    for finished in ["step0", "step1", "step2"] {
        assert_eq!(runs[finished], 1, "{finished} ran again: {runs:?}");
    }
    // Every step ran; at most the step in flight at the kill ran twice.
    assert_eq!(runs.len(), STEPS, "{runs:?}");
    assert!(runs.values().filter(|&&n| n > 1).count() <= 1, "{runs:?}");

    let p = PostgresPersister::new(schema.connect().await);
    let history = p.history("job").await.unwrap();
    assert_eq!(history.len(), STEPS);
    assert!(history.iter().all(|c| c.status == StepStatus::Completed));

    // An uninterrupted run ends in the same state.
    let uninterrupted = run_to_end(&schema.name, "clean", &log);
    assert_eq!(uninterrupted.len(), STEPS + 1);
    assert_eq!(uninterrupted.last().unwrap(), &final_state);
    assert!(final_state.starts_with("final {\"trail\":[\"step0\""));
}
