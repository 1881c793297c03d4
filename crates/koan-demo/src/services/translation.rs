//! `TranslationService`: `translate` and `check-queue` actions (and `flaky`, to try
//! job retries), Started/Completed/Failed events, translations stored in SQLite, and
//! an outbox message per translation. The translator is a small deterministic
//! dictionary (`translation_dictionary.rs`).

use koan::well_known::events::translation::{COMPLETED, FAILED, STARTED};
use koan::{
    ActionContext, BackgroundService, BoxError, ServiceContext, service::BuildContext,
    service::FromContext,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use rusqlite::OptionalExtension;

pub use super::translation_dictionary::{LANGUAGES, Language, translate_text};
use crate::db::{Db, now_secs};

/// The parameters of `translate`: which file, from and to which language, and the
/// text. A field it does not know is refused, not ignored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TranslationOptions {
    /// The file's id.
    pub file_id: String,
    /// Source language, in any case (`auto` detects).
    pub from: String,
    /// Target language, in any case (`fr`, `FR`, `pt-BR`, `pt-br`).
    pub to: String,
    /// The text; defaults to a sample sentence.
    #[serde(default)]
    pub text: Option<String>,
}

/// Payload of `TranslationStarted` and `TranslationCompleted`: which file, from and
/// to which language.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranslationEventArgs {
    /// The file's id.
    pub file_id: String,
    /// Source language.
    pub from: String,
    /// Target language.
    pub to: String,
}

/// Payload of `TranslationFailed`: which file, and what went wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranslationErrorArgs {
    /// The file's id.
    pub file_id: String,
    /// What went wrong.
    pub error: String,
}

/// The result of `translate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Translation {
    /// Row id in `translations`.
    pub id: i64,
    /// The file's id.
    pub file_id: String,
    /// Target language.
    pub to: String,
    /// The translated text.
    pub text: String,
}

/// The parameters of `flaky`. A field it does not know is refused, not ignored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlakyParams {
    /// How many first attempts fail.
    pub fail_times: u32,
    /// Echoed back once it succeeds.
    #[serde(default)]
    pub note: Option<String>,
}

/// `Settings` of the service: the languages it accepts, and an extra delay.
/// How many translations run at once is the service's `max_concurrency`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TranslationSettings {
    /// Languages accepted, as source and as target: some of the dictionary's
    /// ([`LANGUAGES`]), in any case; another one stops the host at its start.
    pub supported_languages: Vec<String>,
    /// Extra time each translation takes, in milliseconds (default 0; tests use it
    /// to make the work slow).
    pub work_delay_ms: u64,
}

impl Default for TranslationSettings {
    fn default() -> Self {
        TranslationSettings {
            supported_languages: LANGUAGES.map(String::from).to_vec(),
            work_delay_ms: 0,
        }
    }
}

/// Translates files.
#[koan::service(description = "Translates files and stores the results", max_concurrency = 4,
    event(name = STARTED, payload = TranslationEventArgs),
    event(name = COMPLETED, payload = TranslationEventArgs),
    event(name = FAILED, payload = TranslationErrorArgs))]
#[derive(Debug)]
pub struct TranslationService {
    db: Db,
    settings: TranslationSettings,
    /// `settings.supported_languages`, each one the dictionary's.
    languages: Vec<Language>,
}

impl FromContext for TranslationService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        let settings: TranslationSettings = cx.settings()?;
        let config = |problem: String| {
            koan::Error::new(
                koan::error::ErrorKind::Config,
                format!(
                    "settings of service `{}`: `supported_languages` {problem}",
                    cx.service_name()
                ),
            )
        };
        let known = LANGUAGES.join(", ");
        let languages = settings
            .supported_languages
            .iter()
            .map(|tag| {
                Language::parse(tag).ok_or_else(|| {
                    config(format!(
                        "names `{tag}`, a language the dictionary does not know; it knows {known}"
                    ))
                })
            })
            .collect::<koan::Result<Vec<_>>>()?;
        if languages.is_empty() {
            return Err(config(format!("names no language; give some of {known}")));
        }
        Ok(TranslationService {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings,
            languages,
        })
    }
}

#[koan::actions]
impl TranslationService {
    /// Translates the text and stores the result, emitting `TranslationStarted`, then
    /// `TranslationCompleted` or `TranslationFailed`. A language it does not accept
    /// is refused before it starts.
    #[action("translate", description = "Translate a file and store the result")]
    async fn translate(
        &self,
        opts: TranslationOptions,
        cx: &ActionContext,
    ) -> Result<Translation, BoxError> {
        let (from, to) = (self.source(&opts.from)?, self.target(&opts.to)?);
        // Stored, answered and announced as the dictionary spells them.
        let opts = TranslationOptions {
            from: from.map_or("auto", Language::tag).to_owned(),
            to: to.tag().to_owned(),
            ..opts
        };
        let args = TranslationEventArgs {
            file_id: opts.file_id.clone(),
            from: opts.from.clone(),
            to: opts.to.clone(),
        };
        cx.emit(STARTED, args.clone()).await;
        match self.store(&opts, from, to, cx).await {
            Ok(t) => {
                cx.emit(COMPLETED, args).await;
                Ok(t)
            }
            Err(e) => {
                cx.emit(
                    FAILED,
                    TranslationErrorArgs {
                        file_id: opts.file_id,
                        error: e.to_string(),
                    },
                )
                .await;
                Err(e)
            }
        }
    }

