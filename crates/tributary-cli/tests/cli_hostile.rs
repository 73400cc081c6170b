//! The command on databases that are hostile, damaged or not its own:
//! escape sequences in every text field, extreme timestamps, a file the
//! user may only read, foreign and truncated files, a bad row.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use tributary_core::{Application, Graph, Hook, ParentPointer, RunOptions, State, action, default};
use tributary_sqlite::{Database, SqliteTracker};

/// Clears the screen, sets the window title, rings the bell, a C1 CSI and
/// a right-to-left override: none of it may reach a terminal raw.
const EVIL: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}";

fn tributary(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("TRIBUTARY_DB")
        .output()
        .unwrap()
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A root `EVIL-root` with an action named after `EVIL` that fails with
/// `EVIL` in its error, and a child spawned by it with `EVIL` in its id,
/// its task key, its result and its state.
async fn evil_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("evil.db");
    let db = Database::open(&path).await.unwrap();
    let tracker = SqliteTracker::new(db.clone());
    let evil_action = format!("act{EVIL}");
    let graph = Graph::builder()
        .action(
            action("start")
                .writes(["x"])
                .run(
                    |s: State, _, _| async move { Ok((json!({ "said": EVIL }), s.set("x", EVIL))) },
                ),
        )
        .action(
            action(evil_action.as_str())
                .run(|_: State, _, _| async move { Err(format!("boom{EVIL}").into()) }),
        )
        .transition("start", evil_action.as_str(), default())
        .entrypoint("start")
        .build()
        .unwrap();
    let root_id = format!("root{EVIL}");
    let mut root = Application::builder(graph.clone())
        .app_id(root_id.as_str())
        .partition_key(EVIL)
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    assert!(root.run(RunOptions::new()).await.is_err());
    let mut child = Application::builder(graph)
        .app_id(format!("child{EVIL}"))
        .spawning_parent(ParentPointer {
            app_id: root_id,
            sequence_id: 1,
            action: Some(evil_action),
            partition_key: None,
        })
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    tracker.on_task_spawn(child.info(), &format!("key{EVIL}"));
    let _ = child.run(RunOptions::new()).await;
    db.close().await.unwrap();
    path
}

#[tokio::test]
async fn no_output_of_a_database_with_escape_sequences_holds_a_control_character() {
    let dir = tempfile::tempdir().unwrap();
    let db = evil_fixture(dir.path()).await;
    let root = format!("root{EVIL}");
    let child = format!("child{EVIL}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["runs"],
        vec!["runs", "--all"],
        vec!["show", &root],
        vec!["show", &child],
        vec!["tree", &root],
        vec!["export", &root, "--format", "mermaid"],
        vec!["export", &root, "--format", "dot"],
        vec!["export", &child, "--format", "dot"],
    ];
    for args in &commands {
        for json in [false, true] {
            let mut args = args.clone();
            if json {
                args.push("--json");
            }
            let text = ok_stdout(&tributary(&db, &args));
            assert!(
                !text.chars().any(unsafe_char),
                "{args:?} printed a control character: {text:?}"
            );
            if json {
                // Escaped, not lost: the JSON decodes to the stored text.
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(v.to_string().contains("\\u001b[2J"), "{args:?}");
            } else {
                assert!(text.contains("\\u{1b}[2J"), "{args:?}: {text}");
            }
        }
    }
    // The child is shown by its task key, escaped.
    let tree = ok_stdout(&tributary(&db, &["tree", &root]));
    assert!(tree.contains("key\\u{1b}[2J"), "{tree}");
}

