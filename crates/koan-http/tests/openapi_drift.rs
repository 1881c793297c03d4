//! The OpenAPI document and the route table cannot drift apart: every route the
//! router declares (read from its source) is described, and every described generic
//! path is a route.

use std::collections::BTreeSet;

use koan_test_support::http::{Api, call};
use reqwest::StatusCode;

/// The paths of `.route("…", …)` in the route table's source.
fn routed() -> BTreeSet<String> {
    let source = include_str!("../src/routes/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Routes that serve the page itself, not the API.
const NOT_API: [&str; 3] = ["/", "/assets/{file}", "/api/openapi.json"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_every_description_is_a_route() -> anyhow::Result<()> {
    let host = koan::testing::host().build()?.start();
    let api = Api::open(host).await?;
    let (status, doc) = call(api.get("/api/openapi.json")).await?;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let described: BTreeSet<String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let routes: BTreeSet<String> = routed()
        .into_iter()
        .filter(|r| !NOT_API.contains(&r.as_str()))
        .collect();
    assert!(
        routes.len() > 20,
        "the route table was not read: {routes:?}"
    );
    let undocumented: Vec<_> = routes.difference(&described).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    // Besides the generic paths, the document lists one concrete path per declared
    // action (`/api/services/<Name>/actions/<action>`); this host declares none.
    let unrouted: Vec<_> = described.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "described paths that no route serves: {unrouted:?}"
    );
    api.stop().await
}
