//! The HTTP action route with an arbitrary query string, `X-Correlation-Id` and body,
//! through the real router: every answer is JSON with a 2xx/4xx status — no 5xx, no
//! panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Host, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Echo;

impl Service for Echo {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Echo")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |_s: Arc<Self>, p: String, _cx: ActionContext| async move { Ok::<_, BoxError>(p) },
        );
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn app() -> &'static (tokio::runtime::Runtime, HostHandle, axum::Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, HostHandle, axum::Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let host = rt.block_on(async {
            let host = Host::builder()
                .instance(Echo)
                .build()
                .expect("host")
                .start();
            host.started().await.expect("started");
            host
        });
        let router = koan_http::router(host.clone(), koan_http::HttpOptions::default());
        (rt, host, router)
    })
}

fuzz_target!(|data: &[u8]| {
    // query \0 correlation id \0 body
    let mut parts = data.splitn(3, |b| *b == 0);
    let query = parts.next().unwrap_or_default();
    let correlation = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().to_vec();
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let uri = format!("/api/services/echo/actions/echo?{query}");
    let mut req = Request::post(uri.as_str());
    if !correlation.is_empty() {
        req = req.header("x-correlation-id", correlation);
    }
    let Ok(req) = req.body(Body::from(body)) else {
        return; // not a valid URI or header value: hyper would refuse it first
    };
    let (rt, _host, router) = app();
    let resp = rt
        .block_on(router.clone().oneshot(req))
        .expect("infallible");
    let status = resp.status();
    assert!(!status.is_server_error(), "{uri}: {status}");
    let bytes = rt
        .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: {status} with a non-JSON body ({e}): {bytes:?}"));
    if status.is_client_error() {
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
});
