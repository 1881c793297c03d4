//! A built-in poke (`trigger`, `check-queue`, `process-batch`) handed over by the
//! poke routes while one of the same already waits to run joins it, as pokes made
//! during a run coalesce into one follow-up. Each was a stored job of its own, run
//! one after another: a burst of 200 triggers of a service whose tick takes 2 s was
//! 400 s of ticks, most of them dropped at the next stop (found by a probe).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use koan::job::{JobQuery, JobRecord, JobState};
use serde_json::json;

use super::call_headers;
use crate::AppState;

/// How many of the newest queued pokes are looked at for one that is due (a
/// delayed poke waits too, and joining it would push the run back).
const LOOKED_AT: usize = 16;

/// A queued job of the built-in poke `action` of `service`, with the same
/// `params`, that is due now: the poke a new one joins. `None` when there is
/// none, or the store cannot say (the poke is then stored as its own job).
pub(super) async fn waiting_poke(
    state: &AppState,
    service: &str,
    action: &str,
    params: &serde_json::Value,
) -> Option<JobRecord> {
    let service = state.host.canonical_name(service)?;
    let query = JobQuery {
        state: Some(JobState::Queued),
        service: Some(service.to_owned()),
        action: Some(action.to_owned()),
        limit: Some(LOOKED_AT),
        ..JobQuery::default()
    };
    let page = state.host.jobs().list(query).await.ok()?;
    // Its records' times are the host's clock's (a test's paused one too).
    let now = state.host.now();
    page.jobs
        .into_iter()
        .find(|j| j.run_at <= now && j.params == *params)
}

/// The answer to a poke that joined `joined`: what a stored poke's is, naming the
/// job it joined (`created` false, as for a repeated idempotency key).
pub(super) fn answer(joined: &JobRecord, message: &str) -> Response {
    let body = json!({
        "id": joined.id,
        "correlation_id": joined.correlation_id,
        "status_url": format!("/api/jobs/{}", joined.id),
        "created": false,
        "message": format!("Service '{}' {message}", joined.service),
        "coalesced": "a poke of the same waited to run already: this one joined it",
    });
    call_headers::with_correlation(
        (StatusCode::ACCEPTED, Json(body)).into_response(),
        &joined.correlation_id,
    )
}
