//! The wire contract (`docs/wire.md`) as a client without koan sees it: plain
//! async-nats requests and JetStream publishes to a koan host on a real
//! `nats-server`. (The Python suite in `crates/koan-demo/tests/wire_py` does the same
//! from another language.)

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::within;
use serde_json::{Value, json};

/// Answers with what it was given and how.
struct Echo;

impl Service for Echo {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Echo")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |_svc: Arc<Self>, p: Value, cx: ActionContext| async move {
                let mut out = json!({
                    "params": p,
                    "correlation_id": cx.correlation_id(),
                    "priority": cx.priority(),
                });
                // Its deadline, when it has one.
                if let Some(left) = cx.remaining() {
                    out["remaining_ms"] = json!(left.as_millis() as u64);
                }
                Ok::<_, BoxError>(out)
            },
        );
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A host serving `Echo`, and a bare client beside it.
async fn start(server: &NatsServer) -> anyhow::Result<(Member, async_nats::Client)> {
    let echo = Member::join(test_options(&server.url()), |b| b.instance(Echo)).await?;
    let client = within("a bare client", async_nats::connect(server.url())).await??;
    Ok((echo, client))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

fn header(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

/// The body of a bare reply, which has no headers.
fn bare_body(reply: &async_nats::Message) -> anyhow::Result<Value> {
    assert!(
        reply.headers.as_ref().is_none_or(HeaderMap::is_empty),
        "a bare reply has no headers: {:?}",
        reply.headers
    );
    Ok(serde_json::from_slice(&reply.payload)?)
}

/// The stored outcome of job `id`, once there is one.
async fn outcome(store: &kv::Store, id: &str) -> anyhow::Result<Value> {
    within(&format!("the outcome of {id}"), async {
        loop {
            if let Ok(Some(bytes)) = store.get(id).await {
                return Ok(serde_json::from_slice(&bytes)?);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_echo_the_correlation_id_and_refuse_other_versions() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let subject = "koan.svc.echo.act.echo";

    let h = headers(&[("Koan-Correlation-Id", "c-42"), ("Koan-Priority", "7")]);
    let reply = within(
        "a call",
        client.request_with_headers(subject, h, r#"{"a":1}"#.into()),
    )
    .await??;
    assert_eq!(
        header(&reply, "Koan-Correlation-Id").as_deref(),
        Some("c-42")
    );
    assert_eq!(header(&reply, "Koan-Wire").as_deref(), Some("1"));
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(
        body,
        json!({"ok": {"params": {"a": 1}, "correlation_id": "c-42", "priority": 7}})
    );

    let h = headers(&[("Koan-Wire", "2"), ("Koan-Correlation-Id", "c-43")]);
    let reply = within(
        "a call in version 2",
        client.request_with_headers(subject, h, "{}".into()),
    )
    .await??;
    assert_eq!(
        header(&reply, "Koan-Correlation-Id").as_deref(),
        Some("c-43")
    );
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(body["error"], "unsupported_wire_version", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Koan-Wire: 2"))
    );

    echo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_bare_subject_answers_with_the_body_alone() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let subject = format!(
        "koan.host.{}.svc.echo.bare.echo",
        echo.nats.host_id().to_lowercase()
    );

    let h = headers(&[("Koan-Correlation-Id", "c-7")]);
    let reply = within(
        "a bare call",
        client.request_with_headers(subject.clone(), h, r#"{"a":2}"#.into()),
    )
    .await??;
    let body = bare_body(&reply)?;
    assert_eq!(
        body,
        json!({"ok": {"params": {"a": 2}, "correlation_id": "c-7", "priority": 0}})
    );

    // An id in the subject follows the header's rule (it was taken unchecked).
    let long = format!("{subject}.{}", "z".repeat(300));
    let reply = within("a call with a long id", client.request(long, "{}".into())).await??;
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(body["error"], "invalid_parameters", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("in the subject") && m.contains("1 to 200 characters")),
        "{body}"
    );

    // A call that gives no correlation id gets the full reply, naming the one made.
    let reply = within("a call without an id", client.request(subject, "{}".into())).await??;
    assert_eq!(header(&reply, "Koan-Wire").as_deref(), Some("1"));
    let made = header(&reply, "Koan-Correlation-Id")
        .ok_or_else(|| anyhow::anyhow!("no correlation id in the reply"))?;
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(body["ok"]["correlation_id"], made.as_str(), "{body}");

    echo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_subject_reads_the_id_from_the_body_and_refuses_a_body_without_one()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let host = echo.nats.host_id().to_lowercase();
    let subject = format!("koan.host.{host}.svc.echo.lead.echo");

    let h = headers(&[("Koan-Priority", "5")]);
    let reply = within(
        "a lead call",
        client.request_with_headers(subject.clone(), h, "c-9\n{\"a\":3}".into()),
    )
    .await??;
    let body = bare_body(&reply)?;
    assert_eq!(
        body,
        json!({"ok": {"params": {"a": 3}, "correlation_id": "c-9", "priority": 5}})
    );
    // Nothing after the id's line is no parameters.
    let reply = within(
        "no parameters",
        client.request(subject.clone(), "c-10\n".into()),
    )
    .await??;
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(body["ok"]["params"], Value::Null, "{body}");
    assert_eq!(body["ok"]["correlation_id"], "c-10", "{body}");

    // A body that does not start with an id is refused in full, saying what the
    // subject expects; a 60 KB line is not echoed whole.
    for bad in [
        r#"{"a":3}"#.to_owned(),
        format!("{}\n{{}}", "x y".repeat(20_000)),
    ] {
        let reply = within(
            "a call without an id line",
            client.request(subject.clone(), bad.into()),
        )
        .await??;
        assert!(
            header(&reply, "Koan-Correlation-Id").is_some(),
            "an id made for it"
        );
        let body: Value = serde_json::from_slice(&reply.payload)?;
        assert_eq!(body["error"], "invalid_parameters", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("starts its body with its correlation id"),
            "{message}"
        );
        assert!(message.len() < 600, "{} bytes", message.len());
    }

    // A client of an earlier koan gave the id as the bare subject's last token.
    let earlier = format!("koan.host.{host}.svc.echo.bare.echo.c-8");
    let reply = within(
        "an earlier client's call",
        client.request(earlier, "{}".into()),
    )
    .await??;
    let body = bare_body(&reply)?;
    assert_eq!(body["ok"]["correlation_id"], "c-8", "{body}");

    echo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_job_runs_once_and_a_refused_one_says_why() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let js = jetstream::new(client.clone());
    let outcomes = js.get_key_value("koan_outcomes").await?;
    let mut dead = client.subscribe("koan.dlq.echo.echo").await?;
    client.flush().await?;

    // Parameters as the body, the id from Nats-Msg-Id, the rest from headers.
    let publish = |id: &'static str, extra: &[(&str, &str)]| {
        let mut h = headers(extra);
        h.insert("Nats-Msg-Id", id);
        let js = js.clone();
        async move {
            let ack = js
                .publish_with_headers("koan.work.echo.echo", h, r#"{"n":1}"#.into())
                .await?;
            anyhow::Ok(within("the PubAck", ack.into_future()).await??)
        }
    };
    let first = publish("job-1", &[("Koan-Priority", "3")]).await?;
    let again = publish("job-1", &[("Koan-Priority", "3")]).await?;
    assert!(!first.duplicate && again.duplicate, "one job per id");
    let done = outcome(&outcomes, "job-1").await?;
    assert_eq!(done["id"], "job-1");
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        done["ok"],
        json!({"params": {"n": 1}, "correlation_id": "job-1", "priority": 3}),
        "the id stands in for the correlation id"
    );
    // One too long to be a correlation id: the run goes under an id made for it
    // (it was refused the job's id, every run, and the job was dead; found by a
    // review).
    let long: &'static str = Box::leak("j".repeat(250).into_boxed_str());
    publish(long, &[]).await?;
    let done = outcome(&outcomes, long).await?;
    assert_eq!(done["attempts"], 1, "{done}");
    let made = done["ok"]["correlation_id"].as_str().unwrap_or_default();
    assert!(!made.is_empty() && made.len() <= 200, "{done}");

    publish("job-2", &[("Koan-Wire", "2")]).await?;
    let refused = outcome(&outcomes, "job-2").await?;
    assert_eq!(refused["error"], "unsupported_wire_version", "{refused}");
    let letter = within("the dead letter", dead.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no dead letter"))?;
    assert_eq!(header(&letter, "Koan-Action-Id").as_deref(), Some("job-2"));
    assert_eq!(
        header(&letter, "Koan-Error").as_deref(),
        Some("unsupported_wire_version")
    );

    echo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_that_are_not_json_are_refused_naming_the_action() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let host = echo.nats.host_id().to_lowercase();
    let full = "koan.svc.echo.act.echo".to_owned();
    let bare = format!("koan.host.{host}.svc.echo.bare.echo");
    let lead = format!("koan.host.{host}.svc.echo.lead.echo");
    let bad: [&[u8]; 4] = [b"{\"a\":", b"nope", b"{\"a\":\"\xff\"}", b"{\"a\":1} 2"];
    for body in bad {
        for (subject, payload) in [
            (&full, body.to_vec()),
            (&bare, body.to_vec()),
            (&lead, [&b"c-1\n"[..], body].concat()),
        ] {
            let reply = within(
                "a call whose parameters are not JSON",
                client.request(subject.clone(), payload.into()),
            )
            .await??;
            let answer: Value = serde_json::from_slice(&reply.payload)?;
            assert_eq!(answer["error"], "invalid_parameters", "{subject}: {answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("not valid JSON") && message.contains("`echo`"),
                "{subject}: {message}"
            );
        }
    }
    // Blank, or `null`, is no parameters, on each subject.
    for body in ["", " \n ", "null", " null "] {
        for (subject, payload) in [
            (&full, body.to_owned()),
            (&bare, body.to_owned()),
            (&lead, format!("c-2\n{body}")),
        ] {
            let reply = within(
                "a call without parameters",
                client.request(subject.clone(), payload.into()),
            )
            .await??;
            let answer: Value = serde_json::from_slice(&reply.payload)?;
            let params = answer.get("ok").and_then(|ok| ok.get("params"));
            assert_eq!(params, Some(&Value::Null), "{subject}: {answer}");
        }
    }
    echo.stop().await
}

/// A correlation id in `Koan-Correlation-Id` follows the rule HTTP's does (1 to 200
/// printable ASCII characters), and `Koan-Timeout-Ms: 0` is refused as HTTP's
/// `timeout=0` is: each an `invalid_parameters` reply naming the header, and the
/// action does not run. Before, an empty or 60 KB id was taken as it came, into
/// every event, record and log line of the call, and a zero deadline failed the
/// call as a timeout (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_correlation_ids_and_a_zero_deadline_are_refused() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let subject = "koan.svc.echo.act.echo";
    let long = "x".repeat(60 * 1024);
    for (name, value, why) in [
        ("Koan-Correlation-Id", long.as_str(), "1 to 200 characters"),
        ("Koan-Correlation-Id", "a\tb", "printable ASCII"),
        ("Koan-Timeout-Ms", "0", "above 0"),
    ] {
        let reply = within(
            "a call",
            client.request_with_headers(subject, headers(&[(name, value)]), "{}".into()),
        )
        .await??;
        let body: Value = serde_json::from_slice(&reply.payload)?;
        let short: String = body.to_string().chars().take(300).collect();
        assert_eq!(body["error"], "invalid_parameters", "{name}: {short}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("header `{name}`")) && message.contains(why),
            "{name}: {message}"
        );
        // The reply names an id made for the call, not the one refused.
        let id = header(&reply, "Koan-Correlation-Id").unwrap_or_default();
        assert!(!id.is_empty() && id.len() <= 200, "{id}");
    }
    // The longest allowed id is taken as it is.
    let ok = "y".repeat(200);
    let reply = within(
        "a call",
        client.request_with_headers(
            subject,
            headers(&[("Koan-Correlation-Id", ok.as_str())]),
            "{}".into(),
        ),
    )
    .await??;
    assert_eq!(header(&reply, "Koan-Correlation-Id"), Some(ok));
    echo.stop().await
}

/// A call read after its deadline (`Koan-Deadline-Unix-Ms`, which koan sends with
/// `Koan-Timeout-Ms`) is not run: its caller was told it timed out. Relative
/// alone, an instance frozen while the call waited ran it whole on its resume,
/// 16 s after its caller's timeout (found by a probe). One read in time runs in
/// what is left, the earlier of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_read_after_its_deadline_is_not_run() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (echo, client) = start(&server).await?;
    let subject = "koan.svc.echo.act.echo";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    // Past by more than the second of clock skew allowed.
    let past = (now - 2_000).to_string();
    let reply = within(
        "a late call",
        client.request_with_headers(
            subject,
            headers(&[
                ("Koan-Timeout-Ms", "60000"),
                ("Koan-Deadline-Unix-Ms", &past),
            ]),
            "{}".into(),
        ),
    )
    .await??;
    let body: Value = serde_json::from_slice(&reply.payload)?;
    assert_eq!(body["error"], "timeout", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("passed before this instance read it; it was not run")),
        "{body}"
    );

    let soon = (now + 60_000).to_string();
    for (timeout, at_most) in [("3600000", 61_000), ("500", 500)] {
        let reply = within(
            "a call in time",
            client.request_with_headers(
                subject,
                headers(&[
                    ("Koan-Timeout-Ms", timeout),
                    ("Koan-Deadline-Unix-Ms", &soon),
                ]),
                "{}".into(),
            ),
        )
        .await??;
        let body: Value = serde_json::from_slice(&reply.payload)?;
        let left = body["ok"]["remaining_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(left <= at_most, "{timeout}: {body}");
    }
    echo.stop().await
}
