//! `POST /api/services/{name}/restart`: starts again a background service of this
//! host that its supervisor gave up on (`failed`), as
//! [`HostHandle::restart_service`](koan::HostHandle::restart_service) does; before
//! it, only a restart of the host brought one back.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::body::NoBody;
use crate::error::ApiError;
use crate::query::{NoParams, Params};

pub(crate) async fn restart(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(NoParams {}): Params<NoParams>,
    NoBody: NoBody,
) -> Result<Response, ApiError> {
    state.host.restart_service(&name)?;
    let service = state.host.canonical_name(&name).unwrap_or(&name).to_owned();
    let body = json!({
        "service": service,
        "message": format!("Service '{service}' restarted: its run was started again (its status says how it goes)"),
    });
    Ok(Json(body).into_response())
}
