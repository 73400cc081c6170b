//! A process running a 20-step durable workflow is killed with SIGKILL at
//! a random step; a new process resumes it with `resume_all` and gets the
//! result of an uninterrupted run, without running journaled steps again.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STEPS: u64 = 20;

fn spawn(db: &Path, log: &Path, mode: &str, id: &str, delay_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_durable_worker"))
        .arg(db)
        .arg(log)
        .arg(mode)
        .arg(id)
        .arg(STEPS.to_string())
        .arg(delay_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

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

/// Run the helper to its end (bounded) and return what it printed.
fn run_to_end(db: &Path, log: &Path, mode: &str, id: &str) -> Vec<String> {
    let mut child = spawn(db, log, mode, id, 1);
    let rx = lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "helper {mode} failed: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "helper {mode} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.iter().collect()
}

fn executions(log: &Path) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.parse().unwrap()).or_default() += 1;
    }
    counts
}

#[test]
fn a_workflow_killed_at_a_random_step_is_resumed_by_a_new_process_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("t.db"), dir.path().join("exec.log"));

    // Reference: an uninterrupted run in another file.
    let reference = run_to_end(
        &dir.path().join("ref.db"),
        &dir.path().join("ref.log"),
        "start",
        "count-1",
    );
    let reference = reference
        .iter()
        .find(|l| l.starts_with("result "))
        .unwrap()
        .clone();

    // Kill at a step chosen at random (2..=17), while its body sleeps.
    let kill_at = 2 + (uuid::Uuid::new_v4().as_u128() % 16) as u64;
    let mut child = spawn(&db, &log, "start", "count-1", 300);
    let rx = lines(&mut child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the helper reports its steps");
        if line == format!("ran {kill_at}") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    assert!(!child.wait().unwrap().success());
    let before = executions(&log);
    assert!(before.len() as u64 > kill_at, "{before:?}");

    let printed = run_to_end(&db, &log, "resume", "-");
    assert_eq!(
        printed.first().map(String::as_str),
        Some("resumed count-1"),
        "{printed:?}"
    );
    let result = printed.iter().find(|l| l.starts_with("result ")).unwrap();
    assert_eq!(result, &reference);

    // Steps journaled before the kill ran once; the one in flight (the
    // kill lands while it sleeps, unless this thread was slower than its
    // 300 ms) ran again; every step ran, none more than twice.
    let runs = executions(&log);
    assert_eq!(runs.len() as u64, STEPS, "{runs:?}");
    for i in 0..kill_at {
        assert_eq!(
            runs[&i], 1,
            "step {i} ran again (killed at {kill_at}): {runs:?}"
        );
    }
    assert!(runs.values().all(|&n| n <= 2), "{runs:?}");
    assert!(runs.values().filter(|&&n| n == 2).count() <= 1, "{runs:?}");

    // A third process finds nothing left to resume.
    let printed = run_to_end(&db, &log, "resume", "-");
    assert_eq!(printed, ["resumed "]);
}
