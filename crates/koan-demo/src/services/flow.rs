//! `FlowOrchestrator`: moves the entities of the `flow_entities` table through their
//! stages (received → validated → enriched → done), parks an entity whose stage
//! fails (`Flow.EntityParked`, with the stage and the reason), and resumes a parked one
//! on the `resume` action.
//!
//! The failure rule is deterministic, so that a demo or a test can make an entity
//! fail: a stage fails while the entity's payload names it in `failAt`
//! (`{"failAt": "validated"}`). `resume` may carry a corrected payload (the fix);
//! resumed unchanged, the entity fails at the same stage again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use koan::well_known::events::flow::{ENTITY_FAILED, ENTITY_PARKED, ENTITY_PROCESSED};
use koan::{
    ActionContext, BackgroundService, BoxError, ServiceContext, service::BuildContext,
    service::FromContext,
};
use rusqlite::OptionalExtension;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use super::Emitter;
pub use super::flow_stages::STAGES;
use super::flow_stages::{next_stage, run_stage};
use crate::db::{Db, now_secs};

/// Payload of `Flow.EntityProcessed`: the entity reached `done`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowEntityProcessed {
    /// The entity's id.
    pub entity_id: String,
    /// Its type.
    pub entity_type: String,
}

/// Payload of `Flow.EntityParked`: a stage failed and the entity waits for `resume`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowEntityParked {
    /// The entity's id.
    pub entity_id: String,
    /// The stage that failed.
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// Payload of `Flow.EntityFailed`: the orchestrator could not move the entity (its
/// database write failed); it stays where it was and is tried again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowEntityFailed {
    /// The entity's id.
    pub entity_id: String,
    /// What went wrong.
    pub error: String,
}

/// Parameters of `submit`. A field it does not know is refused, not ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitEntity {
    /// The entity's id (generated when absent), the name `resume` takes and the
    /// answer gives; `id` is taken too. Submitting an id again is a no-op.
    #[serde(default, alias = "id")]
    pub entity_id: Option<String>,
    /// Its type (default `Order`).
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Its data, a JSON object; `{"failAt": "<stage>"}` makes that stage fail.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// Parameters of `resume`. A field it does not know is refused, not ignored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResumeEntity {
    /// The parked entity's id.
    pub entity_id: String,
    /// A corrected payload, replacing the stored one.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// An entity's place in the flow (the result of `submit` and `resume`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityRef {
    /// The entity's id.
    pub entity_id: String,
    /// The last stage it completed.
    pub stage: String,
    /// `active`, `parked` or `done`.
    pub state: String,
}

/// What one pass over the active entities did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowPass {
    /// Entities that reached `done`.
    pub processed: u64,
    /// Entities parked.
    pub parked: u64,
    /// Entities whose move failed (tried again on the next pass).
    pub failed: u64,
}

/// Settings of the orchestrator.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FlowSettings {
    /// Milliseconds between passes when nothing wakes the orchestrator.
    pub poll_interval_ms: u64,
    /// Entities taken per pass.
    pub batch_size: u32,
    /// Submit a sample `Order` entity this often (the demo's own traffic; every
    /// fifth one fails at `enriched` and is parked). Off by default.
    pub sample_every_seconds: Option<u64>,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            poll_interval_ms: 1000,
            batch_size: 100,
            sample_every_seconds: None,
        }
    }
}

/// Moves flow entities through their stages.
#[koan::service(description = "Moves entities through stages; parks failures until resumed",
    run_in_production = true,
    event(name = ENTITY_PROCESSED, payload = FlowEntityProcessed),
    event(name = ENTITY_PARKED, payload = FlowEntityParked),
    event(name = ENTITY_FAILED, payload = FlowEntityFailed),
    health = Self::report)]
#[derive(Debug)]
pub struct FlowOrchestrator {
    db: Db,
    settings: FlowSettings,
    /// Woken by `submit` and `resume`, so new work does not wait for the poll.
    wake: Notify,
    samples: AtomicU64,
}

impl FromContext for FlowOrchestrator {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(FlowOrchestrator {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings: cx.settings()?,
            wake: Notify::new(),
            samples: AtomicU64::new(0),
        })
    }
}

fn invalid(message: String) -> BoxError {
    koan::Error::new(koan::error::ErrorKind::InvalidParameters, message).into()
}

#[koan::actions]
impl FlowOrchestrator {
    /// Submits an entity at stage `received`.
    #[action("submit", description = "Submit an entity to the flow")]
    async fn submit(&self, entity: SubmitEntity) -> Result<EntityRef, BoxError> {
        let r = self.insert(entity).await?;
        self.wake.notify_one();
        Ok(r)
    }

