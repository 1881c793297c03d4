//! The job routes of the OpenAPI document, and the schemas of their bodies.

use serde_json::{Map, Value, json};

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true,
            "schema": { "type": "string", "minLength": 1, "maxLength": 200 },
            "description": "The job's id (a UUID v7)" })
}

fn job_answer(summary: &str, method: &str, errors: Value) -> Value {
    let mut responses = errors;
    if let Some(m) = responses.as_object_mut() {
        m.insert("200".into(), json!({ "description": "The job", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } }));
    }
    json!({ method: { "summary": summary, "parameters": [id_param()], "responses": responses } })
}

/// Adds the `/api/jobs…` paths to `paths`.
pub(crate) fn paths(paths: &mut Map<String, Value>, errors: &dyn Fn() -> Value) {
    let states = json!([
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "retrying",
        "dead",
        "cancelled"
    ]);
    let mut list = errors();
    if let Some(m) = list.as_object_mut() {
        m.insert("200".into(), json!({ "description": "A page of jobs, newest first", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobPage" } } } }));
    }
    paths.insert("/api/jobs".into(), json!({ "get": { "summary": "Stored jobs, newest first", "parameters": [
        { "name": "state", "in": "query", "schema": { "enum": states } },
        { "name": "service", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 } },
        { "name": "action", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 } },
        { "name": "correlation_id", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 }, "description": "Only jobs under this correlation id (the job of an event)" },
        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500 } },
        { "name": "cursor", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 }, "description": "`next_cursor` of the previous page" }
    ], "responses": list } }));
    let mut counts = errors();
    if let Some(m) = counts.as_object_mut() {
        m.insert("200".into(), json!({ "description": "Jobs by state", "content": { "application/json": { "schema": { "type": "object", "required": ["durable", "store", "counts"], "properties": {
            "durable": { "type": "boolean" }, "store": { "type": "string" },
            "counts": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 } },
            "partial": { "type": "boolean", "description": "present (true) when the counts cover only part of the cluster's jobs (see the listing's `partial`)" },
            "stale": { "type": "boolean", "description": "present (true) when the counts come from a view that is not current (see the listing's `stale`): the last known, which may be none at all" },
            "note": { "type": "string", "description": "present when `service` names no service this host runs or, as far as it knows, any other (the counts are of the jobs stored under that exact name: a renamed service's); also on the listing and on retry-dead" } } } } } }));
    }
    paths.insert("/api/jobs/counts".into(), json!({ "get": { "summary": "How many jobs are in each state", "parameters": [
        { "name": "service", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 } }
    ], "responses": counts } }));
    let mut retried = errors();
    if let Some(m) = retried.as_object_mut() {
        m.insert("200".into(), json!({ "description": "How many were retried", "content": { "application/json": { "schema": { "type": "object", "required": ["retried"], "properties": { "retried": { "type": "integer", "minimum": 0 } } } } } }));
    }
    paths.insert("/api/jobs/retry-dead".into(), json!({ "post": { "summary": "Retry every dead job", "parameters": [
        { "name": "service", "in": "query", "schema": { "type": "string", "minLength": 1, "maxLength": 200 } }
    ], "responses": retried } }));
    let mut one = job_answer(
        "One job: parameters, result or error, every attempt",
        "get",
        errors(),
    );
    let mut deleted = errors();
    if let Some(m) = deleted.as_object_mut() {
        m.insert("204".into(), json!({ "description": "Deleted", "headers": { "Koan-Job-Id": { "description": "The id of the job deleted (koan's mark on an answer without a body)", "schema": { "type": "string" } } } }));
    }
    if let Some(m) = one.as_object_mut() {
        m.insert("delete".into(), json!({ "summary": "Forget a final job (succeeded, dead or cancelled; cancel a live one first)", "parameters": [id_param()], "responses": deleted }));
    }
    paths.insert("/api/jobs/{id}".into(), one);
    paths.insert(
        "/api/actions/{id}".into(),
        job_answer(
            "The job (the older name of /api/jobs/{id})",
            "get",
            errors(),
        ),
    );
    paths.insert(
        "/api/jobs/{id}/retry".into(),
        job_answer(
            "Run a dead, cancelled, retrying or succeeded job again now",
            "post",
            errors(),
        ),
    );
    paths.insert(
        "/api/jobs/{id}/cancel".into(),
        job_answer("Cancel a job that has not finished", "post", errors()),
    );
}