    /// A test aid: fails its first `failTimes` attempts, then succeeds. Run as a
    /// job it is dead after one failed attempt (no automatic retry), so an operator can
    /// try a retry by hand from the dashboard or `koanctl jobs retry`.
    #[action(
        "flaky",
        max_attempts = 1,
        description = "Fail the first `failTimes` attempts, then succeed (try job retries)"
    )]
    async fn flaky(
        &self,
        params: FlakyParams,
        cx: &ActionContext,
    ) -> Result<serde_json::Value, BoxError> {
        let attempt = cx.attempt();
        if attempt <= params.fail_times {
            return Err(format!(
                "attempt {attempt} fails on purpose (the first {} do)",
                params.fail_times
            )
            .into());
        }
        Ok(serde_json::json!({ "attempt": attempt, "note": params.note }))
    }

    /// How many translations are stored, by status.
    #[action("check-queue", description = "Count stored translations by status")]
    async fn check_queue(&self) -> Result<serde_json::Value, BoxError> {
        let rows: Vec<(String, i64)> = self
            .db
            .run(|c| {
                let mut st =
                    c.prepare("SELECT status, COUNT(*) FROM translations GROUP BY status")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        Ok(serde_json::Value::Object(
            rows.into_iter().map(|(k, v)| (k, v.into())).collect(),
        ))
    }
}

impl TranslationService {
    /// The source language `tag` names, in any case; `None` for `auto` (detected).
    fn source(&self, tag: &str) -> Result<Option<Language>, BoxError> {
        if tag.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        self.accepted(tag)
            .map(Some)
            .ok_or_else(|| self.refusal("source", tag, "auto, "))
    }

    /// The target language `tag` names, in any case.
    fn target(&self, tag: &str) -> Result<Language, BoxError> {
        self.accepted(tag)
            .ok_or_else(|| self.refusal("target", tag, ""))
    }

    /// The language `tag` names, in any case, when the service accepts it.
    fn accepted(&self, tag: &str) -> Option<Language> {
        Language::parse(tag).filter(|l| self.languages.contains(l))
    }

    /// Why `tag`, as the `role` language, is refused, and what would do (`also`
    /// before the accepted languages).
    fn refusal(&self, role: &str, tag: &str, also: &str) -> BoxError {
        let accepted: Vec<_> = self.languages.iter().map(|l| l.tag()).collect();
        // Bad input, not a failure of the service: a 400 over HTTP.
        koan::Error::new(
            koan::error::ErrorKind::InvalidParameters,
            format!(
                "{role} language `{tag}` is not supported; supported: {also}{} (in any case)",
                accepted.join(", ")
            ),
        )
        .into()
    }

    async fn store(
        &self,
        opts: &TranslationOptions,
        from: Option<Language>,
        to: Language,
        cx: &ActionContext,
    ) -> Result<Translation, BoxError> {
        if self.settings.work_delay_ms > 0 {
            let work = std::time::Duration::from_millis(self.settings.work_delay_ms);
            tokio::select! {
                () = tokio::time::sleep(work) => {}
                // Stopped (shutdown, deadline, or a durable job's claim lost to
                // another instance): nothing is stored.
                () = cx.cancelled() => return Err("translation stopped before it was stored".into()),
            }
        }
        let source = opts
            .text
            .clone()
            .unwrap_or_else(|| "hello world the file is ready".to_owned());
        let translated = translate_text(&source, from, to);
        let (o, t, corr) = (
            opts.clone(),
            translated.clone(),
            cx.correlation_id().to_owned(),
        );
        // A job may run again (its process died mid-run, or it was retried): keyed
        // by the job id, its translation and outbox message are stored once.
        let job_id = cx.job().map(|j| j.id.clone());
        let id = self
            .db
            .run(move |c| {
                // Immediate: the read below must not be a snapshot that a concurrent
                // writer makes stale (SQLite would refuse the upgrade at once).
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if let Some(job) = &job_id
                    && let Some(id) = tx
                        .query_row(
                            "SELECT id FROM translations WHERE job_id = ?1",
                            [job],
                            |r| r.get::<_, i64>(0),
                        )
                        .optional()?
                {
                    return Ok(id);
                }
                tx.execute(
                    "INSERT INTO translations (file_id, source_lang, target_lang, source_text, translated_text, status, created_at, job_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'completed', ?6, ?7)",
                    (&o.file_id, &o.from, &o.to, &source, &t, now_secs(), &job_id),
                )?;
                let id = tx.last_insert_rowid();
                let payload = serde_json::json!({ "translationId": id, "fileId": o.file_id, "to": o.to, "correlationId": corr });
                tx.execute(
                    "INSERT INTO outbox (topic, payload, created_at) VALUES ('translation.completed', ?1, ?2)",
                    (payload.to_string(), now_secs()),
                )?;
                tx.commit()?;
                Ok(id)
            })
            .await?;
        Ok(Translation {
            id,
            file_id: opts.file_id.clone(),
            to: opts.to.clone(),
            text: translated,
        })
    }
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        // Nothing to do in a loop: the work comes through actions, so wait for the
        // stop.
        cx.cancelled().await;
        Ok(())
    }
}