    /// Puts a parked entity back to work at the stage that failed.
    #[action(
        "resume",
        description = "Resume a parked entity, optionally with a corrected payload"
    )]
    async fn resume(&self, params: ResumeEntity) -> Result<EntityRef, BoxError> {
        if let Some(p) = &params.payload
            && !p.is_object()
        {
            return Err(invalid("`payload` must be a JSON object".to_owned()));
        }
        let ResumeEntity { entity_id, payload } = params;
        let payload = payload.map(|p| p.to_string());
        let id = entity_id.clone();
        let row = self
            .db
            .run(move |c| {
                let n = c.execute(
                    "UPDATE flow_entities SET state = 'active', parked_stage = NULL, parked_reason = NULL, \
                     payload = COALESCE(?2, payload), updated_at = ?3 WHERE id = ?1 AND state = 'parked'",
                    (&id, &payload, now_secs()),
                )?;
                let row = c
                    .query_row(
                        "SELECT stage, state FROM flow_entities WHERE id = ?1",
                        [&id],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                    )
                    .optional()?;
                Ok((n, row))
            })
            .await?;
        match row {
            (1, Some((stage, state))) => {
                tracing::info!(entity = %entity_id, "flow entity resumed");
                self.wake.notify_one();
                Ok(EntityRef {
                    entity_id,
                    stage,
                    state,
                })
            }
            (_, Some((_, state))) => Err(invalid(format!(
                "entity `{entity_id}` is not parked (it is {state})"
            ))),
            (_, None) => Err(invalid(format!("there is no entity `{entity_id}`"))),
        }
    }

    /// One pass now: moves every active entity (up to a batch) as far as it goes,
    /// without waiting for the run loop's next pass.
    #[action(
        koan::well_known::actions::flow::TRIGGER_PROCESSING,
        description = "Move every active entity now"
    )]
    async fn trigger_processing(&self, cx: &ActionContext) -> Result<FlowPass, BoxError> {
        self.pass(cx).await
    }
}

