//! Invoking actions: parameters (typed, JSON, look-alike), errors and their messages,
//! chains, panics, disabled services, enqueue and the ledger, shutdown, correlation
//! ids, `info()`, and the transport for services hosted elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, error::ErrorKind, job::JobState, transport::RemoteCall,
    transport::Transport,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

/// The parameters of `send`. `handle` is not serializable: it survives only when the
/// value is passed through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Email {
    to: String,
    subject: String,
    #[serde(skip)]
    handle: Option<u64>,
}

/// A caller-side type of the same shape as `Email`.
#[derive(Debug, Serialize)]
struct OutgoingMail {
    to: &'static str,
    subject: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Receipt {
    to: String,
    subject: String,
    handle: Option<u64>,
    correlation_id: String,
    id: Option<String>,
}

/// What the correlation action saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    correlation_id: String,
    id: Option<String>,
    priority: i32,
    service: String,
    action: String,
}

struct Mailer {
    log: Arc<Mutex<Vec<u32>>>,
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<()>,
}

struct Probe {
    log: Arc<Mutex<Vec<u32>>>,
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedReceiver<()>,
}

impl Probe {
    fn log(&self) -> Vec<u32> {
        self.log.lock().expect("log lock").clone()
    }
}

fn mailer() -> (Mailer, Probe) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Mailer {
            log: Arc::clone(&log),
            gate: Arc::clone(&gate),
            started: tx,
        },
        Probe {
            log,
            gate,
            started: rx,
        },
    )
}

impl Service for Mailer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Mailer").description("Sends mail")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "send",
            |_svc: Arc<Self>, mail: Email, cx: ActionContext| async move {
                Ok::<_, BoxError>(Receipt {
                    to: mail.to,
                    subject: mail.subject,
                    handle: mail.handle,
                    correlation_id: cx.correlation_id().to_owned(),
                    id: cx.id().map(str::to_owned),
                })
            },
        )
        .description("Sends an email");
        a.action(
            "fail",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("smtp server refused the connection".into())
            },
        );
        a.action(
            "panic",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                if std::hint::black_box(true) {
                    panic!("kaboom in the handler");
                }
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "log",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.log.lock().expect("log lock").push(n);
                Ok::<_, BoxError>(n)
            },
        );
        a.action(
            "refuse",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                Err::<u32, BoxError>(format!("refusing {n}").into())
            },
        );
        a.action(
            "seen",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                Ok::<_, BoxError>(Seen {
                    correlation_id: cx.correlation_id().to_owned(),
                    id: cx.id().map(str::to_owned),
                    priority: cx.priority(),
                    service: cx.service().to_owned(),
                    action: cx.action().to_owned(),
                })
            },
        );
        // Waits for a permit, or for the host to stop.
        a.action(
            "block",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let _ = svc.started.send(());
                tokio::select! {
                    p = svc.gate.acquire() => { p?.forget(); Ok::<_, BoxError>("released") }
                    _ = cx.cancelled() => Ok("interrupted"),
                }
            },
        );
        a.event::<Receipt>("Sent");
        a.event_described::<u32>("Bounced", "A mail came back");
    }
}

impl BackgroundService for Mailer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[derive(Default)]
struct Dormant;

impl Service for Dormant {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Dormant").enabled(false)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "wake",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("awake") },
        );
    }
}

impl BackgroundService for Dormant {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A started host running a new `Mailer` (and the disabled `Dormant`), and the
/// mailer's probe.
async fn start() -> anyhow::Result<(HostHandle, Probe)> {
    let (svc, probe) = mailer();
    let host = koan::testing::host()
        .instance(svc)
        .service::<Dormant>()
        .build()?
        .start();
    host.started().await?;
    Ok((host, probe))
}

/// Stops the host, as the last step of a test.
async fn stop(host: &HostHandle) -> anyhow::Result<()> {
    Ok(koan::testing::stop(host).await?)
}

fn email(to: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "hello".to_owned(),
        handle: Some(42),
    }
}

