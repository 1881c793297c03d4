//! The mail service the action tests invoke: `Mailer` (typed and JSON parameters,
//! errors, chains, panics, enqueue, correlation ids) with the probe that records what
//! it saw, and the disabled `Dormant`.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

/// The parameters of `send`. `handle` is not serializable: it survives only when the
/// value is passed through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Email {
    pub(crate) to: String,
    pub(crate) subject: String,
    #[serde(skip)]
    pub(crate) handle: Option<u64>,
}

/// A caller-side type of the same shape as `Email`.
#[derive(Debug, Serialize)]
pub(crate) struct OutgoingMail {
    pub(crate) to: &'static str,
    pub(crate) subject: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Receipt {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) handle: Option<u64>,
    pub(crate) correlation_id: String,
    pub(crate) id: Option<String>,
}

/// What the correlation action saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub(crate) correlation_id: String,
    pub(crate) id: Option<String>,
    pub(crate) priority: i32,
    pub(crate) service: String,
    pub(crate) action: String,
}

pub(crate) struct Mailer {
    pub(crate) log: Arc<Mutex<Vec<u32>>>,
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) started: mpsc::UnboundedSender<()>,
}

pub(crate) struct Probe {
    pub(crate) log: Arc<Mutex<Vec<u32>>>,
    pub(crate) gate: Arc<Semaphore>,
    pub(crate) started: mpsc::UnboundedReceiver<()>,
}

impl Probe {
    pub(crate) fn log(&self) -> Vec<u32> {
        self.log.lock().expect("log lock").clone()
    }
}

pub(crate) fn mailer() -> (Mailer, Probe) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Mailer {
            log: Arc::clone(&log),
            gate: Arc::clone(&gate),
            started: tx,
        },
        Probe {
            log,
            gate,
            started: rx,
        },
    )
}

impl Service for Mailer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Mailer").description("Sends mail")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "send",
            |_svc: Arc<Self>, mail: Email, cx: ActionContext| async move {
                Ok::<_, BoxError>(Receipt {
                    to: mail.to,
                    subject: mail.subject,
                    handle: mail.handle,
                    correlation_id: cx.correlation_id().to_owned(),
                    id: cx.id().map(str::to_owned),
                })
            },
        )
        .description("Sends an email");
        a.action(
            "fail",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("smtp server refused the connection".into())
            },
        );
        a.action(
            "panic",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                if std::hint::black_box(true) {
                    panic!("kaboom in the handler");
                }
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "log",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.log.lock().expect("log lock").push(n);
                Ok::<_, BoxError>(n)
            },
        );
        a.action(
            "refuse",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                Err::<u32, BoxError>(format!("refusing {n}").into())
            },
        );
        a.action(
            "seen",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                Ok::<_, BoxError>(Seen {
                    correlation_id: cx.correlation_id().to_owned(),
                    id: cx.id().map(str::to_owned),
                    priority: cx.priority(),
                    service: cx.service().to_owned(),
                    action: cx.action().to_owned(),
                })
            },
        );
        // Waits for a permit, or for the host to stop.
        a.action(
            "block",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let _ = svc.started.send(());
                tokio::select! {
                    p = svc.gate.acquire() => { p?.forget(); Ok::<_, BoxError>("released") }
                    _ = cx.cancelled() => Ok("interrupted"),
                }
            },
        );
        a.event::<Receipt>("Sent");
        a.event_described::<u32>("Bounced", "A mail came back");
    }
}

impl BackgroundService for Mailer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Dormant;

impl Service for Dormant {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Dormant").enabled(false)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "wake",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move { Ok::<_, BoxError>("awake") },
        );
    }
}

impl BackgroundService for Dormant {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A started host running a new `Mailer` (and the disabled `Dormant`), and the
/// mailer's probe.
pub(crate) async fn start() -> anyhow::Result<(HostHandle, Probe)> {
    let (svc, probe) = mailer();
    let host = koan::testing::host()
        .instance(svc)
        .service::<Dormant>()
        .build()?
        .start();
    host.started().await?;
    Ok((host, probe))
}

/// Stops the host, as the last step of a test.
pub(crate) async fn stop(host: &HostHandle) -> anyhow::Result<()> {
    Ok(koan::testing::stop(host).await?)
}

pub(crate) fn email(to: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "hello".to_owned(),
        handle: Some(42),
    }
}