#[tokio::test]
async fn extreme_timestamps_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let db = evil_fixture(dir.path()).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "UPDATE steps SET started_at = {min}, ended_at = {max} WHERE sequence_id = 0;
         UPDATE steps SET started_at = {max}, ended_at = {min} WHERE sequence_id = 1;
         UPDATE apps SET created_at = {min}, updated_at = {max};",
        min = i64::MIN,
        max = i64::MAX
    ))
    .unwrap();
    drop(conn);
    let root = format!("root{EVIL}");
    for args in [
        vec!["runs"],
        vec!["runs", "--all", "--json"],
        vec!["show", &root],
        vec!["show", &root, "--json"],
        vec!["tree", &root],
    ] {
        let text = ok_stdout(&tributary(&db, &args));
        assert!(!text.is_empty(), "{args:?}");
    }
    let shown = ok_stdout(&tributary(&db, &["show", &root]));
    assert!(shown.contains("(invalid time"), "{shown}");
}

#[tokio::test]
async fn a_database_the_user_may_only_read_is_listed_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = evil_fixture(dir.path()).await;
    let before = std::fs::read(&db).unwrap();
    // A file of another user, 0644, in a directory the reader may not
    // write: as root, the command runs as `nobody`; otherwise the file and
    // its directory lose their write bits.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir_mode = if is_root { 0o755 } else { 0o555 };
    if !is_root {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
    // `nobody` may not reach the build directory (a checkout in a 0700
    // directory): as root, run a copy of the command from a directory it
    // can enter.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = if is_root {
        let copy = bin_dir.path().join("tributary");
        std::fs::copy(env!("CARGO_BIN_EXE_tributary"), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    } else {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_tributary"))
    };
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--db")
            .arg(&db)
            .args(args)
            .env_remove("TRIBUTARY_DB");
        if is_root {
            cmd.uid(65534).gid(65534);
        }
        cmd.output().unwrap()
    };
    let listed = ok_stdout(&run(&["runs", "--all"]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let root = format!("root{EVIL}");
    ok_stdout(&run(&["show", &root]));
    ok_stdout(&run(&["tree", &root]));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Nothing was written, not even a log or shared-memory file.
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["evil.db"]);
}

