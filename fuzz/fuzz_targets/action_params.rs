//! Parameters decoded through a host's by-name action path (the path of HTTP and
//! NATS) from arbitrary JSON: the action runs, or the call is refused with
//! `InvalidParameters` — never a panic, never another outcome.
#![no_main]

use std::sync::{Arc, OnceLock};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, ErrorKind, Host, HostHandle,
    Service, ServiceContext, ServiceOptions,
};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    file_id: String,
    count: u32,
    ratio: Option<f64>,
    tags: Vec<String>,
    mode: Mode,
    #[serde(default)]
    nested: Option<Box<Params>>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Fast,
    Slow,
}

struct Target;

impl Service for Target {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Target")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action("typed", |_s: Arc<Self>, p: Params, _cx: ActionContext| async move {
            Ok::<_, BoxError>(p.count)
        });
        a.action(
            "number",
            |_s: Arc<Self>, p: i64, _cx: ActionContext| async move { Ok::<_, BoxError>(p) },
        );
        a.action(
            "unit",
            |_s: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>(()) },
        );
        a.action(
            "any",
            |_s: Arc<Self>, p: serde_json::Value, _cx: ActionContext| async move {
                Ok::<_, BoxError>(p)
            },
        );
    }
}

impl BackgroundService for Target {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn host() -> &'static (tokio::runtime::Runtime, HostHandle) {
    static HOST: OnceLock<(tokio::runtime::Runtime, HostHandle)> = OnceLock::new();
    HOST.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let host = rt.block_on(async {
            let host = Host::builder()
                .instance(Target)
                .build()
                .expect("host")
                .start();
            host.started().await.expect("started");
            host
        });
        (rt, host)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let action = ["typed", "number", "unit", "any"][usize::from(selector % 4)];
    let (rt, host) = host();
    let r = rt.block_on(
        host.service("target")
            .action(action, params.clone())
            .execute(),
    );
    match r {
        Ok(out) => {
            let v = out.json().expect("result as JSON");
            if action == "any" {
                assert_eq!(v, params);
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{action}: {e}"),
    }
});
