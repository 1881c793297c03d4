//! The poke routes and the built-in pokes take what they say: `trigger` and
//! `check-queue` no parameters, `process-batch` `batchSize` and `filter`. A field
//! they do not take is refused (400 `invalid_parameters`, naming it and what the
//! action takes), by the action route and the poke routes alike: the poke routes
//! dropped a body without a word, and `actions/trigger` a field.

use koan_test_support::http::{Api, call, error_message, loopback, serve_greeter_and_cleanup};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn refused(api: &Api, path: &str, body: Value, said: &[&str]) -> anyhow::Result<()> {
    let (status, answer) = call(api.post(path).json(&body)).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
    let message = error_message(&answer, "invalid_parameters")?;
    for part in said {
        assert!(message.contains(part), "{path}: `{part}` not in {message}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_a_poke_does_not_take_is_refused_naming_it() -> anyhow::Result<()> {
    let (api, seen) = serve_greeter_and_cleanup(loopback()).await?;
    for action in ["trigger", "check-queue"] {
        let takes = [
            format!("`{action}`"),
            "`force`".into(),
            "takes no parameters".into(),
        ];
        let takes: Vec<&str> = takes.iter().map(String::as_str).collect();
        for path in [
            format!("/api/services/Cleanup/{action}"),
            format!("/api/services/Cleanup/actions/{action}?wait=false"),
        ] {
            refused(&api, &path, json!({ "force": true }), &takes).await?;
        }
        // Without a body, or with `{}`, it is taken.
        let (status, body) = call(api.post(&format!("/api/services/Cleanup/{action}"))).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let (status, body) = call(
            api.post(&format!("/api/services/Cleanup/{action}"))
                .json(&json!({})),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    refused(
        &api,
        "/api/services/Cleanup/process-batch",
        json!({ "size": 5 }),
        &["`size`", "batchSize", "filter"],
    )
    .await?;
    drop(seen);
    api.stop().await
}
