//! `koanctl` against hosts that misbehave (a fake server on a loopback port): one that
//! takes the request and never answers, one that stalls mid-body, one whose answer
//! never ends, and event streams that go quiet, close, or never end a line. Each ends
//! in a clear error instead of a hang or a process that grows without bound.

mod common;

use common::fake::{Fake, Reply};
use common::koanctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_answers_runs_out_the_request_deadline() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Silent).await?;
    let url = fake.url.as_str();
    let run = koanctl(&["--url", url, "--request-timeout", "1s", "services"], &[]).await?;
    let err = run.failed(4);
    assert!(
        err.contains(&format!("no answer from {url}/api/services within 1s")),
        "{err}"
    );
    assert!(err.contains("--request-timeout"), "{err}");

    // The same from the environment.
    let run = koanctl(
        &["--url", url, "jobs", "show", "j1"],
        &[("KOAN_REQUEST_TIMEOUT", "1s")],
    )
    .await?;
    assert!(run.failed(4).contains("within 1s"), "{run:?}");

    // A call waiting with `--timeout T` waits T plus the request deadline.
    let run = koanctl(
        &[
            "--url",
            url,
            "--request-timeout",
            "1s",
            "act",
            "S",
            "a",
            "--timeout",
            "1s",
        ],
        &[],
    )
    .await?;
    let err = run.failed(4);
    assert!(err.contains("/api/services/S/actions/a"), "{err}");
    assert!(err.contains("within 2s"), "{err}");
    assert!(err.contains("--no-wait"), "{err}");

    // The event stream's head comes within the deadline too.
    let run = koanctl(&["--url", url, "--request-timeout", "1s", "events"], &[]).await?;
    assert!(run.failed(4).contains("within 1s"), "{run:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stalls_mid_body_runs_out_the_request_deadline() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::StallMidBody).await?;
    let run = koanctl(
        &[
            "--url",
            &fake.url,
            "--request-timeout",
            "1s",
            "jobs",
            "list",
        ],
        &[],
    )
    .await?;
    let err = run.failed(4);
    assert!(
        err.contains(&format!("no answer from {}/api/jobs within 1s", fake.url)),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_of_no_time_is_a_usage_error() -> anyhow::Result<()> {
    for bad in ["0s", "soon", "1x"] {
        let run = koanctl(&["--request-timeout", bad, "services"], &[]).await?;
        assert!(
            run.failed(2).contains("--request-timeout"),
            "{bad}: {run:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_at_16_mib() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Endless {
        content_type: "application/json",
        prefix: b"[",
        filler: b"0,".repeat(32 * 1024),
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "services"], &[]).await?;
    let err = run.failed(1);
    assert!(
        err.contains(&format!(
            "the answer from {}/api/services is larger than 16 MiB",
            fake.url
        )),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_line_that_never_ends_is_cut_at_16_mib() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Endless {
        content_type: "text/event-stream",
        prefix: b"data: ",
        filler: vec![b'x'; 64 * 1024],
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "events"], &[]).await?;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(run.stderr.contains("larger than 16 MiB"), "{run:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_gone_quiet_ends_after_the_idle_limit() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Stream {
        body: b": keep-alive\n\n".to_vec(),
        close: false,
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "events", "--idle-timeout", "1s"], &[]).await?;
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("{}/api/events sent nothing for 1s", fake.url)),
        "{run:#?}"
    );
    assert!(run.stderr.contains("--idle-timeout"), "{run:#?}");
    let run = koanctl(
        &["--url", &fake.url, "events"],
        &[("KOAN_EVENTS_IDLE_TIMEOUT", "1s")],
    )
    .await?;
    assert_eq!(run.code, Some(4), "{run:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_the_host_closes_is_an_error() -> anyhow::Result<()> {
    let event = r#"{"service":"S","event":"E","correlation_id":null,"time":"2025-01-02T03:04:05Z","seq":1,"payload":1}"#;
    let body = format!("event: E\ndata: {event}\n\n").into_bytes();
    let fake = Fake::always(move || Reply::Stream {
        body: body.clone(),
        close: true,
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "events"], &[]).await?;
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert_eq!(run.stdout, "2025-01-02T03:04:05Z  S  E  -  1\n", "{run:#?}");
    assert!(
        run.stderr
            .contains(&format!("{}/api/events closed the event stream", fake.url)),
        "{run:#?}"
    );
    Ok(())
}

/// The host's notice that events were missed is a warning on stderr, not an event
/// on stdout: it printed as `-  -  -  -  null`, and `--json` printed it as a
/// document like an event's (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_notice_is_a_warning_not_an_event() -> anyhow::Result<()> {
    let event = r#"{"service":"S","event":"E","correlation_id":null,"time":"2025-01-02T03:04:05Z","seq":1,"payload":1}"#;
    let missed = r#"{"after":1,"message":"events after the one last sent were no longer kept: some were missed"}"#;
    let body = format!("data: {event}\n\nevent: missed\ndata: {missed}\n\n").into_bytes();
    let fake = Fake::always(move || Reply::Stream {
        body: body.clone(),
        close: true,
    })
    .await?;
    for json in [false, true] {
        let mut args = vec!["--url", fake.url.as_str(), "events"];
        if json {
            args.push("--json");
        }
        let run = koanctl(&args, &[]).await?;
        assert_eq!(run.code, Some(4), "{run:#?}");
        assert_eq!(run.stdout.lines().count(), 1, "the event alone: {run:#?}");
        assert!(
            run.stderr
                .contains("warning: events after the one last sent were no longer kept: some were missed (after event 1)"),
            "{run:#?}"
        );
    }
    Ok(())
}

/// An event of 1.1 MB (a service may emit one) is shown, and the stream goes on:
/// until round 48 the first such event ended `koanctl events` (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_megabyte_is_shown_and_the_stream_goes_on() -> anyhow::Result<()> {
    let big = "x".repeat(1_100_000);
    let event = |seq: u32, payload: &str| {
        format!(
            r#"event: E
data: {{"service":"S","event":"E","correlation_id":null,"time":"2025-01-02T03:04:05Z","seq":{seq},"payload":"{payload}"}}

"#
        )
    };
    let body = format!("{}{}", event(1, &big), event(2, "small")).into_bytes();
    let fake = Fake::always(move || Reply::Stream {
        body: body.clone(),
        close: true,
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "events", "--json"], &[]).await?;
    assert_eq!(run.code, Some(4), "closed by the host: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines[0].len() > 1_100_000, "the whole event");
    assert!(lines[1].contains("small"), "{}", lines[1]);
    Ok(())
}

/// A server on the port that answers with something that is not HTTP: exit 1,
/// saying so, not "cannot reach … is the host running?" (exit 4), which sent an
/// operator looking for a stopped host (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_http_is_said_so() -> anyhow::Result<()> {
    let fake = Fake::always(|| Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec())).await?;
    let run = koanctl(&["--url", &fake.url, "services"], &[]).await?;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("not HTTP"), "{run:#?}");
    assert!(!run.stderr.contains("is the host running"), "{run:#?}");
    Ok(())
}
