//! Invoking actions: parameters (typed, JSON, look-alike), errors and their messages,
//! chains, panics and disabled services. Enqueue and the ledger, shutdown,
//! correlation ids, `info()` and the transport are in `actions_lifecycle.rs`.

#[path = "common/mailer.rs"]
mod mailer;

use koan::testing::within;
use koan::{error::ErrorKind, job::JobState};
use mailer::*;
use serde::Deserialize;
use serde_json::{Value, json};

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
    for (service, action, to) in [
        ("mailer", "SEND", "di@example.com"),
        ("MAILER", "send", "dj@example.com"),
    ] {
        let receipt = host
            .service(service)
            .action(action, json!({"to": to, "subject": "any case"}))
            .execute()
            .await?
            .value::<Receipt>()?;
        assert_eq!(receipt.to, to, "`{action}` of `{service}`");
    }

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

/// Parameters given as JSON's text (`JsonText`, as the NATS transport hands a call's
/// body on, or a checked `Box<RawValue>`) are read straight into the handler's type;
/// what is accepted, and how a refusal reads, are those of the same JSON given as a
/// `Value`.
#[tokio::test(start_paused = true)]
async fn raw_json_parameters_are_read_as_their_value_would_be() -> anyhow::Result<()> {
    use serde_json::value::RawValue;
    let (host, _probe) = start().await?;
    let cases = [
        ("send", r#"{"to": "gus@example.com", "subject": "raw"}"#),
        // The last of two equal keys, as a `Value` keeps it.
        (
            "send",
            r#"{"to": "x@example.com", "to": "hal@example.com", "subject": "s"}"#,
        ),
        ("send", r#"{"to": 5, "subject": "x"}"#),
        ("send", r#"{"subject": "x"}"#),
        ("log", "7.0"),
        ("log", "7.5"),
        ("log", "\"7\""),
        ("seen", "null"),
        ("seen", "{}"),
        ("seen", "[]"),
    ];
    for (action, text) in cases {
        let value: Value = serde_json::from_str(text)?;
        let raw = RawValue::from_string(text.to_owned())?;
        let outcome = |r: koan::Result<koan::action::ActionOutput>| match r {
            Ok(out) => out.json().map(|mut v| {
                // Each call's own id, not the parameters' doing.
                if let Some(o) = v.as_object_mut() {
                    o.remove("correlation_id");
                }
                v
            }),
            Err(e) => Err(e),
        };
        let by_value = outcome(host.service("Mailer").action(action, value).execute().await);
        let by_raw = outcome(host.service("Mailer").action(action, raw).execute().await);
        let text_given = koan::action::JsonText::from(text.to_owned());
        let by_text = outcome(
            host.service("Mailer")
                .action(action, text_given)
                .execute()
                .await,
        );
        for by_text in [by_raw, by_text] {
            match (&by_value, &by_text) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "`{action}` with {text}"),
                (Err(a), Err(b)) => {
                    assert_eq!(a.kind(), b.kind(), "`{action}` with {text}");
                    assert_eq!(a.message(), b.message(), "`{action}` with {text}");
                }
                _ => panic!("`{action}` with {text}: {by_value:?} as a value, {by_text:?} as text"),
            }
        }
    }
    // And they did run: the raw `7.0` was logged as 7, like the value's.
    let seven = host
        .service("Mailer")
        .action("log", RawValue::from_string("7.0".to_owned())?)
        .execute()
        .await?
        .value::<u32>()?;
    assert_eq!(seven, 7);

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
