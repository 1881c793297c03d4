//! The demo's action parameters, as a user meets them: the real `koan-demo` binary
//! and its HTTP API.
//! - A field the action does not know is refused (400 `invalid_parameters`, naming
//!   it and the fields that exist), never ignored: `submit` with a misnamed id made a
//!   new entity on every call, `translate` with `txt` translated the sample sentence.
//! - `submit` takes the entity's id as `entityId`, the name `resume` takes and every
//!   answer gives: submitting it again finds the same entity.
//! - A language is accepted in any case (`FR`, `pt-br`) and translated into, or
//!   refused naming the accepted ones; the source language too. A configured
//!   language the dictionary cannot translate into stops the host at its start.

#[path = "support/demo.rs"]
mod demo;
#[path = "support/in_process.rs"]
mod in_process;

use demo::{Demo, send};
use koan_test_support::{PATIENCE, TempDir, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A demo process of its own (`name`), ready (its database migrated), and a client
/// for it.
async fn start(name: &str) -> anyhow::Result<(TempDir, Demo, reqwest::Client)> {
    let dir = TempDir::new(name);
    let demo = Demo::start(dir.path(), name, &[], &[])?;
    let client = reqwest::Client::builder().timeout(PATIENCE).build()?;
    let ready = demo.url("/health/ready");
    wait_for(&format!("{name} to be ready"), async || {
        let (status, _) = send(client.get(&ready)).await?;
        Ok((status == StatusCode::OK).then_some(()))
    })
    .await?;
    Ok((dir, demo, client))
}

/// Calls `action` of `service` with `params`, waiting for the outcome.
async fn call(
    demo: &Demo,
    client: &reqwest::Client,
    service: &str,
    action: &str,
    params: &Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let url = demo.url(&format!(
        "/api/services/{service}/actions/{action}?wait=true"
    ));
    send(client.post(url).json(params)).await
}

/// How many rows `sql` (a `SELECT COUNT(*)`) counts in the demo's database.
fn count(demo: &Demo, sql: &str) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(&demo.db)?;
    conn.busy_timeout(PATIENCE)?;
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_an_action_does_not_know_is_refused_naming_it_and_the_known_ones()
-> anyhow::Result<()> {
    let (_dir, demo, client) = start("koan-demo-unknown-field").await?;
    // (service, action, parameters, the unknown field, the fields it takes)
    let cases: [(&str, &str, Value, &str, &[&str]); 4] = [
        (
            "TranslationService",
            "translate",
            json!({ "fileId": "f", "from": "en", "to": "fr", "txt": "good morning" }),
            "txt",
            &["fileId", "from", "to", "text"],
        ),
        (
            "TranslationService",
            "flaky",
            json!({ "failTimes": 0, "nte": "x" }),
            "nte",
            &["failTimes", "note"],
        ),
        (
            "FlowOrchestrator",
            "submit",
            json!({ "entityID": "order-1", "payload": { "a": 1 } }),
            "entityID",
            &["entityId", "entityType", "payload"],
        ),
        (
            "FlowOrchestrator",
            "resume",
            json!({ "entityId": "order-1", "paylod": { "a": 1 } }),
            "paylod",
            &["entityId", "payload"],
        ),
    ];
    for (service, action, params, unknown, known) in cases {
        let (status, body) = call(&demo, &client, service, action, &params).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} {params}: {body}");
        assert_eq!(body["error"], "invalid_parameters", "{action}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("unknown field `{unknown}`")),
            "{action}: the unknown field is not named: {message}"
        );
        for field in known {
            assert!(
                message.contains(&format!("`{field}`")),
                "{action}: the field `{field}` it takes is not named: {message}"
            );
        }
    }
    // Nothing was done for the refused calls.
    assert_eq!(count(&demo, "SELECT COUNT(*) FROM translations")?, 0);
    assert_eq!(count(&demo, "SELECT COUNT(*) FROM flow_entities")?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_takes_the_entity_id_by_the_name_its_answer_gives_and_is_idempotent()
-> anyhow::Result<()> {
    let (_dir, demo, client) = start("koan-demo-submit-id").await?;
    let params = json!({ "entityId": "order-2", "payload": { "a": 1 } });
    for _ in 0..2 {
        let (status, body) = call(&demo, &client, "FlowOrchestrator", "submit", &params).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["entityId"], "order-2", "{body}");
    }
    // `id`, the name it had before, still names the same entity.
    let old = json!({ "id": "order-2", "payload": { "a": 1 } });
    let (status, body) = call(&demo, &client, "FlowOrchestrator", "submit", &old).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["entityId"], "order-2", "{body}");
    assert_eq!(count(&demo, "SELECT COUNT(*) FROM flow_entities")?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_accepted_language_translates_and_others_are_refused()
-> anyhow::Result<()> {
    let (_dir, demo, client) = start("koan-demo-languages").await?;
    let translate = |from: &str, to: &str, text: &str| json!({ "fileId": "f", "from": from, "to": to, "text": text });
    // (from, to, text, the translation, the language it is stored under)
    let cases = [
        ("en", "fr", "hello world", "bonjour monde", "fr"),
        ("en", "FR", "hello world", "bonjour monde", "fr"),
        ("auto", "Fr", "hello world", "bonjour monde", "fr"),
        ("EN", "ES", "good morning", "bueno día", "es"),
        ("en", "pt-br", "hello world", "olá mundo", "pt-BR"),
        (
            "en",
            "PT-BR",
            "the file is ready",
            "o arquivo é pronto",
            "pt-BR",
        ),
        // From another language than English, named or detected.
        ("FR", "en", "bonjour monde", "hello world", "en"),
        ("auto", "es", "bonjour monde", "hola mundo", "es"),
    ];
    for (from, to, text, expected, stored) in cases {
        let params = translate(from, to, text);
        let (status, body) =
            call(&demo, &client, "TranslationService", "translate", &params).await?;
        assert_eq!(status, StatusCode::OK, "{params}: {body}");
        assert_eq!(body["result"]["text"], expected, "{params}: {body}");
        assert_eq!(body["result"]["to"], stored, "{params}: {body}");
    }
    let stored = count(
        &demo,
        "SELECT COUNT(*) FROM translations WHERE target_lang IN ('en', 'pt-BR', 'es', 'fr')",
    )?;
    assert_eq!(stored, cases.len() as i64, "languages stored as given");

    // A language the service does not translate is refused, naming the accepted ones,
    // as a source as well as a target, and nothing is stored.
    let refused = [
        (translate("xx", "fr", "hello"), "source language `xx`"),
        (translate("en", "de", "hello"), "target language `de`"),
        (translate("en", "pt", "hello"), "target language `pt`"),
    ];
    for (params, named) in refused {
        let (status, body) =
            call(&demo, &client, "TranslationService", "translate", &params).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params}: {body}");
        assert_eq!(body["error"], "invalid_parameters", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{params}: {message}");
        assert!(
            message.contains("en, pt-BR, es, fr"),
            "the accepted languages are not named: {message}"
        );
    }
    assert_eq!(
        count(&demo, "SELECT COUNT(*) FROM translations")?,
        cases.len() as i64,
        "a refused translation was stored"
    );
    Ok(())
}

#[test]
fn a_configured_language_the_dictionary_lacks_is_refused_at_start() -> anyhow::Result<()> {
    let dir = TempDir::new("koan-demo-configured-language");
    let toml = "[background_services.services.TranslationService.settings]\n\
                supported_languages = [\"EN\", \"fr\", \"de\"]\n";
    let Err(e) = in_process::demo_host(&in_process::db_path(&dir), toml)?.build() else {
        anyhow::bail!("a host whose translator accepts `de` was built");
    };
    let message = e.to_string();
    assert_eq!(e.kind(), koan::error::ErrorKind::Config, "{message}");
    assert!(
        message.contains("`de`") && message.contains("en, pt-BR, es, fr"),
        "the language, or the ones it knows, not named: {message}"
    );
    Ok(())
}