#[tokio::test]
async fn foreign_and_truncated_files_get_a_clear_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    // Another application's database: tables, no tributary header.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .unwrap();
    let err = one_line_error(&tributary(&foreign, &["runs"]));
    assert!(err.contains("of another application"), "{err}");

    // A tributary database cut short, at several lengths.
    let good = evil_fixture(dir.path()).await;
    let bytes = std::fs::read(&good).unwrap();
    for len in [50, 100, 1024, bytes.len() / 2] {
        let cut = dir.path().join(format!("cut-{len}.db"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = one_line_error(&tributary(&cut, &["runs"]));
        assert!(!err.contains("no tributary data yet"), "{len} bytes: {err}");
        assert!(
            err.contains("not a SQLite database") || err.contains("corrupt"),
            "{len} bytes: {err}"
        );
    }
}

#[tokio::test]
async fn one_bad_row_is_shown_as_bad_and_the_others_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let db = evil_fixture(dir.path()).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO apps (app_id, status, created_at, updated_at)
             VALUES ('broken', 'no-such-status', 0, 0);
         INSERT INTO apps (app_id, status, created_at, updated_at, task_path)
             VALUES ('bad-path', 'running', 1, 1, 'not json');
         INSERT INTO apps (app_id, status, created_at, updated_at)
             VALUES ('odd-step', 'completed', 2, 2);
         INSERT INTO steps (app_id, sequence_id, attempt, action, status, started_at)
             VALUES ('odd-step', 0, 0, 'work', 'completed', 2),
                    ('odd-step', 1, 0, 'work', 'exploded', 3);",
    )
    .unwrap();
    drop(conn);
    let listed = ok_stdout(&tributary(&db, &["runs", "--all"]));
    println!("{listed}");
    assert!(listed.contains("root\\u{1b}[2J"), "{listed}");
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row {id}: {listed}"))
            .to_owned()
    };
    assert!(line("broken").contains("unreadable"));
    assert!(line("bad-path").contains("unreadable"));
    assert!(listed.contains("unreadable row broken: "), "{listed}");
    let json: Value =
        serde_json::from_str(&ok_stdout(&tributary(&db, &["runs", "--all", "--json"]))).unwrap();
    let broken = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app_id"] == "broken")
        .unwrap();
    assert_eq!(broken["status"], "unreadable");
    assert!(
        broken["problem"]
            .as_str()
            .unwrap()
            .contains("no-such-status")
    );

    // A bad step row does not hide the run's other steps.
    let shown = ok_stdout(&tributary(&db, &["show", "odd-step"]));
    let steps: Vec<Vec<&str>> = shown
        .lines()
        .skip_while(|l| !l.starts_with("SEQ"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(steps[0][..4], ["0", "0", "work", "completed"], "{shown}");
    assert_eq!(steps[1][..4], ["1", "0", "work", "unreadable"], "{shown}");
    assert!(shown.contains("exploded"), "{shown}");
    ok_stdout(&tributary(&db, &["export", "odd-step"]));
}

/// `process` with its pid replaced by `pid`, beyond any pid the system
/// hands out: a process of this host that is gone.
fn dead(process: &str, pid: u32) -> String {
    let mut parts: Vec<&str> = process.rsplitn(3, '/').collect();
    parts.reverse();
    format!("{}/{pid}/{}", parts[0], parts[2])
}

#[tokio::test]
async fn a_run_whose_process_died_reads_as_interrupted_and_its_resume_as_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Database::open(&path).await.unwrap();
    let tracker = SqliteTracker::new(db.clone());
    let graph = Graph::builder()
        .action(action("fetch").run(|s: State, _, _| async move { Ok((json!({}), s)) }))
        .action(action("parse").run(|s: State, _, _| async move { Ok((json!({}), s)) }))
        .transition("fetch", "parse", default())
        .entrypoint("fetch")
        .build()
        .unwrap();
    for id in ["job", "stuck"] {
        Application::builder(graph.clone())
            .app_id(id)
            .hook(tracker.clone())
            .build()
            .await
            .unwrap()
            .run(RunOptions::new())
            .await
            .unwrap();
    }
    db.close().await.unwrap();
    // As if `job`'s first step ran in a process that died 5 s before this
    // one resumed it, and `stuck` was left running by a process that died.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let me: String = conn
        .query_row("SELECT process FROM steps LIMIT 1", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "UPDATE steps SET process = ?1, started_at = started_at - 5000000,
             ended_at = ended_at - 5000000
         WHERE app_id = 'job' AND sequence_id = 0",
        [dead(&me, 4_000_000_001)],
    )
    .unwrap();
    conn.execute(
        "UPDATE apps SET status = 'running', process = ?1 WHERE app_id = 'stuck'",
        [dead(&me, 4_000_000_002)],
    )
    .unwrap();
    conn.execute(
        "UPDATE steps SET process = ?1,
             status = IIF(sequence_id = 1, 'running', status),
             ended_at = IIF(sequence_id = 1, NULL, ended_at)
         WHERE app_id = 'stuck'",
        [dead(&me, 4_000_000_002)],
    )
    .unwrap();
    drop(conn);

    let listed = ok_stdout(&tributary(&path, &["runs"]));
    let row = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap()
            .to_owned()
    };
    assert!(row("stuck").contains(" interrupted "), "{listed}");
    assert!(row("job").contains("while no process ran"), "{listed}");
    let shown = ok_stdout(&tributary(&path, &["show", "job"]));
    assert!(shown.contains("(resumed 1×)"), "{shown}");
    assert!(!shown.contains("retry"), "{shown}");
    assert!(shown.contains("no process"), "{shown}");
    assert!(shown.contains("resumed; "), "{shown}");
    let stuck = ok_stdout(&tributary(&path, &["show", "stuck"]));
    assert!(stuck.contains("interrupted"), "{stuck}");
    let json: Value =
        serde_json::from_str(&ok_stdout(&tributary(&path, &["show", "job", "--json"]))).unwrap();
    assert_eq!(json["run"]["resumes"], 1);
    assert_eq!(json["run"]["retries"], 0);
    let gap = &json["run"]["gaps"][0];
    assert!(gap["to"].as_i64().unwrap() - gap["from"].as_i64().unwrap() >= 4_900_000);
}
