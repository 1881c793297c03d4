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

/// An `at` whose `+` was not encoded arrives with a space (a query's `+` is one):
/// its refusal says to write `%2B`, not only "invalid characters".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencoded_plus_in_at_is_refused_saying_to_write_2b() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    let said = refused(&api, "wait=false&at=2026-12-08T10:00:00+01:00").await?;
    assert!(said.contains("%2B"), "{said}");
    api.stop().await
}

/// An `at` long past is refused naming it and the server's now: `1970-01-01` ran
/// at once without a word. A time just past (a clock a little behind) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_long_past_is_refused_naming_it_and_now() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    let said = refused(&api, "wait=false&at=1970-01-01T00:00:00Z").await?;
    assert!(
        said.contains("1970-01-01T00:00:00") && said.contains("now") && said.contains("minute"),
        "{said}"
    );
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = call(
        api.post(&format!(
            "/api/services/Echo/actions/echo?wait=false&at={now}"
        ))
        .json(&"hi"),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    api.stop().await
}
