//! `act`, `call` and the pokes: running actions from the command line.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use crate::answers::{require, require_part};
use crate::cli::{ActArgs, CallArgs};
use crate::client::{Client, DEADLINE_HINT, Failure, check};
use crate::commands::{emit, emit_json};
use crate::deadline;
use crate::output::{self, field, fields};
use crate::params::{self, JsonText};
use crate::spinner::Spinner;

pub(crate) async fn act(client: &Client, args: ActArgs, json: bool) -> anyhow::Result<()> {
    let params = args.params.as_deref().map(params::read).transpose()?;
    let segments = ["api", "services", &args.name, "actions", &args.action];
    let label = format!("{}/{}", args.name, args.action);
    call(
        client,
        &segments,
        params,
        &args.call,
        &label,
        json,
        |body, what| require(body, &["service", "action", "result"], what),
        |body| output::result(body.get("result").unwrap_or(&Value::Null)),
    )
    .await
}

/// `trigger`, `check-queue`, `process-batch`.
pub(crate) async fn poke(
    client: &Client,
    name: &str,
    route: &str,
    body: Option<Value>,
    opts: &CallArgs,
    json: bool,
) -> anyhow::Result<()> {
    let segments = ["api", "services", name, route];
    let label = format!("{name} {route}");
    let body = body.as_ref().map(JsonText::of);
    // The built-in poke answers with the run that served it; an action the service
    // declares under the route's name, with its own result.
    let promise = |body: &Value, what: &str| {
        require(body, &["service", "result"], what)?;
        match body["result"].get("run") {
            Some(run) => require_part(run, "result.run", &["outcome", "duration_ms"], what),
            None => Ok(()),
        }
    };
    call(
        client,
        &segments,
        body,
        opts,
        &label,
        json,
        promise,
        |body| {
            let svc = body.get("service").and_then(Value::as_str).unwrap_or(name);
            let result = body.get("result").unwrap_or(&Value::Null);
            let Some(run) = result.get("run") else {
                return output::result(result);
            };
            let mut line = format!(
                "{svc}: {route} run {} in {} ms",
                match run.get("outcome").and_then(Value::as_str) {
                    Some("success") => "succeeded".to_owned(),
                    Some(other) => other.to_owned(),
                    None => "finished".to_owned(),
                },
                field(run, "duration_ms"),
            );
            if result.get("coalesced") == Some(&Value::Bool(true)) {
                line.push_str(" (merged into a run already due)");
            }
            Some(line)
        },
    )
    .await
}

/// How long to wait for the answer to a call, and what to say when it does not come:
/// the request deadline, plus the call's `--timeout` when the server waits for the work.
fn answer_deadline(request: Duration, opts: &CallArgs) -> (Duration, String) {
    let timeout = opts
        .timeout
        .as_deref()
        .and_then(|t| deadline::parse(t).ok());
    match timeout {
        Some(t) if !opts.no_wait => (
            t.checked_add(request).unwrap_or(Duration::MAX),
            format!(
                "that is --timeout {} plus --request-timeout {}; the work may still run \
                 or have finished: call with --no-wait for a job to follow",
                deadline::show(t),
                deadline::show(request)
            ),
        ),
        _ if !opts.no_wait => (
            request,
            "the work may still run or have finished; give the call a --timeout (koanctl \
             waits that much longer), or call with --no-wait for a job to follow"
                .to_owned(),
        ),
        _ => (request, DEADLINE_HINT.to_owned()),
    }
}

/// POSTs an action call, waiting (with a spinner) or not, and prints the answer:
/// with `--no-wait` the job's id and status URL, otherwise what `render` makes of an
/// answer that `promise` (given the answer and the request, `POST http://…`) found to
/// be what the API promises.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn call(
    client: &Client,
    segments: &[&str],
    body: Option<JsonText>,
    opts: &CallArgs,
    label: &str,
    json: bool,
    promise: impl FnOnce(&Value, &str) -> Result<(), Failure>,
    render: impl FnOnce(&Value) -> Option<String>,
) -> anyhow::Result<()> {
    let mut url = client.url(segments);
    {
        let mut q = url.query_pairs_mut();
        if let Some(p) = opts.priority {
            q.append_pair("priority", &p.to_string());
        }
        if let Some(t) = &opts.timeout {
            q.append_pair("timeout", t);
        }
        // Said either way: the routes disagree by default (`trigger`, `check-queue` and
        // `process-batch` hand the work over; `actions/{action}` waits).
        q.append_pair("wait", if opts.no_wait { "false" } else { "true" });
        if let Some(d) = &opts.delay {
            q.append_pair("delay", d);
        }
        if let Some(at) = &opts.at {
            q.append_pair("at", at);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut req = client.request(Method::POST, url.clone());
    if let Some(cid) = &opts.correlation_id {
        req = req.header("x-correlation-id", cid);
    }
    if let Some(key) = &opts.idempotency_key {
        req = req.header("idempotency-key", key);
    }
    // The text as the operator wrote it (checked in `params`), not a re-serialised
    // copy of it.
    req = match body {
        Some(b) => req
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(b.into_string()),
        None => req,
    };
    let (limit, mut hint) = answer_deadline(client.deadline(), opts);
    if let Some(cid) = &opts.correlation_id {
        // Given up on, the call is found by the id it was sent with (a probe).
        hint.push_str(&format!(
            "; look for it by its correlation id in the events and logs\ncorrelation id: {cid}"
        ));
    }
    let mut spinner = if opts.no_wait {
        None
    } else {
        Some(Spinner::start(format!("waiting for {label}")))
    };
    let answer = client.send_within(&url, req, limit, &hint).await;
    if let Some(s) = spinner.as_mut() {
        s.stop();
    }
    let answer = answer?;
    // The call's id, for an error: the one the host answered with, else the one sent.
    let cid = answer
        .head
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .or(opts.correlation_id.as_deref());
    let body = check(answer.status, answer.body).map_err(|f| f.with_correlation(cid))?;
    let what = format!("POST {url}");
    if opts.no_wait {
        require(&body, &["id", "correlation_id", "status_url"], &what)?;
    } else {
        promise(&body, &what)?;
    }
    if json {
        return Ok(emit_json(&body)?);
    }
    if opts.no_wait {
        let mut status_url = field(&body, "status_url");
        if status_url.starts_with('/') {
            let path: Vec<&str> = status_url.trim_start_matches('/').split('/').collect();
            status_url = client.url(&path).to_string();
        }
        let mut shown = vec![
            ("id", field(&body, "id")),
            ("correlation_id", field(&body, "correlation_id")),
            ("status_url", status_url),
        ];
        // A repeat under an idempotency key stored nothing: said, where it printed
        // the first job as if new (and a `--delay` it did not apply; found by a
        // probe).
        if body.get("created").and_then(Value::as_bool) == Some(false) {
            shown.push((
                "note",
                "a repeat under this idempotency key: nothing new was stored (its delay, if any, is the first job's)".to_owned(),
            ));
        }
        return Ok(emit(&fields(&shown))?);
    }
    if let Some(text) = render(&body) {
        emit(&text)?;
    }
    Ok(())
}
