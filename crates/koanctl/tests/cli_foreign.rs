//! `koanctl` against a server that is not a koan host (a fake on a loopback port):
//! `jobs delete` answered `200 {}`, or a bare `204`, is not taken for a deletion, and an error page
//! that is not koan's JSON error asks whether `--url` points at a koan host.

mod common;

use common::fake::{Fake, Reply};
use common::koanctl;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_answered_otherwise_than_204_is_refused() -> anyhow::Result<()> {
    // A server answering `200 {}` to everything: `jobs delete` printed `deleted J`,
    // exit 0, where every other command refused it (a probe).
    for (status, body, shows) in [
        (200, json!({}), "is 200 OK, not 204 No Content"),
        (202, json!({ "deleted": true }), "is 202 Accepted, not 204"),
    ] {
        let fake = Fake::always(move || Reply::Body {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        })
        .await?;
        let run = koanctl(&["--url", &fake.url, "jobs", "delete", "J"], &[]).await?;
        let err = run.failed(1);
        assert!(
            err.starts_with(&format!(
                "error: the answer to DELETE {}/api/jobs/J {shows}",
                fake.url
            )),
            "{err}"
        );
        assert!(
            err.contains("does --url (or KOAN_URL) point at a koan host?"),
            "{err}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_204_is_not_taken_for_a_deletion() -> anyhow::Result<()> {
    // A server answering a bare `204` to everything: `jobs delete` printed
    // `deleted J`, exit 0 (a probe). A koan host's 204 names the job deleted.
    let fake = Fake::always(|| Reply::Body {
        status: 204,
        content_type: "text/plain",
        body: Vec::new(),
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "jobs", "delete", "J"], &[]).await?;
    let err = run.failed(1);
    assert!(
        err.starts_with(&format!(
            "error: the answer to DELETE {}/api/jobs/J is 204 No Content without the header \
             `Koan-Job-Id` naming the job deleted",
            fake.url
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the server at {} answered 204 but is not a koan host?",
            fake.url
        )),
        "{err}"
    );

    // One naming another job did not delete this one.
    let fake = Fake::always(|| {
        Reply::Raw(
            b"HTTP/1.1 204 No Content\r\nkoan-job-id: K\r\nconnection: close\r\n\r\n".to_vec(),
        )
    })
    .await?;
    let run = koanctl(&["--url", &fake.url, "jobs", "delete", "J"], &[]).await?;
    let err = run.failed(1);
    assert!(
        err.contains("is 204 No Content naming the job `K` deleted, not `J`"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_page_that_is_not_koan_s_asks_about_the_url() -> anyhow::Result<()> {
    let page = "<!DOCTYPE html><html><body>Not Found</body></html>";
    let fake = Fake::start(move |line| {
        let path = line.split_once(' ').map_or(line, |(_, p)| p);
        let json = |status, body: Value| Reply::Body {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        };
        match path {
            "/api/services/S/status" => json(
                404,
                json!({ "error": "unknown_service", "message": "no service `S`" }),
            ),
            "/api/jobs" => json(500, json!({ "detail": "oops" })),
            "/health" => Reply::Body {
                status: 501,
                content_type: "text/html",
                body: Vec::new(),
            },
            _ => Reply::Body {
                status: 404,
                content_type: "text/html",
                body: page.as_bytes().to_vec(),
            },
        }
    })
    .await?;
    let hint = "hint: that is not a koan error";
    // It printed `error: http_404: <!DOCTYPE…`, exit 3, and no more (a probe).
    for (args, kind) in [
        (&["services"][..], "http_404: <!DOCTYPE html>"),
        (&["jobs", "delete", "J"], "http_404: <!DOCTYPE html>"),
        (&["events"], "http_404: <!DOCTYPE html>"),
        (&["jobs", "list"], "http_500: the server answered 500"),
        (&["health"], "http_501: the server answered 501"),
    ] {
        let mut all = vec!["--url", fake.url.as_str()];
        all.extend_from_slice(args);
        let run = koanctl(&all, &[]).await?;
        let err = run.failed(3);
        assert!(
            err.starts_with(&format!("error: {kind}")),
            "{args:?}: {err}"
        );
        assert!(err.contains(hint), "{args:?}: {err}");
        assert!(
            err.contains("does --url (or KOAN_URL) point at a koan host"),
            "{err}"
        );
    }
    // A koan error is shown as it is.
    let run = koanctl(&["--url", &fake.url, "status", "S"], &[]).await?;
    let err = run.api_error("unknown_service");
    assert!(!err.contains("hint"), "{err}");
    Ok(())
}
