//! A client of an OpenAI-compatible chat-completions endpoint (llama.cpp's
//! server, Ollama, vLLM, a hosted API), streaming the answer's text as it
//! comes: `POST {base}/chat/completions` with `"stream": true`, read as
//! server-sent events (`data: {...}` lines, `data: [DONE]` at the end). A
//! server that answers with one JSON body instead is read too.

use std::collections::VecDeque;
use std::pin::Pin;

use anyhow::Context as _;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

/// The endpoint, the model asked for and the key, if any.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
}

/// One answer being streamed: [`next`](Self::next) gives its text piece by
/// piece.
pub struct ChatStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    /// Bytes of a line not complete yet.
    partial: Vec<u8>,
    pieces: VecDeque<String>,
    /// A body that is one JSON document, not events.
    whole: Option<Vec<u8>>,
    done: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// A client of the endpoint at `base` (`http://127.0.0.1:8080/v1`, or
    /// the full `.../chat/completions` URL) asking for `model`, with the
    /// bearer `key` when given.
    ///
    /// # Errors
    ///
    /// When `base` is not an `http://` or `https://` URL.
    pub fn new(base: &str, model: &str, key: Option<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "the model URL must start with http:// or https://, not `{base}`"
        );
        let base = base.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") {
            base.to_owned()
        } else {
            format!("{base}/chat/completions")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(ChatClient {
            http,
            url,
            model: model.to_owned(),
            key,
        })
    }

    /// The URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Ask with a `system` and a `user` message; the answer streams.
    ///
    /// # Errors
    ///
    /// When the endpoint cannot be reached or answers with an error status
    /// (its body's first 300 characters are in the message).
    pub async fn ask(&self, system: &str, user: &str) -> anyhow::Result<ChatStream> {
        let body = json!({
            "model": self.model,
            "stream": true,
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": user },
            ],
        });
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the model at {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            anyhow::bail!("the model at {} answered {status}: {text}", self.url);
        }
        let events = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        Ok(ChatStream {
            body: Box::pin(response.bytes_stream().map(|b| b.map(|b| b.to_vec()))),
            partial: Vec::new(),
            pieces: VecDeque::new(),
            whole: (!events).then(Vec::new),
            done: false,
        })
    }
}

/// The text of a streamed chunk (`choices[0].delta.content`) or of a whole
/// answer (`choices[0].message.content`).
fn content(value: &Value) -> Option<&str> {
    let choice = value.get("choices")?.get(0)?;
    choice
        .get("delta")
        .or_else(|| choice.get("message"))?
        .get("content")?
        .as_str()
}

impl ChatStream {
    /// The answer's next piece of text; `None` once it has ended.
    ///
    /// # Errors
    ///
    /// When the connection fails or an event is not the JSON of a chunk.
    pub async fn next(&mut self) -> Option<anyhow::Result<String>> {
        loop {
            if let Some(piece) = self.pieces.pop_front() {
                return Some(Ok(piece));
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => match &mut self.whole {
                    Some(whole) => whole.extend_from_slice(&bytes),
                    None => {
                        self.partial.extend_from_slice(&bytes);
                        if let Err(e) = self.take_lines() {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(
                        anyhow::Error::new(e).context("the model's answer broke off")
                    ));
                }
                None => {
                    self.done = true;
                    if let Some(whole) = self.whole.take() {
                        let value: Value = match serde_json::from_slice(&whole) {
                            Ok(v) => v,
                            Err(e) => {
                                return Some(Err(
                                    anyhow::Error::new(e).context("the model's answer is not JSON")
                                ));
                            }
                        };
                        if let Some(text) = content(&value).filter(|t| !t.is_empty()) {
                            self.pieces.push_back(text.to_owned());
                        }
                    }
                }
            }
        }
    }

    /// Read the complete lines of events received so far.
    fn take_lines(&mut self) -> anyhow::Result<()> {
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // blank lines, comments, `event:` and `id:` fields
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                self.done = true;
                return Ok(());
            }
            let value: Value = serde_json::from_str(data)
                .with_context(|| format!("the model sent an event that is not JSON: {data}"))?;
            if let Some(text) = content(&value).filter(|t| !t.is_empty()) {
                self.pieces.push_back(text.to_owned());
            }
        }
        Ok(())
    }
}
