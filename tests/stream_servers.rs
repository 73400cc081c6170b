//! Servers of a test's own (Redis, NATS) on a free loopback port, for
//! fault injection: killed, restarted, paused and resumed by PID. The shared
//! servers are never touched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::stream_support::TempDir;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Waits (bounded) until something accepts connections on `port`.
async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no server came up on port {port}");
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process of this test's own.
#[derive(Debug)]
pub(crate) struct OwnServer {
    program: &'static str,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl OwnServer {
    /// A redis-server on a free port, its files in a temp dir; with
    /// `appendonly`, every acknowledged write is in its append-only file
    /// (fsynced before the reply).
    pub(crate) async fn redis(appendonly: bool) -> Self {
        let dir = TempDir::new();
        let port = free_port();
        let args = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            if appendonly { "yes" } else { "no" }.into(),
            // Every acknowledged write is on disk before the reply, so a
            // SIGKILL of the server loses nothing acknowledged.
            "--appendfsync".into(),
            "always".into(),
            "--dir".into(),
            dir.0.display().to_string(),
        ];
        Self::start("redis-server", args, port, dir).await
    }

    /// A nats-server with JetStream on a free port, its store in a temp dir.
    pub(crate) async fn nats() -> Self {
        let dir = TempDir::new();
        let port = free_port();
        let store: PathBuf = dir.0.join("js");
        let args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
        ];
        Self::start("nats-server", args, port, dir).await
    }

    async fn start(program: &'static str, args: Vec<String>, port: u16, dir: TempDir) -> Self {
        let mut server = Self {
            program,
            args,
            port,
            child: None,
            _dir: dir,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program));
        self.child = Some(child);
        wait_listening(self.port).await;
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The server's URL.
    pub(crate) fn url(&self) -> String {
        match self.program {
            "redis-server" => format!("redis://127.0.0.1:{}", self.port),
            _ => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// SIGKILL: the server dies at once, without saving anything more.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same files.
    pub(crate) async fn start_again(&mut self) {
        assert!(self.child.is_none(), "kill the server first");
        self.spawn().await;
    }

    /// SIGSTOP: the server stops answering but keeps its connections.
    pub(crate) fn pause(&self) {
        assert!(signal(self.pid(), "STOP"), "cannot pause the server");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub(crate) fn resume(&self) {
        assert!(signal(self.pid(), "CONT"), "cannot resume the server");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process must be resumed to die of SIGKILL promptly.
            signal(child.id(), "CONT");
        }
        self.kill();
    }
}
