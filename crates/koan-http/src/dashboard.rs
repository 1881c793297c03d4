//! The dashboard: one embedded page, no build step, sent with a Content Security
//! Policy that allows its one inline style and its one inline script (by hash) and
//! requests to its own origin only, and with headers that keep it out of frames and
//! out of content sniffing.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../assets/dashboard.html");

/// The policy. The hashes are those of the page's `<style>` and `<script>` contents;
/// a unit test recomputes them, so an edit of the page that forgets them fails.
const CSP: &str = concat!(
    "default-src 'none'; ",
    "script-src 'sha256-7paOreZygIotKnJ77pEbJS1LBpOoQS5SOL7FEVtCjvY='; ",
    "style-src 'sha256-Js8vLjL0FkjqjxfW1W27Q2BDl7L/b/+HyU0t4p68q0U='; ",
    "connect-src 'self'; img-src 'self' data:; ",
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
);

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::Digest;

    use super::{CSP, PAGE};

    fn inline(tag: &str) -> Vec<&'static str> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        PAGE.split(open.as_str())
            .skip(1)
            .filter_map(|rest| rest.split(close.as_str()).next())
            .collect()
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        for tag in ["style", "script"] {
            let blocks = inline(tag);
            assert_eq!(blocks.len(), 1, "one inline <{tag}>");
            for block in blocks {
                let hash = base64::engine::general_purpose::STANDARD
                    .encode(sha2::Sha256::digest(block.as_bytes()));
                assert!(
                    CSP.contains(&format!("'sha256-{hash}'")),
                    "the CSP lacks the hash of the <{tag}> block: 'sha256-{hash}'"
                );
            }
        }
        // No inline handlers or style attributes, which hashes would not cover.
        assert!(!PAGE.contains(" style=\""), "a style attribute");
        assert!(!PAGE.contains(" onclick=\""), "an inline handler");
    }
}
