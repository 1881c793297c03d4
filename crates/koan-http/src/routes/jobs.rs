//! `/api/jobs…`: stored jobs, behind the token when one is set (their parameters and
//! results may be private).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use koan::{job::JobQuery, job::JobState};
use serde_json::json;

use crate::AppState;
use crate::body::NoBody;
use crate::error::ApiError;
use crate::query::{NoParams, Params};

use super::job_filters::{action_filter, own_spelling, unknown_service};

/// The longest id, service or action name a query may carry.
const MAX_NAME: usize = 200;

fn bounded<'a>(key: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.is_empty() || v.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!("query parameter `{key}` must have 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(v)
}

/// The job id of a route's path, within the bound of ids.
fn job_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() || id.len() > MAX_NAME {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "a job id has 1 to {MAX_NAME} bytes; the one in the path has {}",
                id.len()
            ),
        ));
    }
    Ok(id)
}

/// The query of `counts` and `retry-dead`: an optional `service`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceParam {
    service: Option<String>,
}

fn service_filter<'a>(
    host: &'a koan::HostHandle,
    query: &'a ServiceParam,
) -> Result<Option<&'a str>, ApiError> {
    query
        .service
        .as_deref()
        .map(|s| bounded("service", s).map(|s| own_spelling(host, s)))
        .transpose()
}

/// The query of `GET /api/jobs`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    state: Option<String>,
    service: Option<String>,
    action: Option<String>,
    correlation_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_list_query(q: &ListParams) -> Result<JobQuery, ApiError> {
    let name = |key: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        v.as_deref()
            .map(|v| bounded(key, v).map(str::to_owned))
            .transpose()
    };
    let mut out = JobQuery::default();
    if let Some(v) = &q.state {
        out.state = Some(JobState::parse(v).ok_or_else(|| {
            let all: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                "invalid_parameters",
                format!(
                    "query parameter `state` must be one of {}, not `{}`",
                    all.join(", "),
                    v.escape_debug()
                ),
            )
        })?);
    }
    out.service = name("service", &q.service)?;
    out.action = name("action", &q.action)?;
    out.correlation_id = name("correlation_id", &q.correlation_id)?;
    out.cursor = name("cursor", &q.cursor)?;
    out.limit = q
        .limit
        .as_deref()
        .map(|v| crate::query::limit("limit", v, 500))
        .transpose()?;
    Ok(out)
}

/// `GET /api/jobs?state=&service=&action=&correlation_id=&limit=&cursor=`: newest
/// first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Params(query): Params<ListParams>,
) -> Result<Response, ApiError> {
    let mut q = parse_list_query(&query)?;
    if let Some(cursor) = &q.cursor {
        check_cursor(&state.host, cursor).await?;
    }
    if let Some(service) = &q.service {
        q.service = Some(own_spelling(&state.host, service).to_owned());
    }
    let mut note = unknown_service(&state.host, q.service.as_deref()).await;
    if let Some(action) = q.action.take() {
        let (spelled, unknown) = action_filter(&state.host, q.service.as_deref(), &action).await;
        q.action = Some(spelled);
        // The service's own note first: an unknown service's actions are not known.
        note = note.or(unknown);
    }
    let mut page = state.host.jobs().list(q).await?;
    cut_to_bytes(&mut page, PAGE_BYTES);
    let Some(note) = note else {
        return Ok(Json(page).into_response());
    };
    match serde_json::to_value(&page) {
        Ok(mut body) => {
            body["note"] = json!(note);
            Ok(Json(body).into_response())
        }
        Err(_) => Ok(Json(page).into_response()),
    }
}

