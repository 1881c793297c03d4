//! The action route (`POST /api/services/{name}/actions/{action}`) is answered by
//! the server's admission itself when neither name needs decoding, and by the router
//! otherwise. Both must give the same answer, byte for byte: each request here is
//! sent twice, once with the names as they are (admission answers it) and once with
//! their first letters percent-encoded (the router decodes them to the same names),
//! and the two answers' status, headers (in order, but `date`) and bodies must be equal.

use koan_http::HttpOptions;
use koan_test_support::http::{Api, loopback, serve_greeter_and_cleanup};
use koan_test_support::raw::{RawAnswer, exchange, head};
use koan_test_support::{PATIENCE, within};

/// One request: the service and action as sent, a query (with its `?`), extra
/// header lines and a body (sent as JSON with its length, when `Some`).
struct Case {
    what: &'static str,
    service: &'static str,
    action: &'static str,
    query: &'static str,
    headers: &'static [&'static str],
    body: Option<&'static str>,
    status: u16,
}

const fn case(what: &'static str, service: &'static str, action: &'static str) -> Case {
    Case {
        what,
        service,
        action,
        query: "",
        headers: &[],
        body: Some(r#"{"name":"Ann","times":2}"#),
        status: 200,
    }
}

/// `name` with its first byte percent-encoded: the same name once decoded.
fn encoded(name: &str) -> String {
    match name.as_bytes().first() {
        Some(b) => format!("%{b:02X}{}", &name[1..]),
        None => String::new(),
    }
}

fn request(path: &str, c: &Case) -> Vec<u8> {
    let mut lines: Vec<String> = c.headers.iter().map(|h| (*h).to_owned()).collect();
    if let Some(body) = c.body {
        lines.push("Content-Type: application/json".to_owned());
        lines.push(format!("Content-Length: {}", body.len()));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut out = head("POST", &format!("{path}{}", c.query), &lines).into_bytes();
    out.extend_from_slice(c.body.unwrap_or_default().as_bytes());
    out
}

/// The answer without its `date` (the time it was sent).
fn dateless(mut a: RawAnswer) -> RawAnswer {
    a.headers.retain(|(n, _)| n != "date");
    a
}

/// The answer without the correlation id made for it (header, body and length).
fn without_made_id(a: &mut RawAnswer) {
    a.headers
        .retain(|(n, _)| n != "x-correlation-id" && n != "content-length");
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&a.body) {
        if let Some(o) = v.as_object_mut() {
            o.remove("correlation_id");
        }
        a.body = serde_json::to_vec(&v).unwrap_or_default();
    }
}

async fn send(api: &Api, path: &str, c: &Case) -> anyhow::Result<RawAnswer> {
    let answer = exchange(api.server_addr(), &request(path, c), PATIENCE).await?;
    Ok(dateless(answer))
}

async fn same_answers(api: &Api, cases: &[Case]) -> anyhow::Result<()> {
    for c in cases {
        let plain = format!("/api/services/{}/actions/{}", c.service, c.action);
        let routed = format!(
            "/api/services/{}/actions/{}",
            encoded(c.service),
            encoded(c.action)
        );
        let mut fast = send(api, &plain, c).await?;
        let mut router = send(api, &routed, c).await?;
        // An id made for the call (none given) differs between two calls.
        if !c.headers.iter().any(|h| h.starts_with("X-Correlation-Id")) {
            for a in [&mut fast, &mut router] {
                without_made_id(a);
            }
        }
        let text = |a: &RawAnswer| String::from_utf8_lossy(&a.body).into_owned();
        assert_eq!(fast.status, c.status, "{}: {}", c.what, text(&fast));
        assert_eq!(fast.status, router.status, "{}: status", c.what);
        assert_eq!(fast.headers, router.headers, "{}: headers", c.what);
        assert_eq!(text(&fast), text(&router), "{}: body", c.what);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_answers_the_action_route_as_the_router_does() -> anyhow::Result<()> {
    let options = HttpOptions {
        cors_origins: vec!["http://app.example".to_owned()],
        body_limit: 256,
        ..loopback()
    };
    let (api, _) = serve_greeter_and_cleanup(options).await?;
    let big: &'static str =
        Box::leak(format!(r#"{{"name":"{}","times":1}}"#, "a".repeat(300)).into());
    let cases = [
        Case {
            headers: &["X-Correlation-Id: c-1"],
            ..case("greets", "Greeter", "greet")
        },
        Case {
            headers: &["X-Correlation-Id: c-2", "Origin: http://app.example"],
            ..case("greets a listed origin (CORS headers)", "greeter", "greet")
        },
        Case {
            query: "?priority=3&wait=true",
            headers: &["X-Correlation-Id: c-3"],
            body: None,
            ..case("whoami without a body", "Greeter", "whoami")
        },
        Case {
            headers: &["X-Correlation-Id: c-4"],
            body: Some("  "),
            ..case("whoami with a blank body", "GREETER", "whoami")
        },
        Case {
            status: 404,
            ..case("an unknown service", "Nope", "greet")
        },
        Case {
            status: 404,
            ..case("an unknown action", "Greeter", "nope")
        },
        Case {
            body: Some(r#"{"name":"#),
            status: 400,
            ..case("a body that is not JSON", "Greeter", "greet")
        },
        Case {
            body: Some(r#"{"name":5,"times":"x"}"#),
            status: 400,
            ..case("parameters of the wrong types", "Greeter", "greet")
        },
        Case {
            body: None,
            status: 400,
            ..case("no parameters where some are needed", "Greeter", "greet")
        },
        Case {
            query: "?timeout=soon",
            status: 400,
            ..case("an invalid timeout", "Greeter", "greet")
        },
        Case {
            query: "?timeout=0s",
            status: 400,
            ..case("a zero timeout", "Greeter", "greet")
        },
        Case {
            query: "?priority=high",
            status: 400,
            ..case("an invalid priority", "Greeter", "greet")
        },
        Case {
            query: "?bogus=1",
            status: 400,
            ..case("an unknown query parameter", "Greeter", "greet")
        },
        Case {
            query: "?token=x",
            status: 400,
            ..case("a token in the query", "Greeter", "greet")
        },
        Case {
            query: "?bogus=1",
            body: Some("{"),
            status: 400,
            ..case(
                "an unknown query parameter and a bad body",
                "Greeter",
                "greet",
            )
        },
        Case {
            query: "?priority=high",
            body: Some("{"),
            status: 400,
            ..case("an invalid priority and a bad body", "Greeter", "greet")
        },
        Case {
            headers: &["X-Correlation-Id: a\tb"],
            status: 400,
            ..case("a correlation id with a tab", "Greeter", "greet")
        },
        Case {
            body: Some(big),
            status: 413,
            ..case("a body over the limit", "Greeter", "greet")
        },
        Case {
            headers: &["Origin: http://evil.example"],
            status: 403,
            ..case("a foreign origin", "Greeter", "greet")
        },
        Case {
            headers: &["Content-Type: text/plain", "Content-Length: 2"],
            body: None,
            status: 415,
            ..case("a body that is not declared JSON", "Greeter", "greet")
        },
    ];
    within("the answers", same_answers(&api, &cases)).await??;
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_admission_answers_the_action_route_as_the_router_does() -> anyhow::Result<()>
{
    let (api, _) = serve_greeter_and_cleanup(loopback().with_token("s3cret")).await?;
    let cases = [
        Case {
            headers: &["Authorization: Bearer s3cret", "X-Correlation-Id: t-1"],
            ..case("greets with the token", "Greeter", "greet")
        },
        Case {
            status: 401,
            ..case("no token", "Greeter", "greet")
        },
        Case {
            headers: &["Authorization: Bearer wrong"],
            status: 401,
            ..case("a wrong token", "Greeter", "greet")
        },
        Case {
            headers: &["Authorization: Bearer s3cret"],
            status: 404,
            ..case("an unknown service with the token", "Nope", "greet")
        },
    ];
    within("the answers", same_answers(&api, &cases)).await??;
    api.stop().await
}
