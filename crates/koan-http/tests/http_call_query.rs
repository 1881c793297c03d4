//! What an action call's query takes, said as it is taken: `wait` is `true` or
//! `false` (its refusal said so while `1`, `0`, `yes`, `no` and an empty value were
//! taken too).

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
