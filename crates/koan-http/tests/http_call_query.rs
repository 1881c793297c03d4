//! What an action call's query and headers take, said as it is taken: `wait` is
//! `true` or `false` (its refusal said so while `1`, `0`, `yes`, `no` and an empty
//! value were taken too); an empty `X-Correlation-Id` is refused.

use koan_test_support::http::{Api, call, error_message, loopback, serve_echo};
use reqwest::StatusCode;

async fn refused(api: &Api, query: &str) -> anyhow::Result<String> {
    let (status, body) = call(
        api.post(&format!("/api/services/Echo/actions/echo?{query}"))
            .json(&"hi"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    error_message(&body, "invalid_parameters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_true_or_false_as_its_refusal_says() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    for v in ["1", "0", "yes", "no", "", "TRUE", "on"] {
        let said = refused(&api, &format!("wait={v}")).await?;
        assert!(
            said.contains("`wait` must be `true` or `false`") && said.contains(&format!("`{v}`")),
            "wait={v}: {said}"
        );
    }
    for (v, code) in [("true", StatusCode::OK), ("false", StatusCode::ACCEPTED)] {
        let (status, body) = call(
            api.post(&format!("/api/services/Echo/actions/echo?wait={v}"))
                .json(&"hi"),
        )
        .await?;
        assert_eq!(status, code, "wait={v}: {body}");
    }
    api.stop().await
}

/// An `X-Correlation-Id:` sent empty, on the wire as written, is refused naming the
/// header, on the action route and on a poke route: not replaced by a made id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_correlation_id_header_is_refused() -> anyhow::Result<()> {
    use koan_test_support::raw::{exchange, head};
    let api = serve_echo(loopback()).await?;
    for path in [
        "/api/services/Echo/actions/echo",
        "/api/services/Echo/actions/echo?wait=false",
    ] {
        let mut request = head(
            "POST",
            path,
            &[
                "X-Correlation-Id:",
                "Content-Type: application/json",
                "Content-Length: 4",
            ],
        )
        .into_bytes();
        request.extend_from_slice(b"\"hi\"");
        let answer = exchange(api.server_addr(), &request, koan_test_support::PATIENCE).await?;
        let body = answer.json()?;
        assert_eq!(answer.status, 400, "{path}: {body}");
        let said = error_message(&body, "invalid_parameters")?;
        assert!(said.contains("X-Correlation-Id"), "{path}: {said}");
    }
    let (status, body) = call(
        api.post("/api/services/Echo/actions/echo")
            .header("X-Correlation-Id", "")
            .json(&"hi"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    api.stop().await
}
