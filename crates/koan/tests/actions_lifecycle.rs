//! Invoking actions, continued: enqueue and the ledger, shutdown, correlation ids,
//! `info()`, and the transport for services hosted elsewhere.

#[path = "common/mailer.rs"]
mod mailer;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing::within;
use koan::{error::ErrorKind, job::JobState, transport::RemoteCall, transport::Transport};
use mailer::*;
use serde_json::{Value, json};

#[tokio::test(start_paused = true)]
async fn enqueue_returns_an_id_whose_outcome_and_record_follow() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let ticket = host
        .services::<Mailer>()
        .action("send", email("gus@example.com"))
        .correlation_id("batch-7")
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    assert!(!id.is_empty());
    assert_eq!(ticket.correlation_id(), "batch-7");
    let before = host.jobs().get(&id).await?;
    assert!(
        matches!(before.state, JobState::Queued | JobState::Running),
        "{before:?}"
    );
    assert_eq!(before.result, None);

    let receipt = within("the outcome of `ticket`", ticket.outcome())
        .await?
        .value::<Receipt>()?;
    assert_eq!(receipt.to, "gus@example.com");
    assert_eq!(
        receipt.id.as_deref(),
        Some(id.as_str()),
        "the handler sees the id"
    );
    assert_eq!(receipt.correlation_id, "batch-7");

    let record = host.jobs().get(&id).await?;
    assert_eq!(record.id, id);
    assert_eq!(record.service, "Mailer");
    assert_eq!(record.action, "send");
    assert_eq!(record.correlation_id, "batch-7");
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.attempts, 1);
    assert!(record.finished_at.is_some());
    assert_eq!(record.error, None);
    let result = record.result.expect("a result");
    assert_eq!(result["to"], json!("gus@example.com"));
    assert_eq!(result["subject"], json!("hello"));

    let e = host.jobs().get("no-such-id").await.expect_err("unknown id");
    assert_eq!(e.kind(), ErrorKind::UnknownJob);

    // Two tickets never share an id.
    let a = host
        .services::<Mailer>()
        .action("log", 1u32)
        .enqueue()
        .await?;
    let b = host
        .services::<Mailer>()
        .action("log", 2u32)
        .enqueue()
        .await?;
    assert_ne!(a.id(), b.id());
    assert_eq!(
        within("the outcome of `a`", a.outcome())
            .await?
            .value::<u32>()?,
        1
    );
    assert_eq!(
        within("the outcome of `b`", b.outcome())
            .await?
            .value::<u32>()?,
        2
    );

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_queued_actions_and_refuses_new_ones() -> anyhow::Result<()> {
    let (host, mut probe) = start().await?;
    let m = host.services::<Mailer>();

    let running = m.action("block", ()).spawn()?;
    koan::testing::within("`block` to start", probe.started.recv())
        .await
        .expect("block started");
    let mut queued = Vec::new();
    for n in 1..=3u32 {
        queued.push(m.action("log", n).spawn()?);
    }
    let waiting_caller = tokio::spawn({
        let m = m.clone();
        async move { m.action("log", 4u32).execute().await }
    });
    koan::testing::settle().await;

    host.shutdown();

    // Every queued action is answered, none is run.
    for t in queued {
        let e = within("the outcome of `t`", t.outcome())
            .await
            .expect_err("answered ShuttingDown");
        assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    }
    let e = waiting_caller
        .await?
        .expect_err("the waiting caller is answered");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    // The running one saw its token and finished.
    assert_eq!(
        within("the outcome of `running`", running.outcome())
            .await?
            .value::<String>()?,
        "interrupted"
    );
    assert!(probe.log().is_empty(), "queued actions never ran");

    koan::testing::within("the host to exit", host.wait())
        .await
        .into_result()?;
    let e = m.action("log", 5u32).execute().await.expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    let e = m.action("log", 6u32).enqueue().await.expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    assert!(probe.log().is_empty());
    drop(probe.gate);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn correlation_id_reaches_the_handler_and_the_output() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;
    let m = host.services::<Mailer>();

    let out = m
        .action("seen", ())
        .priority(4)
        .correlation_id("req-123")
        .execute()
        .await?;
    assert_eq!(out.correlation_id(), "req-123");
    let seen = out.value::<Seen>()?;
    assert_eq!(seen.correlation_id, "req-123");
    assert_eq!(seen.priority, 4);
    assert_eq!(
        (seen.service.as_str(), seen.action.as_str()),
        ("Mailer", "seen")
    );
    assert_eq!(seen.id, None, "only jobs have an id");

    // Generated when not given: the same in the handler and the output, fresh per call.
    let a = m.action("seen", ()).execute().await?;
    let a_corr = a.correlation_id().to_owned();
    assert!(!a_corr.is_empty());
    assert_eq!(a.value::<Seen>()?.correlation_id, a_corr);
    let b = m.action("seen", ()).execute().await?;
    assert_ne!(b.correlation_id(), a_corr);

    // One correlation id for the whole chain.
    let chain = m
        .action("log", 1u32)
        .action("seen", ())
        .correlation_id("chain-9")
        .execute()
        .await?;
    assert_eq!(chain.correlation_id(), "chain-9");
    assert_eq!(chain.value::<Seen>()?.correlation_id, "chain-9");

    // Options set all three at once.
    let with_options = m
        .action("seen", ())
        .options(koan::action::CallOptions {
            priority: 2,
            timeout: Some(Duration::from_secs(5)),
            correlation_id: Some("opt-1".to_owned()),
        })
        .execute()
        .await?
        .value::<Seen>()?;
    assert_eq!(with_options.correlation_id, "opt-1");
    assert_eq!(with_options.priority, 2);

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn info_lists_actions_with_parameter_schemas_and_events() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let info = host.services::<Mailer>().info().await?;
    assert_eq!(info.name, "Mailer");
    assert_eq!(info.kind, koan::service::ServiceKind::Background);
    assert_eq!(info.description.as_deref(), Some("Sends mail"));
    assert!(info.enabled);
    let names: Vec<&str> = info.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["send", "fail", "panic", "log", "refuse", "seen", "block"]
    );
    assert!(info.actions.iter().all(|a| !a.builtin));

    let send = &info.actions[0];
    assert_eq!(send.description.as_deref(), Some("Sends an email"));
    let schema = &send.params_schema;
    assert_eq!(schema["type"], json!("object"));
    assert_eq!(schema["properties"]["to"]["type"], json!("string"));
    assert_eq!(schema["properties"]["subject"]["type"], json!("string"));
    assert!(
        schema["properties"].get("handle").is_none(),
        "skipped fields are not parameters: {schema}"
    );
    let required = schema["required"].as_array().expect("required fields");
    assert!(required.contains(&json!("to")) && required.contains(&json!("subject")));

    let log = info.actions.iter().find(|a| a.name == "log").expect("log");
    assert_eq!(log.params_schema["type"], json!("integer"));
    let fail = info
        .actions
        .iter()
        .find(|a| a.name == "fail")
        .expect("fail");
    assert_eq!(fail.params_schema, Value::Null, "`()` takes no parameters");

    let events: Vec<&str> = info.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(events, ["Sent", "Bounced"]);
    assert_eq!(
        info.events[0].payload_schema["properties"]["correlation_id"]["type"],
        json!("string")
    );
    assert_eq!(
        info.events[1].description.as_deref(),
        Some("A mail came back")
    );

    // The by-name path reports the same.
    assert_eq!(host.service("mailer").info().await?, info);

    stop(&host).await
}

