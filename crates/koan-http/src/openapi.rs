//! The OpenAPI 3.1 document of the API, with a concrete path per declared action whose
//! request body is that action's parameter schema.

use axum::body::Bytes;
use koan::HostHandle;
use serde_json::{Value, json};

fn error_responses() -> Value {
    let e = json!({ "$ref": "#/components/responses/Error" });
    json!({
        "400": e, "401": e, "404": e, "409": e, "413": e, "429": e, "500": e, "503": e, "504": e
    })
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" },
            "description": "Service name (case-insensitive)" })
}

fn call_params() -> Value {
    let mut params = json!([
        { "name": "priority", "in": "query", "schema": { "type": "integer", "minimum": -2147483648i64, "maximum": 2147483647 }, "description": "Higher runs first" },
        { "name": "timeout", "in": "query", "schema": { "type": "string", "pattern": "^0*[1-9][0-9]{0,8}(ms|s|m|h|d)?$" }, "description": "Deadline including queue time, e.g. 30s, 500ms, 5m; a bare number is seconds (timeout=5000 is 5000 s, 83 minutes: write 5000ms for milliseconds); at most 7 days. A stored job (wait=false) takes it as each run's deadline; with delay or at and wait=true, it bounds the wait only" },
        { "name": "wait", "in": "query", "schema": { "type": "boolean" }, "description": "`true` (waits for the outcome: an action call's default) or `false` (stores a job and answers 202 once it is stored: a poke route's default); another value is refused" },
        { "name": "X-Correlation-Id", "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$" } }
    ]);
    if let Value::Array(list) = &mut params {
        list.extend(crate::openapi_jobs::enqueue_params());
    }
    params
}

