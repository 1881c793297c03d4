//! # koan-http: the HTTP control plane of a koan host
//!
//! An axum [`Router`] with the services API, health endpoints, live events as
//! Server-Sent Events, Prometheus metrics, an OpenAPI document and the dashboard.
//! Mount it into your own app with [`router`], or serve it alone with [`serve`].
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/services` | every service: name, kind, state, health, enabled, counts |
//! | `GET /api/services/{name}` | info: kind, schedule, actions with parameter schemas, events |
//! | `GET /api/services/{name}/status`, `/health` | status; health as `application/health+json` |
//! | `POST /api/services/{name}/actions/{action}` | body = parameters; `?priority=&timeout=&wait=`; `X-Correlation-Id` |
//! | `POST /api/services/{name}/restart` | start again a background service its supervisor gave up on (`failed`); 409 otherwise |
//! | `POST /api/services/{name}/trigger`, `/check-queue`, `/process-batch` | poke a service: answers at once with a stored job (`wait=true` waits); a built-in poke while one waits to run joins it (`created: false`, `coalesced`) |
//! | `GET /api/actions/{id}` | the record of an action enqueued with `wait=false` |
//! | `GET /api/services/{name}/events`, `GET /api/events` | live events (SSE) |
//! | `GET /api/services/{name}/history` | the service's last runs and its action counts |
//! | `GET /api/events/recent` | the host's last events (bounded, in memory) |
//! | `GET /api/jobs…` | stored jobs: list, counts, one, retry, cancel, delete, retry-dead |
//! | `GET /api/stats/throughput` | succeeded/failed work per second and per hour |
//! | `GET /api/instances` | the hosts of the cluster (or this one) with heartbeat and load |
//! | `GET /health`, `/health/live`, `/health/ready` | `pass`/`warn`/`fail`; unhealthy → 503 |
//! | `GET /metrics` | Prometheus text: rendered once for the scrapes that wait for it (never one begun before a scrape came); at most 16 scrapes in flight (each cut off past 30 s), one more is answered 503 with `Retry-After: 1` |
//! | `GET /api/openapi.json`, `GET /`, `/assets/…` | the API described; the dashboard |
//!
//! Errors are JSON `{ "error": kind, "message": … }`: 400 bad input (naming the
//! field), 401 token, 404 unknown, 409 disabled, 413 body too large, 429 busy,
//! 503 shutting down, 504 timeout, 500 handler failure.
//!
//! The token, when one is configured: every mutating request and every `/api` read
//! but `/api/openapi.json` needs it (`Authorization: Bearer …`; event streams take
//! `?token=` too); the page, its assets, `/health*` and `/metrics` stay open, and
//! `/health` and `/health/ready` give their details only with it (a wrong token is
//! refused there too). Each refusal is logged, sparsely, without the token.
//!
//! Hardening: the token of a mutating request is checked before its body is read;
//! a body must be JSON (415) and arrive within `body_read_timeout` (408); without a
//! token, requests from another origin (another site, or another port of this
//! host, unless listed in `cors_origins`) and non-loopback `Host` names are refused
//! (403); a
//! connection beyond the cap gets a 503; the dashboard is sent with a CSP.

mod admit;
mod auth;
mod body;
mod dashboard;
mod error;
mod guard;
mod headers;
mod listener;
mod metrics;
mod openapi;
mod openapi_activity;
mod openapi_jobs;
mod options;
mod overflow;
mod parse_errors;
mod peer;
mod query;
mod reserve;
mod routes;
mod scrape;
mod server;
mod strict_json;

use std::sync::Arc;

use axum::Router;
use koan::HostHandle;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use listener::{Listener, ServeError, bind, serve};
pub use metrics::install_metrics;
pub use options::HttpOptions;
pub use server::Server;

/// What every handler shares: one `Arc`, so that the clone axum makes per request
/// and per extractor is one reference count, not three.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) host: HostHandle,
    pub(crate) options: HttpOptions,
    pub(crate) sse_slots: Arc<Semaphore>,
    pub(crate) openapi: openapi::Cached,
    pub(crate) scrapes: scrape::Scrapes,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The control-plane router for `host`. Mount it in your own axum app, or give it to
/// [`serve`]. Install the metrics recorder with [`install_metrics`] before the host
/// runs actions, so `/metrics` sees them.
pub fn router(host: HostHandle, options: HttpOptions) -> Router {
    admit::layered(AppState::new(host, options))
}

impl AppState {
    fn new(host: HostHandle, options: HttpOptions) -> Self {
        AppState(Arc::new(Shared {
            host,
            sse_slots: Arc::new(Semaphore::new(options.max_sse_connections)),
            openapi: openapi::Cached::default(),
            scrapes: scrape::Scrapes::default(),
            options,
        }))
    }
}