/// Refuses a `cursor` that is no `next_cursor` a page gave: a job id written
/// otherwise (upper case: an empty last page, the rest lost) or one that names
/// no job (`bogus`: page 1 again, a client looping for ever; found by a probe).
/// A cursor is a job's id; a job forgotten since its page was read still has a
/// UUID's form, and is taken.
async fn check_cursor(host: &koan::HostHandle, cursor: &str) -> Result<(), ApiError> {
    let refused = |why: String| {
        ApiError::bad_request(
            "invalid_parameters",
            format!(
                "query parameter `cursor` must be the `next_cursor` of a previous page, as given; {why}"
            ),
        )
    };
    match koan::job::job_id_as_written(cursor) {
        Some(written) if written == cursor => Ok(()),
        Some(written) => Err(refused(format!(
            "`{}` is that job id written otherwise: `{written}`",
            cursor.escape_debug()
        ))),
        None => match host.jobs().get(cursor).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == koan::error::ErrorKind::UnknownJob => {
                Err(refused(format!("`{}` names no job", cursor.escape_debug())))
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// The most bytes of jobs one page of the listing holds: past it, the page ends
/// early and its `next_cursor` goes on from there. 500 jobs of 64 KiB parameters
/// made one page 33 MB, and 16 such listings at once took a host from 33 MB to
/// 1 GB (seen in a probe).
const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Ends `page` after the job that takes it past `cap` bytes (at least one job is
/// kept), with a cursor from there: a job id is the cursor that lists the jobs
/// older than it.
fn cut_to_bytes(page: &mut koan::job::JobPage, cap: usize) {
    let mut bytes = 0;
    let Some(end) = page.jobs.iter().position(|job| {
        bytes += serde_json::to_vec(job).map_or(0, |v| v.len());
        bytes > cap
    }) else {
        return;
    };
    if end + 1 < page.jobs.len() {
        page.jobs.truncate(end + 1);
        page.next_cursor = page.jobs.last().map(|j| j.id.clone());
    }
}

/// `GET /api/jobs/counts?service=`: how many jobs are in each state.
pub(crate) async fn counts(
    State(state): State<AppState>,
    Params(query): Params<ServiceParam>,
) -> Result<Response, ApiError> {
    let service = service_filter(&state.host, &query)?;
    let counts = state.host.jobs().counts(service).await?;
    let by_state: serde_json::Map<String, serde_json::Value> = counts
        .by_state
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    let mut body = json!({
        "durable": state.host.jobs().is_durable(),
        "store": state.host.jobs().store_name(),
        "counts": by_state,
    });
    if counts.partial {
        body["partial"] = json!(true);
    }
    if counts.stale {
        body["stale"] = json!(true);
    }
    if let Some(note) = unknown_service(&state.host, service).await {
        body["note"] = json!(note);
    }
    Ok(Json(body).into_response())
}

/// `GET /api/jobs/{id}` (also `/api/actions/{id}`, the older name).
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().get(job_id(&id)?).await?).into_response())
}

/// `POST /api/jobs/{id}/retry`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
    NoBody: NoBody,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().retry(job_id(&id)?).await?).into_response())
}

/// `POST /api/jobs/{id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
    NoBody: NoBody,
) -> Result<Response, ApiError> {
    Ok(Json(state.host.jobs().cancel(job_id(&id)?).await?).into_response())
}

/// `DELETE /api/jobs/{id}`: `204 No Content` with [`DELETED_JOB`] naming the job.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    state.host.jobs().delete(job_id(&id)?).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    // The id as it is, or (holding a control character no header carries) escaped:
    // the header is there either way.
    let named = HeaderValue::from_bytes(id.as_bytes())
        .or_else(|_| HeaderValue::from_bytes(id.escape_debug().to_string().as_bytes()));
    if let Ok(v) = named {
        r.headers_mut().insert(DELETED_JOB, v);
    }
    Ok(r)
}

/// The header of a delete's `204`, naming the job deleted: koan's mark on an answer
/// that has no body (koanctl took any bare 204, a server answering one to
/// everything included, for a deletion; found by a probe).
const DELETED_JOB: HeaderName = HeaderName::from_static("koan-job-id");

/// `POST /api/jobs/retry-dead?service=`: every dead job runs again.
pub(crate) async fn retry_dead(
    State(state): State<AppState>,
    Params(query): Params<ServiceParam>,
    NoBody: NoBody,
) -> Result<Response, ApiError> {
    let service = service_filter(&state.host, &query)?;
    let n = state.host.jobs().retry_all_dead(service).await?;
    let mut body = json!({ "retried": n });
    if let Some(note) = unknown_service(&state.host, service).await {
        body["note"] = json!(note);
    }
    Ok(Json(body).into_response())
}
