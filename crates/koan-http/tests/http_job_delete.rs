//! `DELETE /api/jobs/{id}` answers `204 No Content` with `Koan-Job-Id` naming the
//! job deleted: koan's mark on an answer without a body, which koanctl requires (a
//! bare 204, any server's, was taken for a deletion; found by a probe).

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, call, header, send};
use reqwest::StatusCode;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_names_the_job_it_deleted() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    let (status, body) = call(
        api.post("/api/services/notes/actions/note?wait=false&delay=1h")
            .json(&"n"),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = call(api.post(&format!("/api/jobs/{id}/cancel"))).await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let delete = api.client.delete(api.url(&format!("/api/jobs/{id}")));
    let (status, headers, body) = send(delete).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(body.is_null(), "{body}");
    assert_eq!(header(&headers, "koan-job-id"), Some(id.as_str()));

    // A refusal is no deletion, and carries no such mark.
    let delete = api.client.delete(api.url(&format!("/api/jobs/{id}")));
    let (status, headers, _) = send(delete).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, "koan-job-id"), None);
    api.stop().await
}
