//! The JSON endpoints: recorded runs, live runs, controls.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::UiServer;
use super::guard::check_control_header;
use crate::error::UiError;
use crate::recorded::{self, RunFilter};

pub(super) async fn info(State(ui): State<UiServer>) -> axum::Json<Value> {
    let live: Vec<Value> = ui
        .live_names()
        .into_iter()
        .filter_map(|name| ui.live(&name).ok())
        .map(|run| {
            json!({
                "name": run.name(),
                "control": run.control_enabled(),
                "counts": run.counts(),
            })
        })
        .collect();
    let database = ui.recorded().is_ok();
    axum::Json(json!({ "database": database, "live": live }))
}

pub(super) async fn runs(
    State(ui): State<UiServer>,
    Query(filter): Query<RunFilter>,
) -> Result<axum::Json<Value>, UiError> {
    let recorded = ui.recorded()?;
    let list = recorded
        .read(move |r| recorded::run_list(r, &filter))
        .await?;
    Ok(axum::Json(list))
}

pub(super) async fn run_detail(
    State(ui): State<UiServer>,
    UrlPath(app_id): UrlPath<String>,
) -> Result<axum::Json<Value>, UiError> {
    let recorded = ui.recorded()?;
    let detail = recorded
        .read(move |r| recorded::run_detail(r, &app_id))
        .await?;
    Ok(axum::Json(detail))
}

#[derive(Debug, Deserialize)]
pub(super) struct AttemptQuery {
    attempt: Option<u32>,
}

pub(super) async fn step_detail(
    State(ui): State<UiServer>,
    UrlPath((app_id, seq)): UrlPath<(String, u64)>,
    Query(q): Query<AttemptQuery>,
) -> Result<axum::Json<Value>, UiError> {
    let recorded = ui.recorded()?;
    let detail = recorded
        .read(move |r| recorded::step_detail(r, &app_id, seq, q.attempt))
        .await?;
    Ok(axum::Json(detail))
}

pub(super) async fn live_snapshot(
    State(ui): State<UiServer>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, UiError> {
    let run = ui.live(&name)?;
    let update = run.update_since(0, None).map(|(update, _)| update);
    Ok(axum::Json(update).into_response())
}

pub(super) async fn lane_detail(
    State(ui): State<UiServer>,
    UrlPath((name, key)): UrlPath<(String, String)>,
) -> Result<Response, UiError> {
    let run = ui.live(&name)?;
    Ok(axum::Json(run.lane_detail(&key)?).into_response())
}

pub(super) async fn run_command(
    State(ui): State<UiServer>,
    UrlPath((name, command)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, UiError> {
    let run = ui.live(&name)?;
    run.check_control()?;
    check_control_header(&headers)?;
    run.command(&command)?;
    Ok(axum::Json(json!({ "ok": true })))
}

pub(super) async fn task_command(
    State(ui): State<UiServer>,
    UrlPath((name, key, command)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, UiError> {
    let run = ui.live(&name)?;
    run.check_control()?;
    check_control_header(&headers)?;
    run.task_command(&key, &command)?;
    Ok(axum::Json(json!({ "ok": true })))
}
