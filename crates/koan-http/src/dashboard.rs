//! The dashboard: one embedded page with its stylesheet and scripts, no build step.
//! Everything is sent from this origin under a Content Security Policy that allows
//! scripts and styles from here only (no inline code, so no hashes to keep in step)
//! and requests to this origin only, with headers that keep the page out of frames
//! and out of content sniffing.

use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;

const PAGE: &str = include_str!("../assets/dashboard.html");

/// The files under `/assets/`: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../assets/dashboard.css"),
    ),
    ("core.js", JS, include_str!("../assets/core.js")),
    ("charts.js", JS, include_str!("../assets/charts.js")),
    ("services.js", JS, include_str!("../assets/services.js")),
    ("jobs.js", JS, include_str!("../assets/jobs.js")),
    ("cluster.js", JS, include_str!("../assets/cluster.js")),
    ("main.js", JS, include_str!("../assets/main.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The policy: code and styles from this origin only.
const CSP: &str = concat!(
    "default-src 'none'; ",
    "script-src 'self'; ",
    "style-src 'self'; ",
    "connect-src 'self'; img-src 'self' data:; ",
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
);

const SECURITY: [(header::HeaderName, &str); 5] = [
    (header::CACHE_CONTROL, "no-cache"),
    (header::CONTENT_SECURITY_POLICY, CSP),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub(crate) async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        SECURITY,
        PAGE,
    )
}

/// `GET /assets/{file}`: one of the page's own files.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no dashboard asset `{}`", file.escape_debug()),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, *content_type)], SECURITY, *body))
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, PAGE};

    #[test]
    fn the_page_has_no_inline_code_and_loads_only_served_assets() {
        // Inline code would need a hash or 'unsafe-inline' in the policy.
        assert!(!PAGE.contains("<style"), "an inline <style>");
        assert!(!PAGE.contains(" style=\""), "a style attribute");
        assert!(!PAGE.contains(" onclick=\""), "an inline handler");
        for block in PAGE.split("<script").skip(1) {
            let tag = block.split('>').next().unwrap_or_default();
            assert!(tag.contains("src=\"/assets/"), "an inline <script>: {tag}");
            assert!(block.contains("></script>"), "a <script> with a body");
        }
        for part in PAGE.split("/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "the page loads `{name}`, which is not served"
            );
        }
        for (name, _, body) in ASSETS {
            assert!(!body.contains("eval("), "{name} uses eval");
            assert!(!body.contains("innerHTML"), "{name} writes HTML");
        }
    }
}
