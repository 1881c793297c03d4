//! The dashboard: one embedded page, no build step.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../assets/dashboard.html");

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