impl FlowOrchestrator {
    async fn report(&self) -> koan::health::HealthReport {
        let counts = self
            .db
            .run(|c| {
                let mut st =
                    c.prepare("SELECT state, COUNT(*) FROM flow_entities GROUP BY state")?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await;
        match counts {
            Ok(rows) => {
                let count = |s: &str| rows.iter().find(|r| r.0 == s).map_or(0, |r| r.1);
                koan::health::HealthReport::healthy(format!(
                    "{} active, {} parked, {} done",
                    count("active"),
                    count("parked"),
                    count("done")
                ))
                .with_data("parked", count("parked"))
            }
            Err(e) => {
                koan::health::HealthReport::degraded("cannot read flow_entities").with_error(e)
            }
        }
    }

    async fn insert(&self, entity: SubmitEntity) -> Result<EntityRef, BoxError> {
        let payload = entity
            .payload
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !payload.is_object() {
            return Err(invalid("`payload` must be a JSON object".to_owned()));
        }
        let id = entity.entity_id.unwrap_or_else(new_id);
        if id.is_empty() {
            return Err(invalid("`entityId` must not be empty".to_owned()));
        }
        let entity_type = entity.entity_type.unwrap_or_else(|| "Order".to_owned());
        let row_id = id.clone();
        let (stage, state) = self
            .db
            .run(move |c| {
                let now = now_secs();
                // Idempotent: a retried submit finds the first one.
                c.execute(
                    "INSERT OR IGNORE INTO flow_entities (id, entity_type, payload, stage, state, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, 'received', 'active', ?4, ?4)",
                    (&row_id, &entity_type, payload.to_string(), now),
                )?;
                c.query_row(
                    "SELECT stage, state FROM flow_entities WHERE id = ?1",
                    [&row_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await?;
        Ok(EntityRef {
            entity_id: id,
            stage,
            state,
        })
    }

    /// Moves every active entity (up to a batch) as far as it goes.
    async fn pass(&self, out: &impl Emitter) -> Result<FlowPass, BoxError> {
        let limit = self.settings.batch_size.max(1);
        let ids: Vec<String> = self
            .db
            .run(move |c| {
                let mut st = c.prepare(
                    "SELECT id FROM flow_entities WHERE state = 'active' ORDER BY created_at, id LIMIT ?1",
                )?;
                let ids = st
                    .query_map([limit], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ids)
            })
            .await?;
        let mut pass = FlowPass::default();
        for id in ids {
            match self.advance(&id).await {
                Ok(Moved::Done(e)) => {
                    pass.processed += 1;
                    out.emit(ENTITY_PROCESSED, e).await;
                }
                Ok(Moved::Parked(e)) => {
                    pass.parked += 1;
                    tracing::warn!(entity = %e.entity_id, stage = %e.stage, reason = %e.reason, "flow entity parked");
                    out.emit(ENTITY_PARKED, e).await;
                }
                Ok(Moved::Elsewhere) => {}
                Err(e) => {
                    pass.failed += 1;
                    tracing::error!(entity = %id, error = %e, "could not move a flow entity");
                    out.emit(
                        ENTITY_FAILED,
                        FlowEntityFailed {
                            entity_id: id,
                            error: e.to_string(),
                        },
                    )
                    .await;
                }
            }
        }
        Ok(pass)
    }

    /// Takes one entity through its remaining stages, one committed step each.
    async fn advance(&self, id: &str) -> Result<Moved, BoxError> {
        let id = id.to_owned();
        let moved = self
            .db
            .run(move |c| {
                loop {
                    let row = c
                        .query_row(
                            "SELECT entity_type, payload, stage FROM flow_entities WHERE id = ?1 AND state = 'active'",
                            [&id],
                            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
                        )
                        .optional()?;
                    // Resumed, parked or finished by someone else meanwhile.
                    let Some((entity_type, payload, stage)) = row else {
                        return Ok(Moved::Elsewhere);
                    };
                    let Some(next) = next_stage(&stage) else {
                        return Ok(Moved::Elsewhere);
                    };
                    let mut payload: Value = serde_json::from_str(&payload)
                        .unwrap_or_else(|_| Value::Object(Default::default()));
                    let tx = c.transaction()?;
                    // The step commits only if nobody moved the entity meanwhile.
                    let guard = "WHERE id = ?1 AND state = 'active' AND stage = ?2";
                    if let Err(reason) = run_stage(next, &mut payload) {
                        let n = tx.execute(
                            &format!("UPDATE flow_entities SET state = 'parked', parked_stage = ?3, parked_reason = ?4, updated_at = ?5 {guard}"),
                            (&id, &stage, next, &reason, now_secs()),
                        )?;
                        tx.commit()?;
                        return Ok(if n == 1 {
                            Moved::Parked(FlowEntityParked {
                                entity_id: id,
                                stage: next.to_owned(),
                                reason,
                            })
                        } else {
                            Moved::Elsewhere
                        });
                    }
                    let done = next == "done";
                    let n = tx.execute(
                        &format!("UPDATE flow_entities SET stage = ?3, state = ?4, payload = ?5, updated_at = ?6 {guard}"),
                        (&id, &stage, next, if done { "done" } else { "active" }, payload.to_string(), now_secs()),
                    )?;
                    if n == 0 {
                        return Ok(Moved::Elsewhere);
                    }
                    if done {
                        // Downstream learns of it through the outbox, in the same commit.
                        let message = serde_json::json!({ "entityId": id, "entityType": entity_type });
                        tx.execute(
                            "INSERT INTO outbox (topic, payload, created_at) VALUES ('flow.entity.processed', ?1, ?2)",
                            (message.to_string(), now_secs()),
                        )?;
                        tx.commit()?;
                        return Ok(Moved::Done(FlowEntityProcessed {
                            entity_id: id,
                            entity_type,
                        }));
                    }
                    tx.commit()?;
                }
            })
            .await?;
        Ok(moved)
    }

    async fn submit_sample(&self) -> Result<(), BoxError> {
        let n = self.samples.fetch_add(1, Ordering::Relaxed) + 1;
        let mut payload = serde_json::json!({ "sample": n });
        if n.is_multiple_of(5) {
            payload["failAt"] = "enriched".into();
        }
        self.insert(SubmitEntity {
            entity_id: None,
            entity_type: Some("Order".to_owned()),
            payload: Some(payload),
        })
        .await
        .map(drop)
    }
}

/// Where `advance` left an entity.
enum Moved {
    Done(FlowEntityProcessed),
    Parked(FlowEntityParked),
    /// Not ours to move (any more).
    Elsewhere,
}

fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("e-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

impl BackgroundService for FlowOrchestrator {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let sample_every = self
            .settings
            .sample_every_seconds
            .map(|s| Duration::from_secs(s.max(1)));
        let mut next_sample = sample_every.map(|d| tokio::time::Instant::now() + d);
        tracing::info!("flow orchestrator started");
        loop {
            if let Some(at) = next_sample
                && tokio::time::Instant::now() >= at
            {
                if let Err(e) = self.submit_sample().await {
                    tracing::warn!(error = %e, "could not submit a sample flow entity");
                }
                next_sample = sample_every.map(|d| at + d);
            }
            if let Err(e) = self.pass(&cx).await {
                // The table could not be read: logged, retried on the next pass.
                tracing::error!(error = %e, "flow pass failed");
            }
            let until_sample = next_sample.map_or(poll, |at| {
                at.saturating_duration_since(tokio::time::Instant::now())
            });
            tokio::select! {
                _ = cx.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll.min(until_sample)) => {}
            }
        }
    }
}
