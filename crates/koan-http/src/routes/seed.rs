//! The poke routes: `POST /api/services/{name}/trigger`, `/check-queue` and
//! `/process-batch`. Each reaches the action the service declares under that name
//! (matched regardless of case and separators: `ProcessBatch`, `process_batch`), or
//! the built-in poke of a periodic service. They hand the work over and answer at
//! once — as a stored job, with a `message` saying what was started — unless
//! `wait=true` asks for the outcome: a caller pokes a service, it does not wait on it.
//! A built-in poke handed over while one of the same waits to run joins it
//! (`coalesce.rs`), as pokes made during a run do. A body is the action's
//! parameters on each route (the built-in `trigger` and `check-queue` refuse any;
//! these two routes dropped one without a word).
//! (The module keeps its name from the routes' origin: see `docs/seed-parity.md`.)

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;

use super::services::{CallParams, run_action};
use crate::AppState;
use crate::error::ApiError;
use crate::query::Params;

/// Which poke route, the names a service may declare for it, and the `message` of
/// its answer.
struct Route {
    builtin: &'static str,
    declared: &'static [&'static str],
    message: &'static str,
}

const TRIGGER: Route = Route {
    builtin: koan::well_known::actions::TRIGGER,
    declared: &["trigger", "trigger-now", "on-trigger-now"],
    message: "triggered successfully",
};
const CHECK_QUEUE: Route = Route {
    builtin: koan::well_known::actions::CHECK_QUEUE,
    declared: &["check-queue"],
    message: "queue check triggered",
};
const PROCESS_BATCH: Route = Route {
    builtin: koan::well_known::actions::PROCESS_BATCH,
    declared: &["process-batch"],
    message: "batch processing triggered",
};

impl Route {
    /// Whether its built-in takes no parameters (all but `process-batch`).
    fn takes_nothing(&self) -> bool {
        self.builtin != PROCESS_BATCH.builtin
    }
}

fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The declared action the route reaches on `service`, if it declares one of the
/// route's names; `None`: the built-in (which the call refuses, with what the
/// service declares, when the service has none).
async fn action_for(state: &AppState, service: &str, route: &Route) -> Option<String> {
    if let Ok(info) = state.host.service(service).info().await {
        for candidate in route.declared {
            if let Some(a) = info
                .actions
                .iter()
                .find(|a| !a.builtin && norm(&a.name) == norm(candidate))
            {
                return Some(a.name.clone());
            }
        }
    }
    None
}

async fn poke(
    state: &AppState,
    headers: &HeaderMap,
    query: &CallParams,
    service: &str,
    route: &Route,
    params: Value,
) -> Result<Response, ApiError> {
    let action = action_for(state, service, route).await;
    // The built-in `trigger` and `check-queue` take no parameters: `{}` is stored
    // as none, so that it joins a poke sent without a body (it was stored beside
    // it, and ran again).
    let params = match params {
        Value::Object(m) if m.is_empty() && action.is_none() && route.takes_nothing() => {
            Value::Null
        }
        other => other,
    };
    // Joined only when nothing sets it apart: no parameter it would lose, no
    // id or key of its own, and a host not stopping (its refusal says so).
    if action.is_none()
        && query.plain_handover()
        && !super::call_headers::names_itself(headers)
        && !state.host.is_stopping()
        && let Some(joined) =
            super::coalesce::waiting_poke(state, service, route.builtin, &params).await
    {
        return Ok(super::coalesce::answer(&joined, route.message));
    }
    let action = action.unwrap_or_else(|| route.builtin.to_owned());
    run_action(
        state,
        headers,
        query,
        service,
        &action,
        params,
        Some(route.message),
    )
    .await
    .map_err(|e| {
        if e.kind() == "unknown_action" && route.builtin == koan::well_known::actions::TRIGGER {
            ApiError::new(
                e.status(),
                "unknown_action",
                format!(
                    "{} — to make `{}` triggerable, declare an action `trigger`",
                    e.message(),
                    service.escape_debug()
                ),
            )
        } else {
            e
        }
    })
}

pub(crate) async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(query): Params<CallParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let params = crate::body::json_params(&mut req)?;
    poke(&state, req.headers(), &query, &name, &TRIGGER, params).await
}

pub(crate) async fn check_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(query): Params<CallParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let params = crate::body::json_params(&mut req)?;
    poke(&state, req.headers(), &query, &name, &CHECK_QUEUE, params).await
}

pub(crate) async fn process_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(query): Params<CallParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let params = crate::body::json_params(&mut req)?;
    poke(&state, req.headers(), &query, &name, &PROCESS_BATCH, params).await
}