#[tokio::test(start_paused = true)]
async fn typed_parameters_and_results_are_passed_through() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let out = host
        .services::<Mailer>()
        .action("send", email("ada@example.com"))
        .execute()
        .await?;
    assert_eq!(
        out.json()?["to"],
        json!("ada@example.com"),
        "the result also shows as JSON"
    );
    let receipt = out.value::<Receipt>()?;
    assert_eq!(receipt.to, "ada@example.com");
    assert_eq!(receipt.subject, "hello");
    // Not serializable, so it arrived without a trip through serde.
    assert_eq!(receipt.handle, Some(42));

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn json_and_look_alike_parameters_go_through_serde() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let by_json = host
        .services::<Mailer>()
        .action("send", json!({"to": "bob@example.com", "subject": "json"}))
        .execute()
        .await?
        .value::<Receipt>()?;
    assert_eq!(
        (by_json.to.as_str(), by_json.subject.as_str()),
        ("bob@example.com", "json")
    );
    assert_eq!(by_json.handle, None);

    let by_name = host
        .service("Mailer")
        .action(
            "send",
            json!({"to": "cy@example.com", "subject": "by name"}),
        )
        .execute()
        .await?;
    let v = by_name.json()?;
    assert_eq!(v["to"], json!("cy@example.com"));
    assert_eq!(v["subject"], json!("by name"));

    // Names are case-insensitive on the by-name path.
    let by_ref = host
        .service("mailer")
        .action("SEND", json!({"to": "di@example.com", "subject": "ref"}))
        .execute()
        .await?
        .value::<Receipt>()?;
    assert_eq!(by_ref.to, "di@example.com");

    let look_alike = host
        .services::<Mailer>()
        .action(
            "send",
            OutgoingMail {
                to: "eve@example.com",
                subject: "look-alike",
            },
        )
        .execute()
        .await?
        .value::<Receipt>()?;
    assert_eq!(look_alike.to, "eve@example.com");
    assert_eq!(look_alike.subject, "look-alike");
    assert_eq!(look_alike.handle, None);

    // A result read as a look-alike type is converted too.
    #[derive(Debug, Deserialize)]
    struct JustTo {
        to: String,
    }
    let partial = host
        .services::<Mailer>()
        .action("send", email("fay@example.com"))
        .execute()
        .await?
        .value::<JustTo>()?;
    assert_eq!(partial.to, "fay@example.com");

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn invalid_parameters_name_the_field() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let wrong_type = host
        .service("Mailer")
        .action("send", json!({"to": 5, "subject": "x"}))
        .execute()
        .await
        .expect_err("`to` must be a string");
    assert_eq!(wrong_type.kind(), ErrorKind::InvalidParameters);
    assert!(wrong_type.message().contains("`to`"), "{wrong_type}");
    assert!(wrong_type.message().contains("send"), "{wrong_type}");

    let missing = host
        .services::<Mailer>()
        .action("send", json!({"subject": "x"}))
        .execute()
        .await
        .expect_err("`to` is required");
    assert_eq!(missing.kind(), ErrorKind::InvalidParameters);
    assert!(
        missing.message().contains("missing field `to`"),
        "{missing}"
    );

    // Refused at once by enqueue too, and recorded nowhere as run.
    let refused = host
        .services::<Mailer>()
        .action("log", "not a number")
        .enqueue()
        .await
        .expect_err("u32 expected");
    assert_eq!(refused.kind(), ErrorKind::InvalidParameters);

    // A whole number written as a float (`7.0`) is an integer, as JSON Schema says;
    // a fraction is not.
    let whole = host
        .service("Mailer")
        .action("log", json!(7.0))
        .execute()
        .await?
        .value::<u32>()?;
    assert_eq!(whole, 7);
    let fraction = host
        .service("Mailer")
        .action("log", json!(7.5))
        .execute()
        .await
        .expect_err("7.5 is not a u32");
    assert_eq!(fraction.kind(), ErrorKind::InvalidParameters);
    assert!(fraction.message().contains("7.5"), "{fraction}");

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn unknown_service_and_unknown_action_say_what_exists() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let e = host
        .service("Postman")
        .action("send", ())
        .execute()
        .await
        .expect_err("no such service");
    assert_eq!(e.kind(), ErrorKind::UnknownService);
    assert!(e.message().contains("Postman"), "{e}");
    assert!(
        e.message().contains("Mailer") && e.message().contains("Dormant"),
        "{e}"
    );

    // `enqueue()` refuses at once too (it promises rejections come back when asked).
    let e = host
        .service("Postman")
        .action("send", json!({}))
        .enqueue()
        .await
        .expect_err("no such service");
    assert_eq!(e.kind(), ErrorKind::UnknownService);

    let e = host
        .services::<Mailer>()
        .action("fax", ())
        .execute()
        .await
        .expect_err("no such action");
    assert_eq!(e.kind(), ErrorKind::UnknownAction);
    assert!(e.message().contains("fax"), "{e}");
    for name in ["send", "fail", "panic", "log", "refuse", "seen", "block"] {
        assert!(e.message().contains(name), "lists `{name}`: {e}");
    }

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn chain_runs_in_order_and_stops_at_the_failing_step() -> anyhow::Result<()> {
    let (host, probe) = start().await?;
    let m = host.services::<Mailer>();

    let out = m
        .action("log", 1u32)
        .action("log", 2u32)
        .action("log", 3u32)
        .execute()
        .await?;
    assert_eq!(out.value::<u32>()?, 3, "the last step's result");
    assert_eq!(probe.log(), [1, 2, 3]);

    let e = m
        .action("log", 10u32)
        .action("refuse", 20u32)
        .action("log", 30u32)
        .execute()
        .await
        .expect_err("step 2 fails");
    assert_eq!(e.kind(), ErrorKind::Handler);
    assert!(e.message().contains("step 2 of 3"), "{e}");
    assert!(e.message().contains("refuse"), "{e}");
    assert!(e.message().contains("refusing 20"), "{e}");
    assert_eq!(probe.log(), [1, 2, 3, 10], "step 3 never ran");

    // An unknown action in the middle stops the chain the same way.
    let e = m
        .action("log", 40u32)
        .action("nope", ())
        .action("log", 50u32)
        .execute()
        .await
        .expect_err("step 2 is unknown");
    assert_eq!(e.kind(), ErrorKind::UnknownAction);
    assert!(e.message().contains("step 2 of 3"), "{e}");
    assert_eq!(probe.log(), [1, 2, 3, 10, 40]);

    // An enqueued chain runs in order as well.
    let ticket = m
        .action("log", 60u32)
        .action("log", 70u32)
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    assert_eq!(
        within("the outcome of `ticket`", ticket.outcome())
            .await?
            .value::<u32>()?,
        70
    );
    assert_eq!(probe.log(), [1, 2, 3, 10, 40, 60, 70]);
    let record = host.jobs().get(&id).await?;
    assert_eq!(record.action, "log");
    assert_eq!(record.then.len(), 1, "{record:?}");
    assert_eq!(record.then[0].params, json!(70));
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.result, Some(json!(70)));

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn panic_and_error_in_a_handler_are_reported_and_the_service_goes_on() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;
    let m = host.services::<Mailer>();

    let e = m.action("panic", ()).execute().await.expect_err("panics");
    assert_eq!(e.kind(), ErrorKind::Panic);
    assert!(e.message().contains("kaboom in the handler"), "{e}");
    assert_eq!(m.action("log", 1u32).execute().await?.value::<u32>()?, 1);

    let e = m.action("fail", ()).execute().await.expect_err("fails");
    assert_eq!(e.kind(), ErrorKind::Handler);
    assert!(
        e.message().contains("smtp server refused the connection"),
        "{e}"
    );
    assert!(e.message().contains("fail"), "names the action: {e}");
    assert_eq!(m.action("log", 2u32).execute().await?.value::<u32>()?, 2);

    // An enqueued job that panics is retried (3 runs by default, with backoff),
    // then dead, with each attempt in its record.
    let ticket = m.action("panic", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    assert_eq!(
        within("the outcome of `ticket`", ticket.outcome())
            .await
            .expect_err("panics")
            .kind(),
        ErrorKind::Panic
    );
    let record = host.jobs().get(&id).await?;
    assert_eq!(record.state, JobState::Dead);
    assert_eq!((record.attempts, record.max_attempts), (3, 3));
    assert_eq!(record.history.len(), 3);
    assert!(
        record
            .history
            .iter()
            .all(|a| a.error.as_ref().is_some_and(|e| e.error == "handler_panic"))
    );
    // Backoff doubles (1 s, then 2 s, ± 20 % jitter).
    let gap = |i: usize| {
        (record.history[i + 1].started_at - record.history[i].started_at).num_milliseconds()
    };
    assert!((800..=1300).contains(&gap(0)), "{} {record:#?}", gap(0));
    assert!((1600..=2500).contains(&gap(1)), "{} {record:#?}", gap(1));

    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn disabled_service_refuses_actions() -> anyhow::Result<()> {
    let (host, _probe) = start().await?;

    let e = host
        .services::<Dormant>()
        .action("wake", ())
        .execute()
        .await
        .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled);
    assert!(e.message().contains("Dormant"), "{e}");

    let e = host
        .service("Dormant")
        .action("wake", Value::Null)
        .enqueue()
        .await
        .expect_err("disabled");
    assert_eq!(e.kind(), ErrorKind::Disabled);

    let info = host.services::<Dormant>().info().await?;
    assert!(!info.enabled);

    stop(&host).await
}

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
            service: "Billing".to_owned(),
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