/// The query and header parameters an enqueue (`wait=false`) takes besides a call's.
pub(crate) fn enqueue_params() -> Vec<Value> {
    vec![
        json!({ "name": "delay", "in": "query", "schema": { "type": "string", "pattern": "^0*[0-9]{1,9}(ms|s|m|h|d)?$" }, "description": "Stores a job that runs no sooner than this from now (at most 365 days); with `at` too, the later of the two. Without `wait` the call answers 202 once the job is stored; with wait=true it waits up to `timeout` (default 60 s) for the outcome and otherwise answers 202 with the stored job (at once when the job is due after that)" }),
        json!({ "name": "at", "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": "Stores a job that runs no sooner than this time (at most 365 days from now); with `delay` too, the later of the two. With wait=true as for `delay`" }),
        json!({ "name": "Idempotency-Key", "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7e]+$" }, "description": "With wait=false (or delay, at): a repeat with the same key returns the first job. Refused (400) on a call that waits, which is not stored" }),
    ]
}

/// The schemas of job bodies.
pub(crate) fn schemas(into: &mut Map<String, Value>) {
    let time = json!({ "type": "string", "format": "date-time" });
    let maybe_time = json!({ "type": ["string", "null"], "format": "date-time" });
    let error = json!({ "oneOf": [{ "type": "null" }, { "$ref": "#/components/schemas/Error" }] });
    into.insert("Accepted".into(), json!({ "type": "object", "required": ["id", "correlation_id", "status_url", "created"], "properties": {
        "id": { "type": "string" }, "correlation_id": { "type": "string" }, "status_url": { "type": "string" },
        "created": { "type": "boolean", "description": "false when the idempotency key matched a stored job" } } }));
    into.insert("Job".into(), json!({ "type": "object", "required": ["id", "service", "action", "params", "state", "priority", "correlation_id", "created_at", "run_at", "attempts", "max_attempts", "history", "result_truncated"], "properties": {
        "id": { "type": "string" }, "service": { "type": "string" }, "action": { "type": "string" }, "params": {},
        "timeout_ms": { "type": "integer", "minimum": 0 },
        "then": { "type": "array", "items": { "type": "object", "required": ["action", "params"], "properties": { "action": { "type": "string" }, "params": {}, "timeout_ms": { "type": "integer" } } } },
        "state": { "enum": ["scheduled", "queued", "running", "succeeded", "retrying", "dead", "cancelled"] },
        "priority": { "type": "integer" }, "correlation_id": { "type": "string" }, "idempotency_key": { "type": ["string", "null"] },
        "created_at": time, "run_at": time, "finished_at": maybe_time,
        "attempts": { "type": "integer", "minimum": 0 }, "max_attempts": { "type": "integer", "minimum": 1 },
        "history": { "type": "array", "items": { "type": "object", "required": ["attempt", "started_at", "instance"], "properties": {
            "attempt": { "type": "integer" }, "started_at": time, "finished_at": maybe_time, "instance": { "type": "string" }, "error": error } } },
        "result": {}, "result_truncated": { "type": "boolean" }, "error": error,
        "instance": { "type": ["string", "null"] }, "lease_until": maybe_time } }));
    into.insert(
        "JobPage".into(),
        json!({ "type": "object", "required": ["jobs", "next_cursor"], "properties": {
        "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } },
        "next_cursor": { "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last. A page ends early, before `limit`, once it holds about 4 MB of jobs" },
        "stale": { "type": "boolean", "description": "present (true) when the cluster's jobs come from a view that is not current: the broker is unreachable (the last known state), or this instance has not yet read them all (its first listing after a while without one)" },
        "partial": { "type": "boolean", "description": "present (true) when the listing covers only part of the cluster's jobs: this instance holds at most `koan.nats.view_max_records` of them and `koan.nats.view_max_mb` of their JSON (the most recently written, failures and unfinished jobs before successes); a job left out is still read by its id" } } }),
    );
}
