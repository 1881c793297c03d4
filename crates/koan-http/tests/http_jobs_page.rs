//! One page of `GET /api/jobs` holds at most about 4 MB of jobs, however large the
//! `limit`: past it the page ends early and its `next_cursor` goes on, so every
//! job is still listed once. Before, 500 jobs of 64 KiB parameters made one page
//! 33 MB, and 16 such listings at once took a host from 33 MB to 1 GB (found by a
//! probe).
//!
//! A listing's and counts' `service` filter finds a service this host runs
//! whatever its case, as every other route does.

use std::collections::HashSet;

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, call};
use reqwest::StatusCode;
use serde_json::Value;

#[koan::service]
#[derive(Default)]
struct Notes;

#[koan::actions]
impl Notes {
    #[action("note")]
    async fn note(&self, text: String, _cx: &ActionContext) -> Result<usize, BoxError> {
        Ok(text.len())
    }
}

impl BackgroundService for Notes {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Jobs stored, each with 60,000 characters of parameters.
const JOBS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_jobs_ends_early_and_its_cursor_goes_on() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    let text = Value::String("n".repeat(60_000));
    for _ in 0..JOBS {
        let (status, body) = call(
            api.post("/api/services/notes/actions/note?wait=false&delay=1h")
                .json(&text),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/jobs?limit=500&cursor={c}"),
            None => "/api/jobs?limit=500".to_owned(),
        };
        let resp = api.get(&url).send().await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.bytes().await?;
        assert!(
            bytes.len() < 4 * 1024 * 1024 + 100_000,
            "page {pages}: {} bytes",
            bytes.len()
        );
        let page: Value = serde_json::from_slice(&bytes)?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            let id = job["id"].as_str().unwrap_or_default().to_owned();
            assert!(seen.insert(id), "listed twice: {}", job["id"]);
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), JOBS);
    assert!(pages >= 2, "one page held {JOBS} jobs of 60 KB");
    api.stop().await
}

/// `?service=` in another case lists and counts the service's jobs: a lowercase
/// name matched nothing (and `retry-dead` retried none of 3 dead; a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_filter_in_any_case_finds_the_service_jobs() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    for _ in 0..2 {
        let (status, body) = call(
            api.post("/api/services/notes/actions/note?wait=false&delay=1h")
                .json(&"n"),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    for spelling in ["Notes", "notes", "NOTES"] {
        let (_, page) = call(api.get(&format!("/api/jobs?service={spelling}"))).await?;
        assert_eq!(
            page["jobs"].as_array().map(Vec::len),
            Some(2),
            "{spelling}: {page}"
        );
        let (_, counts) = call(api.get(&format!("/api/jobs/counts?service={spelling}"))).await?;
        assert_eq!(counts["counts"]["scheduled"], 2, "{spelling}: {counts}");
    }
    // A name no service here has is kept as given (a renamed service's jobs),
    // with a note that no service has it (a typo read as "no jobs"; a re-probe).
    let (_, none) = call(api.get("/api/jobs?service=Gone")).await?;
    assert_eq!(none["jobs"], serde_json::json!([]), "{none}");
    for url in ["/api/jobs?service=Gone", "/api/jobs/counts?service=Gone"] {
        let (_, body) = call(api.get(url)).await?;
        let note = body["note"].as_str().unwrap_or_default();
        assert!(note.contains("no service named `Gone`"), "{url}: {body}");
    }
    let (_, body) = call(api.post("/api/jobs/retry-dead?service=Gone")).await?;
    assert!(body["note"].is_string(), "{body}");
    let (_, known) = call(api.get("/api/jobs/counts?service=notes")).await?;
    assert!(known.get("note").is_none(), "{known}");
    api.stop().await
}

/// The routes of one job take no query parameter, and refuse one: `retry?delay=1h`
/// ran the job at once, `cancel?force=true` and `?verbose=1` were taken without a
/// word (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_of_one_job_refuse_a_query_parameter() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    let (status, body) = call(
        api.post("/api/services/notes/actions/note?wait=false&delay=1h")
            .json(&"n"),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let asked = [
        api.get(&format!("/api/jobs/{id}?verbose=1")),
        api.get(&format!("/api/actions/{id}?verbose=1")),
        api.post(&format!("/api/jobs/{id}/retry?delay=1h")),
        api.post(&format!("/api/jobs/{id}/cancel?force=true")),
        api.client
            .delete(api.url(&format!("/api/jobs/{id}?force=true"))),
    ];
    for request in asked {
        let (status, body) = call(request).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_parameters", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown query parameter")),
            "{body}"
        );
    }
    // Nothing was done: the job is still scheduled.
    let (_, rec) = call(api.get(&format!("/api/jobs/{id}"))).await?;
    assert_eq!(rec["state"], "scheduled", "{rec}");
    api.stop().await
}

/// A `cursor` that is no page's `next_cursor` is refused: upper case answered an
/// empty last page (the rest lost), a trailing space repeated a job, `bogus`
/// answered page 1 again (a client looping for ever; found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_no_page_gave_is_refused() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    for _ in 0..3 {
        let (status, body) = call(
            api.post("/api/services/notes/actions/note?wait=false&delay=1h")
                .json(&"n"),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (_, first) = call(api.get("/api/jobs?limit=1")).await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    let (status, next) = call(api.get(&format!("/api/jobs?limit=1&cursor={cursor}"))).await?;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["jobs"].as_array().map(Vec::len), Some(1), "{next}");
    for (bad, says) in [
        (cursor.to_uppercase(), "written otherwise"),
        (format!("{cursor}%20"), "names no job"),
        ("bogus".to_owned(), "names no job"),
    ] {
        let (status, body) = call(api.get(&format!("/api/jobs?limit=1&cursor={bad}"))).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(says)),
            "{bad}: {body}"
        );
    }
    api.stop().await
}
