//! The stages of the flow orchestrator and the work each does on an entity's payload.

use serde_json::Value;

use crate::db::now_secs;

/// The stages an entity goes through, in order.
pub const STAGES: [&str; 4] = ["received", "validated", "enriched", "done"];

pub(crate) fn next_stage(stage: &str) -> Option<&'static str> {
    let i = STAGES.iter().position(|s| *s == stage)?;
    STAGES.get(i + 1).copied()
}

/// The work of one stage on the payload; `Err` is the reason to park.
pub(crate) fn run_stage(stage: &str, payload: &mut Value) -> Result<(), String> {
    if payload.get("failAt").and_then(Value::as_str) == Some(stage) {
        return Err(format!(
            "stage `{stage}` failed: the payload asks for it (failAt = \"{stage}\")"
        ));
    }
    match stage {
        "validated" if !payload.is_object() => Err("the payload is not a JSON object".to_owned()),
        "enriched" => {
            payload["enrichedAt"] = now_secs().into();
            Ok(())
        }
        _ => Ok(()),
    }
}
