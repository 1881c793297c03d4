//! `koanctl`'s error paths, each with its exit code and message: an error the API
//! answers (3), bad local input (2), a URL with credentials or a query (2), no server
//! (4), and the token sent as a bearer header (refused without it or wrong, for
//! commands, health and the event stream alike; an empty `--token` is bad input). Hosts that misbehave are in `cli_hostile.rs`.

mod common;

use std::sync::atomic::Ordering;

use common::{Follower, Live, koanctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_an_api_error() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    for args in [
        &["info", "nope"][..],
        &["act", "nope", "x"],
        &["trigger", "nope"],
    ] {
        let run = live.run(args).await?;
        let err = run.api_error("unknown_service");
        assert!(err.contains("nope"), "{args:?}: {err}");
    }
    let run = live.run(&["act", "greeter", "nope"]).await?;
    run.api_error("unknown_action");
    let run = live
        .run(&["act", "greeter", "greet", "--params", r#"{"name":1}"#])
        .await?;
    run.api_error("invalid_parameters");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_local_input_exits_2() -> anyhow::Result<()> {
    let live = Live::start(None).await?;
    let run = live
        .run(&["act", "greeter", "greet", "--params", "{nope"])
        .await?;
    assert!(run.failed(2).contains("not valid JSON"), "{run:?}");
    let run = live
        .run(&["act", "greeter", "greet", "--params", "@/no/such/file.json"])
        .await?;
    assert!(run.failed(2).contains("/no/such/file.json"), "{run:?}");
    // Usage errors are clap's: exit 2 too.
    assert_eq!(live.run(&["act", "greeter"]).await?.code, Some(2));
    assert_eq!(live.run(&["frobnicate"]).await?.code, Some(2));
    // Call flags are checked as the host checks them, naming the flag as typed:
    // they came back as API errors (exit 3) naming query parameters and headers
    // (a probe).
    let long_id = "x".repeat(201);
    for (flags, says) in [
        (&["--timeout", "soon"][..], "--timeout"),
        (&["--timeout", "0s"], "--timeout"),
        (&["--no-wait", "--delay", "400d"], "365 days"),
        (&["--no-wait", "--at", "tomorrow"], "RFC 3339"),
        (&["--correlation-id", long_id.as_str()], "--correlation-id"),
        (&["--no-wait", "--idempotency-key", ""], "--idempotency-key"),
    ] {
        let mut args = vec!["act", "greeter", "greet"];
        args.extend_from_slice(flags);
        let run = live.run(&args).await?;
        assert!(run.failed(2).contains(says), "{flags:?}: {run:?}");
    }
    let run = live.run(&["jobs", "list", "--limit", "0"]).await?;
    assert!(run.failed(2).contains("--limit"), "{run:?}");
    assert_eq!(
        koanctl(&["--url", "not a url", "services"], &[])
            .await?
            .code,
        Some(2)
    );
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_with_credentials_or_a_query_is_a_usage_error() -> anyhow::Result<()> {
    // A server that would answer, so that only the refusal makes the run fail.
    let live = Live::start(None).await?;
    let base = live.api.base.trim_end_matches('/').to_owned();
    let host = base.trim_start_matches("http://");
    let with_password = format!("http://ada:s3cr3t@{host}");
    let with_query = format!("{base}/?x=1");
    for (url, says) in [
        (&with_password, "carries a user name or password"),
        (&with_query, "has a query (`?x=1`)"),
    ] {
        let run = koanctl(&["--url", url, "services"], &[]).await?;
        let err = run.failed(2);
        assert!(err.contains(says), "{url}: {err}");
        assert!(err.contains(&format!("`{base}/`")), "{url}: {err}");
        assert!(!err.contains("s3cr3t"), "{url}: {err}");
        let run = koanctl(&["services"], &[("KOAN_URL", url)]).await?;
        assert!(run.failed(2).contains(says), "{url}: {run:?}");
    }
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_exits_4_naming_the_url() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = koanctl(&["--url", &url, "services"], &[]).await?;
    let err = run.failed(4);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("--url") && err.contains("KOAN_URL"), "{err}");
    // KOAN_URL is read too.
    let run = koanctl(&["trigger", "x"], &[("KOAN_URL", &url)]).await?;
    assert!(
        run.failed(4).contains(&format!("127.0.0.1:{port}")),
        "{run:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_a_bearer_header() -> anyhow::Result<()> {
    let live = Live::start(Some("secret")).await?;
    let run = live
        .run(&["--token", "wrong", "trigger", "cleanup"])
        .await?;
    run.api_error("unauthorized");
    let run = live.run(&["trigger", "cleanup"]).await?;
    run.api_error("unauthorized");
    assert_eq!(live.seen.ticks.load(Ordering::SeqCst), 0);

    live.run(&["--token", "secret", "trigger", "cleanup"])
        .await?
        .ok();
    let url = live.api.base.clone();
    koanctl(
        &["--url", &url, "check-queue", "cleanup"],
        &[("KOAN_TOKEN", "secret")],
    )
    .await?
    .ok();
    assert_eq!(live.seen.ticks.load(Ordering::SeqCst), 1);
    assert_eq!(live.seen.queue_checks.load(Ordering::SeqCst), 1);

    let run = live.run(&["--token", "wrong", "events"]).await?;
    run.api_error("unauthorized");
    // Health reads the token for its details: a wrong one is refused there too, where
    // it got the anonymous answer, exit 0 (a probe).
    let run = live.run(&["--token", "wrong", "health"]).await?;
    let said = run.api_error("unauthorized");
    assert!(said.contains("not the one configured"), "{said}");
    let follower = Follower::spawn(&["--url", &url, "--token", "secret", "events"], &[])?;
    follower.connected().await?;
    follower.kill()?;
    live.stop().await
}

/// An explicitly empty token is a usage error naming the flag: an empty `--token`
/// fell back to the host's `KOAN_HTTP_TOKEN` without a word (or sent none), so
/// `--token "$TOKEN"` with the variable unset ran as another caller (a probe); so
/// did an empty `KOAN_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_is_a_usage_error() -> anyhow::Result<()> {
    let live = Live::start(Some("secret")).await?;
    let url = live.api.base.clone();
    let host_token = ("KOAN_HTTP_TOKEN", "secret");
    for (args, env) in [
        (
            &["--url", &url, "--token", "", "services"][..],
            &[host_token][..],
        ),
        (&["--url", &url, "--token=", "services"], &[host_token]),
        (&["--url", &url, "services", "--token", ""], &[host_token]),
        (
            &["--url", &url, "services"],
            &[host_token, ("KOAN_TOKEN", "")],
        ),
    ] {
        let run = koanctl(args, env).await?;
        let said = run.failed(2);
        assert!(
            said.contains("--token")
                && said.contains("KOAN_TOKEN set to nothing")
                && said.contains("@file"),
            "{args:?}: {run:?}"
        );
    }
    // Left out, the host's own token is sent to a loopback URL, as before.
    koanctl(&["--url", &url, "services"], &[host_token])
        .await?
        .ok();
    live.stop().await
}
