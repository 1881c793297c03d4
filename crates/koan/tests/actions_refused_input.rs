//! A handler that refuses its input (`InvalidParameters`) is the caller's mistake,
//! counted as the same refusal made before the handler runs: not a failure of the
//! service. The demo's `translate` to `xx` answered 400 and was counted
//! `handler_error`, in the service's failures and the dashboard's (found by a probe).

use std::sync::Arc;

use koan::error::{Error, ErrorKind};
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};

struct Translator;

impl Service for Translator {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Translator")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "translate",
            |_svc: Arc<Self>, to: String, _cx: ActionContext| async move {
                if to.len() != 2 {
                    let e = Error::new(ErrorKind::InvalidParameters, "`to` is a language code");
                    return Err::<String, BoxError>(e.into());
                }
                if to == "xx" {
                    return Err("no dictionary for xx".into());
                }
                Ok(to)
            },
        );
    }
}

impl BackgroundService for Translator {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn refused_input_is_neither_a_success_nor_a_failure() -> anyhow::Result<()> {
    let host = koan::testing::host().instance(Translator).build()?.start();
    host.started().await?;
    let call = |to: &str| {
        host.service("Translator")
            .action("translate", to.to_owned())
            .execute()
    };

    for _ in 0..3 {
        let e = call("english").await.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    }
    call("fr").await?;
    let e = call("xx").await.expect_err("a failure");
    assert_eq!(e.kind(), ErrorKind::Handler, "{e}");

    let history = host.history("Translator")?;
    assert_eq!(
        (history.actions_succeeded, history.actions_failed),
        (1, 1),
        "the three refusals are neither"
    );
    Ok(())
}
