//! The routes of what happened lately in the OpenAPI document: a service's history,
//! recent events, throughput and the cluster's instances, with their schemas; and
//! the restart of a service its supervisor gave up on.

use serde_json::{Map, Value, json};

fn answer(summary: &str, params: Value, schema: &str, errors: Value) -> Value {
    let mut responses = errors;
    if let Some(m) = responses.as_object_mut() {
        m.insert("200".into(), json!({ "description": summary, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }));
    }
    json!({ "get": { "summary": summary, "parameters": params, "responses": responses } })
}

/// Adds the paths to `paths`.
pub(crate) fn paths(paths: &mut Map<String, Value>, errors: &dyn Fn() -> Value) {
    let name = json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" },
                       "description": "Service name (case-insensitive)" });
    paths.insert(
        "/api/services/{name}/history".into(),
        answer(
            "A service's last runs, newest first, and its action counts",
            json!([name]),
            "ServiceHistory",
            errors(),
        ),
    );
    paths.insert(
        "/api/services/{name}/restart".into(),
        json!({ "post": {
            "summary": "Start again a background service of this host that its supervisor gave up on (`failed`)",
            "description": "Its `run` is called anew, with a fresh restart intensity window, and its calls are taken again. 409 `service_state` for a service in any other state, or one its own code stopped.",
            "parameters": [name.clone()],
            "responses": {
                "200": { "description": "Restarted", "content": { "application/json": { "schema": { "type": "object", "required": ["service", "message"], "properties": { "service": { "type": "string" }, "message": { "type": "string" } } } } } },
                "401": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" },
                "409": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" }
            }
        } }),
    );
    paths.insert(
        "/api/events/recent".into(),
        answer(
            "The host's last events (at most 256, in memory), newest first",
            json!([
                { "name": "service", "in": "query", "schema": { "type": "string" } },
                { "name": "correlation_id", "in": "query", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 256 } }
            ]),
            "RecentEvents",
            errors(),
        ),
    );
    paths.insert(
        "/api/stats/throughput".into(),
        answer(
            "Succeeded and failed runs and actions per second (120 s) and per hour (24 h), in memory since the host started",
            json!([]),
            "Throughput",
            errors(),
        ),
    );
    paths.insert(
        "/api/instances".into(),
        answer(
            "The hosts of the cluster (without one, this host) with their services, heartbeat age and load",
            json!([]),
            "Instances",
            errors(),
        ),
    );
}

/// The schemas of those answers.
pub(crate) fn schemas(into: &mut Map<String, Value>) {
    let time = json!({ "type": "string", "format": "date-time" });
    let count = json!({ "type": "integer", "minimum": 0 });
    into.insert("Run".into(), json!({ "type": "object", "required": ["reason", "started_at", "duration_ms", "outcome"], "properties": {
        "reason": { "enum": ["start", "restart", "scheduled", "trigger", "check-queue", "process-batch"] },
        "started_at": time, "duration_ms": count,
        "outcome": { "enum": ["success", "failed", "panicked", "timed_out", "cancelled"] },
        "error": { "type": "string", "description": "With `failed`" },
        "message": { "type": "string", "description": "With `panicked`" } } }));
    into.insert("ServiceHistory".into(), json!({ "type": "object", "required": ["service", "capacity", "runs", "actions_succeeded", "actions_failed"], "properties": {
        "service": { "type": "string" }, "capacity": count,
        "runs": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } },
        "actions_succeeded": count, "actions_failed": count } }));
    into.insert("RecentEvents".into(), json!({ "type": "array", "items": { "type": "object", "required": ["service", "event", "correlation_id", "time", "seq", "arrival", "payload"], "properties": {
        "service": { "type": "string" }, "event": { "type": "string" }, "correlation_id": { "type": ["string", "null"] },
        "time": time, "seq": { "type": "integer", "minimum": 0, "description": "The emitting host's count of its events" },
        "arrival": { "type": "integer", "minimum": 0, "description": "This host's number for the event, in the order events came here (an event stream's `id`)" },
        "payload": {} } } }));
    let bucket = json!({ "type": "object", "required": ["start", "succeeded", "failed"], "properties": { "start": time, "succeeded": count, "failed": count } });
    into.insert("Throughput".into(), json!({ "type": "object", "required": ["now", "per_second", "per_hour"], "properties": {
        "now": time,
        "per_second": { "type": "array", "items": bucket, "minItems": 120, "maxItems": 120, "description": "Oldest first; the last is the current second" },
        "per_hour": { "type": "array", "items": bucket, "minItems": 24, "maxItems": 24, "description": "Oldest first; the last is the current hour" } } }));
    into.insert("Instances".into(), json!({ "type": "object", "required": ["instances", "stale_after_ms", "gone_after_ms", "registry_error"], "properties": {
        "stale_after_ms": { "type": ["integer", "null"], "minimum": 0, "description": "An instance whose last heartbeat is older is marked stale (it missed one); null without a cluster" },
        "gone_after_ms": { "type": ["integer", "null"], "minimum": 0, "description": "An instance whose last heartbeat is older has left the listing; null without a cluster" },
        "registry_error": { "type": ["string", "null"], "description": "Why other hosts could not be listed" },
        "instances": { "type": "array", "items": { "type": "object", "required": ["name", "local", "seen_at", "heartbeat_age_ms", "stale", "load", "services"], "properties": {
            "name": { "type": "string" }, "local": { "type": "boolean" }, "seen_at": time,
            "heartbeat_age_ms": count, "stale": { "type": "boolean" },
            "load": { "type": "object", "required": ["in_flight", "queue_depth"], "properties": { "in_flight": count, "queue_depth": count } },
            "services": { "type": "array", "items": { "type": "object", "required": ["name", "kind", "state"], "properties": {
                "name": { "type": "string" }, "kind": { "type": "string" }, "state": { "type": "string" },
                "in_flight": count, "queue_depth": count } } } } } } } }));
}
