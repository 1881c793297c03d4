//! The built-in pokes take what they say: `trigger` and `check-queue` no
//! parameters (nothing, `null` or `{}`), `process-batch` `batchSize` and `filter`.
//! Anything else is refused `invalid_parameters`, naming the field and what the
//! action takes: `trigger` with `{"force": true}` ran a plain tick, the field
//! dropped without a word (found by a probe).

use koan::error::ErrorKind;
use koan::{BoxError, ServiceContext};
use serde_json::{Value, json};

#[koan::service(every = "1h", name = "Ticker", discover = false)]
#[derive(Default)]
struct Ticker;

impl koan::PeriodicService for Ticker {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn poke(host: &koan::HostHandle, action: &str, params: Value) -> koan::error::Result<()> {
    host.service("Ticker")
        .action(action, params)
        .execute()
        .await
        .map(drop)
}

#[tokio::test]
async fn a_poke_refuses_a_field_it_does_not_take_naming_it() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Ticker>().build()?.start();
    host.started().await?;
    for action in ["trigger", "check-queue"] {
        let err = poke(&host, action, json!({ "force": true }))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{action} took `force`"))?;
        assert_eq!(err.kind(), ErrorKind::InvalidParameters, "{action}: {err}");
        let said = err.to_string();
        assert!(
            said.contains(&format!("`{action}`"))
                && said.contains("`force`")
                && said.contains("takes no parameters"),
            "{action}: {said}"
        );
        let err = poke(&host, action, json!(5))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{action} took 5"))?;
        assert_eq!(err.kind(), ErrorKind::InvalidParameters, "{action}: {err}");
        for none in [Value::Null, json!({})] {
            poke(&host, action, none).await?;
        }
    }
    let err = poke(&host, "process-batch", json!({ "size": 10 }))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("process-batch took `size`"))?;
    assert_eq!(err.kind(), ErrorKind::InvalidParameters, "{err}");
    let said = err.to_string();
    assert!(
        said.contains("`size`") && said.contains("batchSize") && said.contains("filter"),
        "{said}"
    );
    poke(&host, "process-batch", json!({ "batchSize": 10 })).await?;
    host.shutdown();
    host.wait().await.into_result()?;
    Ok(())
}