fn call_responses() -> Value {
    let mut r = error_responses();
    if let Some(m) = r.as_object_mut() {
        m.insert("200".into(), json!({ "description": "The action's result", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ActionResult" } } } }));
        m.insert("202".into(), json!({ "description": "Accepted (wait=false)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } }));
    }
    r
}

fn json_get(summary: &str, params: Value) -> Value {
    let mut responses = error_responses();
    if let Some(m) = responses.as_object_mut() {
        m.insert(
            "200".into(),
            json!({ "description": "OK", "content": { "application/json": { "schema": {} } } }),
        );
    }
    json!({ "get": { "summary": summary, "parameters": params, "responses": responses } })
}

fn health_get(summary: &str) -> Value {
    json!({ "get": { "summary": summary, "responses": {
        "200": { "description": "pass or warn", "content": { "application/health+json": { "schema": { "$ref": "#/components/schemas/Health" } } } },
        "503": { "description": "fail", "content": { "application/health+json": { "schema": { "$ref": "#/components/schemas/Health" } } } }
    } } })
}

/// The document, serialized, kept for as long as the host's services are the same:
/// its paths and schemas are their declared actions, and building it cost 4 ms of
/// CPU a request (about a hundred times `/health/live`), on a route any client may
/// ask without a token.
#[derive(Default)]
pub(crate) struct Cached(std::sync::Mutex<Option<(Vec<String>, Bytes)>>);

impl Cached {
    /// The document for `host`'s services.
    pub(crate) async fn get(&self, host: &HostHandle) -> Bytes {
        let names = host.service_names();
        if let Some((known, doc)) = &*self.lock()
            && *known == names
        {
            return doc.clone();
        }
        let (doc, complete) = document(host, &names).await;
        // A `Value` always serializes.
        let doc = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        if complete {
            *self.lock() = Some((names, doc.clone()));
        }
        doc
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Vec<String>, Bytes)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The document for services `names` of `host`; `false` when a service's
/// description could not be read (it is left out, and the document not kept).
async fn document(host: &HostHandle, names: &[String]) -> (Value, bool) {
    let mut complete = true;
    let mut paths = serde_json::Map::new();
    paths.insert("/api/services".into(), json_get("Every service", json!([])));
    paths.insert(
        "/api/services/{name}".into(),
        json_get(
            "A service's kind, schedule, actions and events",
            json!([name_param()]),
        ),
    );
    paths.insert(
        "/api/services/{name}/status".into(),
        json_get("A service's status", json!([name_param()])),
    );
    paths.insert("/api/services/{name}/health".into(), {
        let mut h = health_get("A service's health");
        h["get"]["parameters"] = json!([name_param()]);
        h["get"]["responses"]["404"] = json!({ "$ref": "#/components/responses/Error" });
        h
    });
    crate::openapi_jobs::paths(&mut paths, &error_responses);
    crate::openapi_activity::paths(&mut paths, &error_responses);
    let mut generic_params = vec![
        name_param(),
        json!({ "name": "action", "in": "path", "required": true, "schema": { "type": "string" } }),
    ];
    if let Value::Array(extra) = call_params() {
        generic_params.extend(extra);
    }
    paths.insert(
        "/api/services/{name}/actions/{action}".into(),
        json!({ "post": {
        "summary": "Run an action; the body is its parameters",
        "parameters": generic_params,
        "requestBody": { "required": false, "content": { "application/json": { "schema": {} } } },
        "responses": call_responses()
    } }),
    );
    for (route, declared) in [
        ("trigger", "`trigger`, `trigger-now` or `on-trigger-now`"),
        ("check-queue", "`check-queue`"),
    ] {
        let mut params = vec![name_param()];
        if let Value::Array(extra) = call_params() {
            params.extend(extra);
        }
        paths.insert(format!("/api/services/{{name}}/{route}"), json!({ "post": {
            "summary": format!("Run the service's `{route}` action now"),
            "description": format!("Reaches the action the service declares as {declared} (any case or separator), or the built-in `{route}` of a periodic service. Answers at once with the stored job (202) unless `wait=true`."),
            "parameters": params, "responses": call_responses()
        } }));
    }
    let mut params = vec![name_param()];
    if let Value::Array(extra) = call_params() {
        params.extend(extra);
    }
    paths.insert("/api/services/{name}/process-batch".into(), json!({ "post": {
        "summary": "Run the service's `process-batch` action now; the body is the batch",
        "description": "Reaches the action the service declares as `process-batch` (any case or separator), or the built-in `process-batch` of a periodic service. Answers at once with the stored job (202) unless `wait=true`.",
        "parameters": params,
        "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchRequest" } } } },
        "responses": call_responses()
    } }));
    let sse = |summary: &str, params: Value| {
        json!({ "get": { "summary": summary, "parameters": params, "responses": {
        "200": { "description": "Server-Sent Events", "content": { "text/event-stream": { "schema": { "type": "object", "description": "One event: `event` is its name, `data` its JSON envelope as text", "properties": { "event": { "type": "string" }, "data": { "type": "string" }, "id": { "type": "string" }, "retry": { "type": "integer" } } } } } },
        "400": { "$ref": "#/components/responses/Error" }, "401": { "$ref": "#/components/responses/Error" },
        "404": { "$ref": "#/components/responses/Error" }, "503": { "$ref": "#/components/responses/Error" }
    } } })
    };
    let event_q = json!({ "name": "event", "in": "query", "schema": { "type": "string" } });
    let last_id = json!({ "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" },
        "description": "A reconnect: the id of the last event received (each frame's id is `<boot>.<arrival>`, the event's number on this host). The kept events after it come first (a named `missed` event first when some are no longer kept, or the id is another boot's or host's), then the live ones" });
    paths.insert(
        "/api/events".into(),
        sse(
            "Live events of every service",
            json!([{ "name": "service", "in": "query", "schema": { "type": "string" } }, event_q, last_id]),
        ),
    );
    paths.insert(
        "/api/services/{name}/events".into(),
        sse(
            "Live events of a service",
            json!([name_param(), event_q, last_id]),
        ),
    );
    paths.insert("/health".into(), health_get("Overall health"));
    paths.insert("/health/live".into(), health_get("Liveness"));
    paths.insert("/health/ready".into(), health_get("Readiness"));
    paths.insert("/metrics".into(), json!({ "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "Prometheus text", "content": { "text/plain": { "schema": { "type": "string" } } } }, "503": { "description": "16 scrapes in flight already: retry after `Retry-After` seconds" } } } }));

    // A concrete path per declared action, with its parameter schema.
    for name in names {
        let Ok(info) = host.service(name).info().await else {
            complete = false;
            continue;
        };
        for action in info.actions {
            let mut params = Vec::new();
            if let Value::Array(extra) = call_params() {
                params.extend(extra);
            }
            // A declared action without parameters takes no body or `null`; the
            // built-in trigger and check-queue ignore what they are sent.
            let schema = if action.params_schema.is_null() && action.builtin {
                json!({})
            } else if action.params_schema.is_null() {
                json!({ "type": "null", "description": "no parameters: send no body or `null`" })
            } else {
                action.params_schema.clone()
            };
            paths.insert(
                format!("/api/services/{}/actions/{}", name, action.name),
                json!({ "post": {
                    "summary": action.description.clone().unwrap_or_else(|| format!("{} of {}", action.name, name)),
                    "tags": [name],
                    "parameters": params,
                    "requestBody": { "required": !action.params_schema.is_null(), "content": { "application/json": { "schema": schema } } },
                    "responses": call_responses()
                } }),
            );
        }
    }

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": { "title": "Koan control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "message"], "properties": { "error": { "type": "string" }, "message": { "type": "string" }, "correlation_id": { "type": "string", "description": "The call's, on an error answering a call that waited (also in `X-Correlation-Id`)" } } },
                "ActionResult": { "type": "object", "required": ["service", "action", "correlation_id", "result"], "properties": {
                    "service": { "type": "string" }, "action": { "type": "string" }, "correlation_id": { "type": "string" }, "result": {} } },
                "BatchRequest": { "type": ["object", "null"], "additionalProperties": false, "properties": {
                    "batchSize": { "type": ["integer", "null"], "minimum": 0, "maximum": 4294967295u64 }, "filter": { "type": ["string", "null"] } } },
                "Health": { "type": "object", "required": ["status"], "properties": {
                    "status": { "enum": ["pass", "warn", "fail"] },
                    "checks": { "type": "object", "description": "`/health`: each service (`<name>:health`), the transport (`transport:connection`) and the job store (`jobs:store`), a list of one check", "additionalProperties": { "type": "array", "items": { "$ref": "#/components/schemas/HealthCheck" } } },
                    "notes": { "type": "array", "items": { "type": "string" } } } },
                "HealthCheck": { "type": "object", "required": ["componentType", "status"], "properties": {
                    "componentType": { "enum": ["service", "component", "datastore"] },
                    "status": { "enum": ["pass", "warn", "fail"] },
                    "critical": { "type": "boolean", "description": "A service's: whether its fail fails the host (a non-critical one's counts as warn)" },
                    "output": { "type": ["string", "null"], "description": "The report's description, else its error; with the token only, when one is configured" },
                    "error": { "type": "string", "description": "The report's error, when it has one; with the token only, when one is configured" } } }
            }
        },
        "security": [{ "bearer": [] }, {}]
    });
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        crate::openapi_jobs::schemas(schemas);
        crate::openapi_activity::schemas(schemas);
    }
    (doc, complete)
}

#[cfg(test)]
mod tests {
    use super::Cached;

    /// Built once for the same services: the second answer is the first one's bytes.
    #[tokio::test]
    async fn the_document_is_built_once_for_the_same_services() -> Result<(), koan::Error> {
        let host = koan::testing::host().build()?.start();
        let cached = Cached::default();
        let first = cached.get(&host).await;
        let again = cached.get(&host).await;
        assert_eq!(first.as_ptr(), again.as_ptr());
        assert!(first.starts_with(b"{\"components\""));
        Ok(())
    }
}
