//! A filter that names nothing known is not read as "nothing happened": the job
//! listing's `action=` finds an action in any case and says when no service
//! declares that name; `/api/events/recent?service=` refuses a service nobody
//! runs and no kept event came from, as the service's own stream does. Before,
//! `?action=ad` and `?service=Notse` answered an empty list without a word (a
//! probe).

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, call};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[koan::service]
#[derive(Default)]
struct Notes;

#[derive(serde::Serialize)]
struct Noted {
    len: usize,
}

#[koan::actions]
impl Notes {
    #[action("note")]
    async fn note(&self, text: String, cx: &ActionContext) -> Result<usize, BoxError> {
        cx.emit("Noted", Noted { len: text.len() }).await;
        Ok(text.len())
    }
}

impl BackgroundService for Notes {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn listed(page: &Value) -> Option<usize> {
    page["jobs"].as_array().map(Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_filter_finds_any_case_and_notes_an_unknown_name() -> anyhow::Result<()> {
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
    for url in [
        "/api/jobs?action=note",
        "/api/jobs?action=NOTE",
        "/api/jobs?action=n_o-t.e",
        "/api/jobs?service=notes&action=Note",
    ] {
        let (status, page) = call(api.get(url)).await?;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        assert_eq!(listed(&page), Some(2), "{url}: {page}");
        assert!(page.get("note").is_none(), "{url}: {page}");
    }
    let (_, page) = call(api.get("/api/jobs?action=not")).await?;
    assert_eq!(listed(&page), Some(0), "{page}");
    let note = page["note"].as_str().unwrap_or_default();
    assert!(note.contains("no action named `not`"), "{page}");
    let (_, page) = call(api.get("/api/jobs?service=Notes&action=not")).await?;
    let note = page["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("`Notes`, whose actions are") && note.contains("note"),
        "{page}"
    );
    // An unknown service's note comes first: its actions are not known.
    let (_, page) = call(api.get("/api/jobs?service=Gone&action=note")).await?;
    let note = page["note"].as_str().unwrap_or_default();
    assert!(note.contains("no service named `Gone`"), "{page}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_events_refuse_a_service_nobody_runs() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notes>().build()?.start();
    let api = Api::open(host).await?;
    let (status, body) = call(api.post("/api/services/notes/actions/note").json(&"abc")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    for spelling in ["Notes", "notes"] {
        let (status, events) =
            call(api.get(&format!("/api/events/recent?service={spelling}"))).await?;
        assert_eq!(status, StatusCode::OK, "{events}");
        assert_eq!(events[0]["payload"], json!({ "len": 3 }), "{events}");
    }
    let (status, body) = call(api.get("/api/events/recent?service=Notse")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let text = body.to_string();
    assert!(text.contains("Notse"), "{body}");
    api.stop().await
}

/// A second service declaring `Note`: the name as either declares it is kept,
/// and a spelling both match is said to be ambiguous (it took the first
/// service's spelling, and the other's jobs vanished from the listing; a review).
#[koan::service]
#[derive(Default)]
struct Memos;

#[koan::actions]
impl Memos {
    #[action("Note")]
    async fn note(&self, text: String, _cx: &ActionContext) -> Result<usize, BoxError> {
        Ok(text.len())
    }
}

impl BackgroundService for Memos {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_name_two_services_spell_apart_is_kept_or_said_ambiguous() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<Notes>()
        .service::<Memos>()
        .build()?
        .start();
    let api = Api::open(host).await?;
    for path in ["notes/actions/note", "memos/actions/Note"] {
        let (status, body) = call(
            api.post(&format!("/api/services/{path}?wait=false&delay=1h"))
                .json(&"n"),
        )
        .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    for url in ["/api/jobs?action=note", "/api/jobs?action=Note"] {
        let (_, page) = call(api.get(url)).await?;
        assert_eq!(listed(&page), Some(1), "{url}: {page}");
        assert!(page.get("note").is_none(), "{url}: {page}");
    }
    let (_, page) = call(api.get("/api/jobs?action=NOTE")).await?;
    let note = page["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("`note` of `Notes`") && note.contains("`Note` of `Memos`"),
        "{page}"
    );
    let (_, page) = call(api.get("/api/jobs?service=memos&action=NOTE")).await?;
    assert_eq!(listed(&page), Some(1), "{page}");
    api.stop().await
}
