//! Helpers shared by tributary's examples: deterministic simulated latency
//! (seeded, no network, no model) and a tiny HTTP/1.1 server and client on
//! 127.0.0.1 for the crawler.

use std::time::Duration;

/// A small seeded pseudo-random generator (splitmix64): the same seed gives
/// the same latencies on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from a string (a task key, a topic).
    pub fn from_str_seed(seed: &str) -> Self {
        Rng(seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// A latency between `lo_ms` and `hi_ms`.
    pub fn latency(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }
}

pub mod chat;

pub mod http {
    //! Just enough HTTP/1.1 for the crawler example: a server of a few
    //! linked pages and a GET client, over tokio's TCP on 127.0.0.1.

    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    /// Serve `pages` (path -> HTML body) on an ephemeral port of 127.0.0.1
    /// until the returned handle is aborted or dropped with the runtime.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub async fn serve(
        pages: HashMap<String, String>,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pages = Arc::new(pages);
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let pages = Arc::clone(&pages);
                tokio::spawn(async move {
                    let _ = answer(socket, &pages).await;
                });
            }
        });
        Ok((addr, server))
    }

    async fn answer(socket: TcpStream, pages: &HashMap<String, String>) -> std::io::Result<()> {
        let mut reader = BufReader::new(socket);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).await?;
        // Skip the headers.
        let mut line = String::new();
        while reader.read_line(&mut line).await? > 2 {
            line.clear();
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match pages.get(path) {
            Some(body) => ("200 OK", body.as_str()),
            None => ("404 Not Found", "not found"),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await
    }

    /// GET `path` from `addr`; the status code and the body.
    ///
    /// # Errors
    ///
    /// On connection or protocol errors.
    pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let mut socket = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await?;
        let mut raw = String::new();
        socket.read_to_string(&mut raw).await?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed response"))?;
        Ok((status, body.to_owned()))
    }

    /// The targets of the `href="..."` links in `html`.
    pub fn links(html: &str) -> Vec<String> {
        html.split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    }
}
