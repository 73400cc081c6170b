//! Runs every example to completion (the crawler against its own local
//! HTTP server), so none can silently break. `cargo test` builds the
//! examples before it runs this.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/examples_run-<hash> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("in target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

/// Run example `name`; it must exit 0 within two minutes and print every
/// line of `expect`.
fn run(name: &str, expect: &[&str]) {
    run_with(name, &[], expect);
}

/// Run example `name` with `args`; it must exit 0 within two minutes and
/// print every line of `expect`. Returns its standard output.
fn run_with(name: &str, args: &[&str], expect: &[&str]) -> String {
    let path = example(name);
    assert!(
        path.exists(),
        "example {name} is not built at {}",
        path.display()
    );
    let child = Command::new(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let pid = child.id();
    // Collect the output on a thread so a chatty example never blocks on a
    // full pipe, and bound the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("output is readable"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("example {name} did not finish within two minutes");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example {name} failed: {stderr}\n{stdout}"
    );
    for line in expect {
        assert!(
            stdout.contains(line),
            "example {name} did not print {line:?}:\n{stdout}"
        );
    }
    stdout.into_owned()
}

#[test]
fn quickstart() {
    run(
        "quickstart",
        &["streaming: why actors how actors", "checkpoint 3 write"],
    );
}

#[test]
fn voice_search_runs_its_calls_locally_and_on_a_cluster_worker() {
    let expect = [
        "query-1: <speech>top result for 'rivers that flow north'",
        "query-2: answer to 'what is the longest river': the Amazon",
    ];
    run("voice_search", &expect);
    let out = run_with("voice_search", &["--cluster"], &expect);
    assert!(out.contains("functions run on a cluster worker"), "{out}");
    // speech_to_text twice, search twice (one failure), one answer, one
    // speech: six calls, each a task on the worker.
    assert!(out.contains("the worker ran 6 call(s)"), "{out}");
}

#[test]
fn quick_exit() {
    run("quick_exit", &["winner: small; cancelled:"]);
}

#[test]
fn pr_review() {
    run("pr_review", &["streamed 42 reply tokens live"]);
}

#[test]
fn crawler() {
    run("crawler", &["crawled 31 pages"]);
    // The flags size the site; each page's title comes from its HTML.
    run_with(
        "crawler",
        &["--pages", "50", "--concurrency", "8"],
        &[
            "serving 50 pages",
            "crawled /page/49   \"page 49\"",
            "crawled 50 pages",
        ],
    );
}

#[test]
fn nested_control() {
    run(
        "nested_control",
        &["cancelled doc-b/2; translated 6 of 7 paragraphs"],
    );
}

#[test]
fn service_loop() {
    run("service_loop", &["tokens", "finished 3, cancelled 1"]);
}

#[test]
fn sync_blocking() {
    run("sync_blocking", &["total: 20 words"]);
}

#[test]
fn streams_dispatch() {
    run_with("streams_dispatch", &[], &[]);
}

/// A fresh database path under the system temp dir.
fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-example-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("t.db")
}

/// The report an example run printed: from its `# topic` line to the line
/// that says where the run is stored.
fn report_of(stdout: &str) -> String {
    let Some(start) = stdout.find("\n# ") else {
        return String::new();
    };
    let report = &stdout[start + 1..];
    let end = report.find("\nstored in ").unwrap_or(report.len());
    report[..end].trim_end().to_owned()
}

