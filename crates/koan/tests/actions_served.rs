//! A call served for another process (`ServiceRef::serve`, what a transport's
//! serving side calls): the same outcome as `action(…).correlation_id(…)
//! .priority(…).timeout(…).execute()` — the caller's id and priority, every
//! refusal and failure worded alike, a busy service's queue and a deadline kept.

#[path = "common/mailer.rs"]
mod mailer;

use std::time::Duration;

use koan::action::{ActionOutput, JsonText};
use koan::testing::within;
use koan::{HostHandle, error::ErrorKind};
use mailer::*;

fn text(s: &str) -> JsonText {
    JsonText::from(s.as_bytes())
}

/// The same call through a request, as any other caller makes it.
async fn executed(
    host: &HostHandle,
    service: &str,
    action: &str,
    params: &str,
    timeout: Option<Duration>,
) -> koan::Result<ActionOutput> {
    let mut req = host
        .service(service)
        .action(action, text(params))
        .correlation_id("call-1")
        .priority(3);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    req.execute().await
}

#[tokio::test(start_paused = true)]
async fn a_served_call_runs_its_action_under_the_callers_id_and_priority() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;
    let mailer = host.service("Mailer");

    let out = mailer
        .serve("seen", text("null"), "call-1", 7, None)
        .await?;
    assert_eq!(out.correlation_id(), "call-1");
    let seen = out.value::<Seen>()?;
    assert_eq!(
        (
            seen.correlation_id.as_str(),
            seen.priority,
            seen.action.as_str()
        ),
        ("call-1", 7, "seen")
    );
    assert_eq!(seen.service, "Mailer");

    let sent = mailer
        .serve(
            "send",
            text(r#"{"to":"ada@example.com","subject":"hi"}"#),
            "call-2",
            0,
            None,
        )
        .await?
        .value::<Receipt>()?;
    assert_eq!(
        (sent.to.as_str(), sent.correlation_id.as_str()),
        ("ada@example.com", "call-2")
    );
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_served_call_fails_as_the_same_request_would() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;
    // Declared actions (run straight from the call's parts) and what goes through a
    // request (an unknown action, another spelling, a disabled service's).
    let cases = [
        ("Mailer", "fail", "null"),
        ("Mailer", "panic", "null"),
        ("Mailer", "send", r#"{"to":1}"#),
        ("Mailer", "send", "{not json"),
        ("Mailer", "nope", "null"),
        ("Dormant", "wake", "null"),
        ("Nowhere", "send", "null"),
    ];
    for (service, action, params) in cases {
        let served = host
            .service(service)
            .serve(action, text(params), "call-1", 3, None)
            .await;
        let expected = executed(&host, service, action, params, None).await;
        let (Err(got), Err(want)) = (served, expected) else {
            anyhow::bail!("`{service}.{action}({params})` should fail both ways");
        };
        assert_eq!(got.kind(), want.kind(), "`{service}.{action}({params})`");
        assert_eq!(
            got.to_string(),
            want.to_string(),
            "`{service}.{action}({params})`"
        );
    }
    let renamed = host
        .service("Mailer")
        .serve("LOG", text("4"), "c", 0, None)
        .await?;
    assert_eq!(
        renamed.value::<u32>()?,
        4,
        "another spelling reaches the action"
    );
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_served_call_to_a_busy_service_waits_its_turn_and_keeps_its_deadline()
-> anyhow::Result<()> {
    let (host, mut probe) = start().await?;
    let mailer = host.service("Mailer");
    // `block` holds the service's one slot until the gate opens.
    let blocked = tokio::spawn(mailer.serve("block", text("null"), "b", 0, None));
    within("`block` to start", probe.started.recv())
        .await
        .ok_or_else(|| anyhow::anyhow!("`block` never started"))?;

    let queued = tokio::spawn(mailer.serve("log", text("1"), "q", 0, None));
    let deadline = Some(Duration::from_millis(50));
    let late = within(
        "the call queued past its deadline",
        mailer.serve("log", text("2"), "d", 0, deadline),
    )
    .await
    .err()
    .ok_or_else(|| anyhow::anyhow!("a call queued past its deadline should fail"))?;
    assert_eq!(late.kind(), ErrorKind::Timeout, "{late}");
    let want = executed(&host, "Mailer", "log", "3", Some(Duration::from_millis(50)))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the request should time out too"))?;
    assert_eq!(late.kind(), want.kind());
    assert!(!queued.is_finished(), "the queued call ran before its turn");

    probe.gate.add_permits(1);
    assert_eq!(
        within("`block`", blocked).await??.value::<String>()?,
        "released"
    );
    assert_eq!(within("the queued call", queued).await??.value::<u32>()?, 1);
    assert_eq!(
        probe.log(),
        vec![1],
        "only the call that waited its turn ran"
    );
    stop(&host).await
}

/// A correlation id given in code follows the rule one from another process does:
/// an empty id, a tab (a remote host's events showed another id), a non-ASCII one
/// or 201 characters were taken here and refused only once the service was remote
/// (found by a probe). Refused before anything runs, by `execute()`, `spawn()` and
/// `enqueue()` alike.
#[tokio::test(start_paused = true)]
async fn a_correlation_id_given_in_code_is_checked_as_one_from_outside() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;
    let long = "x".repeat(201);
    for id in ["", "tab\there", "é", long.as_str()] {
        let call = || host.service("Mailer").action("seen", ()).correlation_id(id);
        let e = within("a call", call().execute())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{id:?}: {e}");
        assert!(e.message().starts_with("the correlation id "), "{e}");
        let e = call().spawn().expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{id:?}: {e}");
        let e = within("an enqueue", call().enqueue())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{id:?}: {e}");
    }
    let out = within(
        "a call",
        host.service("Mailer")
            .action("seen", ())
            .correlation_id("order 7: a/b=c")
            .execute(),
    )
    .await?;
    assert_eq!(out.correlation_id(), "order 7: a/b=c");
    stop(&host).await
}
