//! A request refused for its token is logged: a warning naming the route, the peer
//! and why (a wrong token, none), never the token, at the 1st, 2nd, 4th, … refusal
//! of each kind so a flood does not flood the log. Before, a host refusing
//! requests said nothing: an operator could not see an attack or a misconfigured
//! client (found by a probe). The counts are the process's: this file holds one test.

use koan_test_support::http::{Api, call, loopback};
use koan_test_support::logs::Logs;
use koan_test_support::services::Echo;
use reqwest::StatusCode;

const TOKEN: &str = "s3cret-t0ken-for-the-log";
const GIVEN: &str = "wr0ng-given-t0ken";

#[tokio::test(flavor = "current_thread")]
async fn refused_tokens_are_logged_sparsely_without_their_value() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let host = koan::testing::host().service::<Echo>().build()?.start();
    let api = Api::serve(host, loopback().with_token(TOKEN)).await?;

    // Five wrong tokens: lines at the 1st, 2nd and 4th; the 4th on `/health`.
    for path in ["/api/jobs", "/api/jobs", "/api/services"] {
        let (status, _) = call(api.get(path).bearer_auth(GIVEN)).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = call(api.get("/health").bearer_auth(GIVEN)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(api.get("/api/jobs").bearer_auth(GIVEN)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = logs.lines_with("a wrong bearer token");
    assert_eq!(wrong.len(), 3, "{wrong:#?}");
    for (line, (route, times)) in
        wrong
            .iter()
            .zip([("/api/jobs", 1), ("/api/jobs", 2), ("/health", 4)])
    {
        assert!(
            line.contains("WARN")
                && line.contains(&format!("route={route} "))
                && line.contains("peer=127.0.0.1:")
                && line.contains(&format!("times={times}")),
            "{line}"
        );
    }

    // No token on an action (refused before its body is read): its own count.
    let (status, _) = call(api.post("/api/services/echo/actions/echo").json("hi")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = logs.lines_with("no bearer token");
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(
        missing[0].contains("route=/api/services/echo/actions/echo ")
            && missing[0].contains("peer=127.0.0.1:")
            && missing[0].contains("times=1"),
        "{}",
        missing[0]
    );

    // Health without a token is not a refusal; with the right one, nothing is said.
    let (status, _) = call(api.get("/health")).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(api.get("/api/jobs").bearer_auth(TOKEN)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(logs.lines_with("refused a request").len(), 4);

    for secret in [TOKEN, GIVEN] {
        assert!(
            logs.lines_with(secret).is_empty(),
            "a token was logged: {:#?}",
            logs.lines_with(secret)
        );
    }
    api.stop().await
}