#[test]
fn deep_research_runs_to_its_report_and_names_its_tree() {
    let db = temp_db("full");
    let db_arg = db.to_str().unwrap();
    let out = run_with(
        "deep_research",
        &[
            "--db",
            db_arg,
            "--subtopics",
            "4",
            "--speed",
            "0.05",
            "--merge",
            "ordered",
        ],
        &[
            "starting research-",
            "subtopic 3: summarised",
            "# How rivers shape cities",
            "stored in",
            "tree research-",
        ],
    );
    // A section per sub-question, each with its question, answer and
    // sources; no two answers alike.
    let report = report_of(&out);
    let sections: Vec<&str> = report.split("\n## ").skip(1).collect();
    assert_eq!(sections.len(), 4, "{report}");
    for (i, angle) in ["History", "Economics", "Ecology", "Flood risk"]
        .iter()
        .enumerate()
    {
        let section = sections[i];
        assert!(
            section.starts_with(&format!("{}. {angle}\n", i + 1)),
            "{section}"
        );
        assert!(section.contains("*How rivers shape cities: "), "{section}");
        assert!(section.contains("\nSources: [1] "), "{section}");
    }
    let answers: std::collections::HashSet<&str> = sections
        .iter()
        .map(|s| s.split("\n\n").nth(2).unwrap_or_default())
        .collect();
    assert_eq!(answers.len(), 4, "{report}");
    // Run again: it is complete and says so without redoing anything.
    run_with(
        "deep_research",
        &["--db", db_arg, "--subtopics", "4"],
        &["is already complete"],
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn deep_research_resumes_after_a_cancel_with_the_same_report() {
    let uninterrupted = temp_db("uninterrupted");
    let full = run_with(
        "deep_research",
        &[
            "--db",
            uninterrupted.to_str().unwrap(),
            "--subtopics",
            "5",
            "--speed",
            "0.05",
        ],
        &["# How rivers shape cities"],
    );
    let db = temp_db("resume");
    let db_arg = db.to_str().unwrap();
    let cancelled_out = run_with(
        "deep_research",
        &[
            "--db",
            db_arg,
            "--subtopics",
            "5",
            "--speed",
            "0.05",
            "--cancel-after",
            "100",
        ],
        &[
            "cancelled by --cancel-after",
            "run the same command again to resume",
        ],
    );
    // At 100 ms no sub-question can have finished (its waits alone take
    // longer): every bar that started says it was cancelled.
    let cancelled = cancelled_out
        .lines()
        .filter(|l| l.contains(": cancelled at "))
        .count();
    let started = (0..5)
        .filter(|k| cancelled_out.contains(&format!("subtopic {k}: search done")))
        .count();
    assert!(cancelled >= started && cancelled > 0, "{cancelled_out}");
    let resumed = run_with(
        "deep_research",
        &["--db", db_arg, "--subtopics", "5", "--speed", "0.05"],
        &["resuming research-"],
    );
    // Each bar starts from what was recorded: a finished search is 4
    // tokens and its node completion.
    for k in 0..5 {
        if cancelled_out.contains(&format!("subtopic {k}: search done")) {
            let line = resumed
                .lines()
                .find(|l| {
                    l.starts_with(&format!("subtopic {k}: "))
                        && l.contains("items already recorded")
                })
                .unwrap_or_else(|| panic!("subtopic {k} resumed from nothing: {resumed}"));
            let items: u64 = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert!(items >= 5, "{line}");
        }
    }
    assert_eq!(report_of(&resumed), report_of(&full), "{resumed}");
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
    let _ = std::fs::remove_dir_all(uninterrupted.parent().unwrap());
}

#[test]
fn document_pipeline() {
    let out = run_with(
        "document_pipeline",
        &[],
        &[
            "n4[[\"report · zip\"]]",
            "document pipeline: 160 chunks from 20 documents",
            "doc 0: 6 chunks, 54 words, score 6",
            "doc 19: 10 chunks, 87 words, score 8",
            "nothing dropped: true",
        ],
    );
    // At least one live line of per-node rates before the end.
    assert!(
        out.lines()
            .any(|l| l.starts_with('[') && l.contains("agent ") && l.contains("/s")),
        "{out}"
    );
}

#[test]
fn ui_live() {
    run_with(
        "ui_live",
        &["--exit-when-done"],
        &["the web view of this run: http://127.0.0.1:", "run ended:"],
    );
}

/// `GET path` from the server at `addr` (`127.0.0.1:PORT`): the status line
/// and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("the view listens");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

#[test]
fn deep_research_serves_the_view_of_its_live_run() {
    use std::io::BufRead;
    let db = temp_db("ui");
    let mut child = Command::new(example("deep_research"))
        .args([
            "--db",
            db.to_str().unwrap(),
            "--subtopics",
            "3",
            "--speed",
            "0.5",
        ])
        .args(["--ui", "--exit-when-done"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let pid = child.id();
    // Kill it if it has not exited within two minutes, so the test ends.
    let (exited, exit_seen) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if exit_seen.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no address printed: {seen:?}"))
            .unwrap();
        if let Some(url) = line.strip_prefix("the web view of this run: ") {
            break url.to_owned();
        }
        seen.push(line);
    };
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("not a view address: {url}"));
    assert!(url.ends_with("/#/live/deep-research"), "{url}");
    // While the run goes on, the view serves it, with its controls.
    let (status, body) = http_get(&addr, "/api/live/deep-research");
    assert!(status.contains(" 200 "), "{status} {body}");
    assert!(body.contains("\"name\":\"deep-research\""), "{body}");
    assert!(body.contains("\"control\":true"), "{body}");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    let _ = exited.send(());
    watchdog.join().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("# How rivers shape cities")),
        "{rest:?}"
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}
