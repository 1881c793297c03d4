//! The tokenless (loopback) mode against browsers: cross-site requests and
//! rebound `Host` names are refused; the dashboard is sent with a CSP and
//! anti-framing headers; a CORS wildcard is a configuration error, not a panic.

use koan::config::Config;
use koan_http::HttpOptions;
use koan_test_support::PATIENCE;
use koan_test_support::http::{Api, EchoService, error_message, header, loopback, serve_echo};
use koan_test_support::raw::{exchange, head};
use reqwest::StatusCode;

const ACT: &str = "/api/services/echo/actions/echo";

/// POSTs `{}` to the echo action with the given header lines (`Host` included).
async fn post_raw(api: &Api, lines: &[&str]) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = format!("POST {ACT} HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n");
    for l in lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n{}");
    let a = exchange(api.server_addr(), req.as_bytes(), PATIENCE).await?;
    Ok((a.status, a.json()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cross_site_post_does_not_run_the_action() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    // The finding: a form-like POST from a rebinding page.
    let (status, body) = post_raw(
        &api,
        &[
            "Host: attacker.example",
            "Origin: http://attacker.example",
            "Content-Type: text/plain",
        ],
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    error_message(&body, "forbidden")?;

    let json = "Content-Type: application/json";
    // A page of another local origin (any dev server on another port) is another
    // origin too: before, any loopback `Origin` passed, and such a page triggered
    // services and retried dead jobs (found by a probe).
    let refused: [&[&str]; 8] = [
        &["Host: attacker.example", json],
        &["Host: 127.0.0.1.nip.io:8080", json],
        &["Host: 127.0.0.1", "Origin: https://attacker.example", json],
        &["Host: 127.0.0.1", "Origin: null", json],
        &["Host: localhost", "Sec-Fetch-Site: cross-site", json],
        &[
            "Host: 127.0.0.1:8080",
            "Origin: http://127.0.0.1:18690",
            "Content-Type: text/plain",
        ],
        &[
            "Host: [::1]:8080",
            "Origin: http://127.0.0.1:3000",
            "Sec-Fetch-Site: same-site",
            json,
        ],
        &["Host: 127.0.0.1:8080", "Sec-Fetch-Site: same-site", json],
    ];
    for lines in refused {
        let (status, body) = post_raw(&api, lines).await?;
        assert_eq!(status, 403, "{lines:?}: {body}");
        error_message(&body, "forbidden")?;
    }
    let allowed: [&[&str]; 4] = [
        &["Host: 127.0.0.1", json],
        &[
            "Host: localhost:8080",
            "Origin: http://localhost:8080",
            json,
        ],
        &[
            "Host: [::1]:8080",
            "Origin: http://[::1]:8080",
            "Sec-Fetch-Site: same-origin",
            json,
        ],
        &["Host: 127.0.0.2", "Sec-Fetch-Site: same-origin", json],
    ];
    for lines in allowed {
        let (status, body) = post_raw(&api, lines).await?;
        assert_eq!(status, 200, "{lines:?}: {body}");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_cannot_read_the_api_but_a_link_opens_the_dashboard() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    let addr = api.server_addr();
    let req = format!(
        "GET /api/services HTTP/1.1\r\nHost: attacker.example:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 403, "{a:?}");
    error_message(&a.json()?, "forbidden")?;
    // A cross-site fetch of an event stream is refused too…
    let req = head(
        "GET",
        "/api/events",
        &[
            "Sec-Fetch-Site: cross-site",
            "Sec-Fetch-Mode: cors",
            "Connection: close",
        ],
    );
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 403, "{a:?}");
    // …but following a link to the dashboard from another site works.
    let req = head(
        "GET",
        "/",
        &[
            "Sec-Fetch-Site: cross-site",
            "Sec-Fetch-Mode: navigate",
            "Connection: close",
        ],
    );
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 200, "{a:?}");
    // A frame's navigation is not a link followed: a foreign page held event
    // streams open in frames (found by a probe).
    let req = head(
        "GET",
        "/api/events",
        &[
            "Sec-Fetch-Site: cross-site",
            "Sec-Fetch-Mode: navigate",
            "Sec-Fetch-Dest: iframe",
            "Connection: close",
        ],
    );
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 403, "{a:?}");
    api.stop().await
}

/// API answers, errors too, are kept by no cache and not sniffed (they had
/// neither header: a probe); the dashboard's page keeps its own `no-cache`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_stored_by_caches() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    let client = reqwest::Client::new();
    for path in [
        "/api/services",
        "/api/jobs",
        "/api/services/nope/status",
        "/health",
    ] {
        let r = client.get(api.url(path)).send().await?;
        assert_eq!(
            header(r.headers(), "cache-control"),
            Some("no-store"),
            "{path}"
        );
        assert_eq!(
            header(r.headers(), "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // An action's answer (served without the router), and a refusal.
    for (content_type, status) in [("application/json", 200), ("text/plain", 415)] {
        let r = client
            .post(api.url(ACT))
            .header("content-type", content_type)
            .body("{}")
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), status, "{content_type}");
        assert_eq!(
            header(r.headers(), "cache-control"),
            Some("no-store"),
            "{content_type}"
        );
        assert_eq!(
            header(r.headers(), "x-content-type-options"),
            Some("nosniff")
        );
    }
    let page = client.get(api.url("/")).send().await?;
    assert_eq!(header(page.headers(), "cache-control"), Some("no-cache"));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_other_names_and_origins_are_served() -> anyhow::Result<()> {
    let api = serve_echo(loopback().with_token("s3cret")).await?;
    let (status, body) = post_raw(
        &api,
        &[
            "Host: koan.internal.example",
            "Origin: https://ops.example.com",
            "Content-Type: application/json",
            "Authorization: Bearer s3cret",
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_listed_for_cors_may_call_without_a_token() -> anyhow::Result<()> {
    let options = HttpOptions {
        cors_origins: vec!["https://ops.example.com".into()],
        ..loopback()
    };
    let api = serve_echo(options).await?;
    let (status, body) = post_raw(
        &api,
        &[
            "Host: 127.0.0.1",
            "Origin: https://ops.example.com",
            "Sec-Fetch-Site: cross-site",
            "Content-Type: application/json",
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_sent_with_a_csp_and_cannot_be_framed() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    let resp = koan_test_support::within("the dashboard", api.get("/").send()).await??;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    let csp = header(&h, "content-security-policy")
        .unwrap_or_default()
        .to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&h, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));

    // Its scripts and stylesheet: typed, under the same policy, and nothing else.
    for (path, ty) in [
        ("/assets/core.js", "text/javascript; charset=utf-8"),
        ("/assets/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let resp = koan_test_support::within(path, api.get(path).send()).await??;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(resp.headers(), "content-type"), Some(ty), "{path}");
        assert_eq!(
            header(resp.headers(), "x-content-type-options"),
            Some("nosniff")
        );
        assert!(header(resp.headers(), "content-security-policy").is_some());
    }
    let resp = koan_test_support::within("an unknown asset", api.get("/assets/..%2Fsecret").send())
        .await??;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cors_wildcard_is_a_configuration_error_not_a_panic() -> anyhow::Result<()> {
    let config = Config::builder()
        .toml("test", "[koan.http]\ncors_origins = [\"*\"]\n")?
        .build();
    let err = match HttpOptions::from_config(&config) {
        Ok(o) => anyhow::bail!("a wildcard origin was accepted: {o:?}"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), koan::error::ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.contains("cors_origins") && text.contains("https://"),
        "{text}"
    );

    // Options built in code are checked when serving, instead of panicking.
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    koan_test_support::within("startup", host.started()).await??;
    let options = HttpOptions {
        cors_origins: vec!["*".into()],
        ..loopback()
    };
    let served = tokio::spawn(koan_http::serve(host.clone(), options));
    match koan_test_support::within("serve", served).await? {
        Ok(Err(e)) => assert!(e.to_string().contains("cors_origins"), "{e}"),
        Ok(Ok(s)) => anyhow::bail!("served on {} with a wildcard origin", s.local_addr()),
        Err(join) => anyhow::bail!("serving panicked: {join}"),
    }
    // `router()` itself never panics on it either.
    let _ = koan_http::router(
        host.clone(),
        HttpOptions {
            cors_origins: vec!["*".into()],
            ..loopback()
        },
    );
    host.shutdown();
    koan_test_support::within("the host to stop", host.wait()).await?;
    Ok(())
}
