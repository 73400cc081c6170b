//! The live event stream: server-sent events of what changed in a live
//! run, coalesced, resumable by `Last-Event-ID`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::UiServer;
use crate::error::UiError;
use crate::live::Pulse;

/// How often the live stream sends what changed, at most.
const TICK: Duration = Duration::from_millis(250);
/// Bytes per second one browser is sent at most; a bigger update waits
/// longer before the next.
const BYTES_PER_SECOND: u64 = 2_000_000;

#[derive(Debug, Deserialize)]
pub(super) struct SinceQuery {
    since: Option<u64>,
}

/// The shutdown the event streams of a router end at.
#[derive(Clone)]
pub(super) struct Closing(pub(super) CancellationToken);

/// The live stream of a run: an `update` event whenever something changed,
/// at most every [`TICK`]; its id is the run's version, so a reconnecting
/// browser (`Last-Event-ID`) gets what changed since.
pub(super) async fn live_events(
    State(ui): State<UiServer>,
    Extension(Closing(closed)): Extension<Closing>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<SinceQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let run = ui.live(&name)?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.since)
        .unwrap_or(0);
    let stream = futures_util::stream::unfold(
        (run, since, None::<Pulse>, closed, true),
        |(run, since, pulse, closed, first)| async move {
            let mut wait = if first { Duration::ZERO } else { TICK };
            loop {
                tokio::select! {
                    () = closed.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = TICK;
                let Some((update, pulse)) = run.update_since(since, pulse) else {
                    continue;
                };
                let version = update.version;
                let body = serde_json::to_string(&update).unwrap_or_else(|_| "{}".into());
                let pulse = Some(pulse);
                let event = Event::default()
                    .event("update")
                    .id(version.to_string())
                    .data(body.as_str());
                let extra = Duration::from_millis(body.len() as u64 * 1000 / BYTES_PER_SECOND);
                if extra > TICK {
                    tokio::time::sleep(extra - TICK).await;
                }
                return Some((Ok(event), (run, version, pulse, closed, false)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