/// A transport that records calls and answers with what it got.
#[derive(Default)]
struct FakeTransport {
    calls: Mutex<Vec<RemoteCall>>,
}

impl FakeTransport {
    fn calls(&self) -> Vec<RemoteCall> {
        self.calls.lock().expect("calls lock").clone()
    }
}

impl Transport for FakeTransport {
    fn call(
        &self,
        call: RemoteCall,
    ) -> Pin<Box<dyn Future<Output = koan::Result<Value>> + Send + '_>> {
        Box::pin(async move {
            self.calls.lock().expect("calls lock").push(call.clone());
            if call.action == "explode" {
                return Err(koan::Error::new(
                    ErrorKind::Handler,
                    "remote handler failed",
                ));
            }
            Ok(json!({ "remote": call.service, "action": call.action, "params": call.params }))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn transport_carries_calls_to_services_hosted_elsewhere() -> anyhow::Result<()> {
    let transport = Arc::new(FakeTransport::default());
    let (svc, _probe) = mailer();
    let host = koan::testing::host()
        .transport(transport.clone())
        .instance(svc)
        .build()?
        .start();
    host.started().await?;

    let out = host
        .service("Billing")
        .action("charge", json!({"amount": 12}))
        .priority(7)
        .timeout(Duration::from_secs(9))
        .correlation_id("pay-1")
        .execute()
        .await?;
    assert_eq!(out.correlation_id(), "pay-1");
    assert_eq!(
        out.json()?,
        json!({"remote": "Billing", "action": "charge", "params": {"amount": 12}})
    );
    assert_eq!(
        transport.calls(),
        [RemoteCall {
            service: "Billing".into(),
            action: "charge".to_owned(),
            params: json!({"amount": 12}),
            priority: 7,
            timeout: Some(Duration::from_secs(9)),
            correlation_id: "pay-1".to_owned(),
        }]
    );

    // By name with JSON, typed parameters (sent as JSON), and errors keep their kind.
    host.service("Billing")
        .action("refund", json!({"amount": 3}))
        .execute()
        .await?;
    host.service("Billing")
        .action(
            "invoice",
            OutgoingMail {
                to: "x@example.com",
                subject: "bill",
            },
        )
        .execute()
        .await?;
    let e = host
        .service("Billing")
        .action("explode", ())
        .execute()
        .await
        .expect_err("the remote error comes back");
    assert_eq!(e.kind(), ErrorKind::Handler);
    let calls = transport.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[1].action, "refund");
    assert_eq!(calls[1].params, json!({"amount": 3}));
    assert_eq!(calls[1].priority, 0);
    assert_eq!(calls[1].timeout, None);
    assert!(
        !calls[1].correlation_id.is_empty(),
        "a correlation id is generated"
    );
    assert_eq!(
        calls[2].params,
        json!({"to": "x@example.com", "subject": "bill"})
    );
    assert_eq!(calls[3].params, Value::Null);

    // A local service is still served locally.
    let local = host
        .services::<Mailer>()
        .action("log", 1u32)
        .execute()
        .await?;
    assert_eq!(local.value::<u32>()?, 1);
    assert_eq!(transport.calls().len(), 4);

    stop(&host).await
}
