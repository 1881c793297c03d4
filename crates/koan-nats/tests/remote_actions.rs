//! Remote actions, queries, the registry and events between koan hosts in one test
//! process, each with its own NATS connection (as separate processes look to NATS),
//! against a real `nats-server`.

use koan::transport::HostLink as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind,
};
use koan_test_support::nats::{Member, NatsServer, announced, test_options};
use koan_test_support::{eventually, refused, refused_within, within};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The parameters of `act`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct ActParams {
    word: String,
}

/// What `act` saw, as its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Seen {
    word: String,
    host: String,
    priority: i32,
    correlation_id: String,
    remaining_ms: Option<u64>,
}

/// The payload of `Evt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Tick {
    host: String,
    n: u32,
}

/// The service under test; `host` tells the instances apart.
struct Svc {
    host: String,
    handled: Arc<AtomicU32>,
}

impl Svc {
    fn new(host: &str) -> (Svc, Arc<AtomicU32>) {
        let handled = Arc::new(AtomicU32::new(0));
        (
            Svc {
                host: host.to_owned(),
                handled: Arc::clone(&handled),
            },
            handled,
        )
    }
}

// Declared in `Svc::actions` as `a.event::<Tick>("Evt")`: typed subscribers name it by type.
impl koan::event::Emits<Tick> for Svc {
    const EVENT: &'static str = "Evt";
}

impl Service for Svc {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Svc")
            .description("The remote service")
            .max_concurrency(8)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "act",
            |svc: Arc<Self>, p: ActParams, cx: ActionContext| async move {
                svc.handled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Seen {
                    word: p.word,
                    host: svc.host.clone(),
                    priority: cx.priority(),
                    correlation_id: cx.correlation_id().to_owned(),
                    remaining_ms: cx.remaining().map(|d| d.as_millis() as u64),
                })
            },
        );
        a.action(
            "fail",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("the disk is on fire".into())
            },
        );
        // Sleeps until its deadline (or a minute).
        a.action(
            "stall",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                tokio::select! {
                    _ = cx.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                Ok::<_, BoxError>("woke")
            },
        );
        // Emits `n` events `Evt` in order.
        a.action(
            "emit",
            |svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                for i in 0..n {
                    cx.emit(
                        "Evt",
                        Tick {
                            host: svc.host.clone(),
                            n: i,
                        },
                    )
                    .await;
                }
                Ok::<_, BoxError>(n)
            },
        );
        a.event::<Tick>("Evt");
    }
}

impl BackgroundService for Svc {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A `nats-server`, one member per named instance of `Svc` and a member `b` that
/// runs none and calls them.
struct Cluster {
    _server: NatsServer,
    /// Each instance's member and its count of `act` calls handled.
    a: Vec<(Member, Arc<AtomicU32>)>,
    b: Member,
}

impl Cluster {
    async fn start(instances: &[&str]) -> anyhow::Result<Cluster> {
        let server = NatsServer::start()?;
        let mut a = Vec::new();
        for name in instances {
            let (svc, handled) = Svc::new(name);
            let member = Member::join(test_options(&server.url()), |b| b.instance(svc)).await?;
            a.push((member, handled));
        }
        let b = Member::join(test_options(&server.url()), |b| b).await?;
        // The calls start once `b` has heard every instance (they are what the
        // tests look at, not how soon after joining a host knows the others).
        if !instances.is_empty() {
            announced(&b.host, "Svc", instances.len()).await?;
        }
        Ok(Cluster {
            _server: server,
            a,
            b,
        })
    }

    /// How many `act` calls instance `k` handled.
    fn handled(&self, k: usize) -> u32 {
        self.a[k].1.load(Ordering::SeqCst)
    }

    /// Calls `act` on the service by name from `b` and gives what it saw.
    async fn act(&self, what: &str, word: &str) -> anyhow::Result<Seen> {
        let call = self
            .b
            .host
            .service("Svc")
            .action("act", json!({ "word": word }));
        Ok(within(what, call.execute()).await??.value::<Seen>()?)
    }

    /// Stops `b`, then the instances, the last started first.
    async fn stop(self) -> anyhow::Result<()> {
        self.b.stop().await?;
        for (member, _) in self.a.into_iter().rev() {
            member.stop().await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_execute_by_type_and_by_name_carries_priority_timeout_and_correlation()
-> anyhow::Result<()> {
    let cluster = Cluster::start(&["A"]).await?;
    let b = &cluster.b;
    // B knows the type but does not run it.
    assert!(!b.host.hosts("Svc"));

    let by_type = within(
        "a remote call by type",
        b.host
            .services::<Svc>()
            .action(
                "act",
                ActParams {
                    word: "typed".into(),
                },
            )
            .priority(7)
            .timeout(Duration::from_secs(20))
            .correlation_id("corr-typed")
            .execute(),
    )
    .await??;
    assert_eq!(by_type.correlation_id(), "corr-typed");
    let seen = by_type.value::<Seen>()?;
    assert_eq!(seen.word, "typed");
    assert_eq!(seen.host, "A", "ran on A");
    assert_eq!(seen.priority, 7, "the priority arrived");
    assert_eq!(
        seen.correlation_id, "corr-typed",
        "the correlation id arrived"
    );
    let remaining = seen
        .remaining_ms
        .expect("the timeout arrived as a deadline");
    assert!(
        remaining > 0 && remaining <= 20_000,
        "deadline within the 20 s timeout: {remaining} ms"
    );

    let by_name = b
        .host
        .service("Svc")
        .action("act", json!({"word": "named"}));
    let by_name = by_name.correlation_id("corr-named").execute();
    let seen = within("a remote call by name", by_name)
        .await??
        .value::<Seen>()?;
    assert_eq!((seen.word.as_str(), seen.host.as_str()), ("named", "A"));
    assert_eq!(seen.priority, 0);
    assert_eq!(seen.correlation_id, "corr-named");
    assert_eq!(seen.remaining_ms, None, "no timeout given, no deadline");

    // Case-insensitive names, generated correlation ids.
    let out = within(
        "a remote call by ref",
        b.host
            .service("svc")
            .action("ACT", json!({"word": "ref"}))
            .execute(),
    )
    .await??;
    let generated = out.correlation_id().to_owned();
    assert!(!generated.is_empty());
    assert_eq!(out.value::<Seen>()?.correlation_id, generated);

    assert_eq!(cluster.handled(0), 3);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_keep_their_kind() -> anyhow::Result<()> {
    let cluster = Cluster::start(&["A"]).await?;
    let (by_name, by_type) = (
        cluster.b.host.service("Svc"),
        cluster.b.host.services::<Svc>(),
    );
    let stall = by_type
        .action("stall", ())
        .timeout(Duration::from_millis(300));
    let refusals = [
        (
            "`word` given a number",
            by_name.action("act", json!({"word": 5})),
            ErrorKind::InvalidParameters,
            "`word`",
        ),
        (
            "`word` missing",
            by_type.action("act", json!({})),
            ErrorKind::InvalidParameters,
            "word",
        ),
        (
            "an unknown action",
            by_name.action("fax", Value::Null),
            ErrorKind::UnknownAction,
            "fax",
        ),
        (
            "a failing handler",
            by_name.action("fail", Value::Null),
            ErrorKind::Handler,
            "the disk is on fire",
        ),
        ("a handler past its timeout", stall, ErrorKind::Timeout, ""),
    ];
    for (what, call, kind, says) in refusals {
        let e = refused(what, call.execute(), kind).await?;
        assert!(e.message().contains(says), "{what}: names {says:?}: {e}");
    }
    assert_eq!(cluster.handled(0), 0, "no bad call reached `act`");
    // The service is still fine.
    let seen = cluster.act("a good call after the bad ones", "ok").await?;
    assert_eq!(seen.word, "ok");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_is_refused_at_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(&[]).await?;
    let b = &cluster.b;
    // Its view of the registry in (its own entry heard): it can tell a service
    // no instance announced.
    let me = b.id();
    eventually("b to hear its own entry", || async {
        b.host
            .instances()
            .await
            .is_ok_and(|l| l.iter().any(|i| i.host_id == me))
    })
    .await?;

    // Well below the default request timeout (10 s in these tests): no hang. A
    // service no instance ever announced is unknown (a typo is not retried as an
    // outage would be).
    let at_once = Duration::from_secs(5);
    let unavailable = ErrorKind::UnknownService;
    let ghost = b.host.service("Ghost").action("haunt", Value::Null);
    refused_within(
        at_once,
        "a call to a service nobody runs",
        ghost.execute(),
        unavailable,
    )
    .await?;
    let by_type = b
        .host
        .services::<Svc>()
        .action("act", ActParams { word: "x".into() });
    refused_within(at_once, "a call by type", by_type.execute(), unavailable).await?;
    let ghost = b.host.service("Ghost");
    let status = ghost.status();
    refused_within(
        at_once,
        "the status of a service nobody runs",
        status,
        unavailable,
    )
    .await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_load() -> anyhow::Result<()> {
    let cluster = Cluster::start(&["A1", "A2"]).await?;
    let b = &cluster.b;

    let calls = (0..40).map(|i| {
        let svc = b.host.services::<Svc>();
        async move {
            svc.action(
                "act",
                ActParams {
                    word: format!("w{i}"),
                },
            )
            .execute()
            .await?
            .value::<Seen>()
        }
    });
    let results = within("40 calls", futures_util::future::join_all(calls)).await?;
    let mut by_host = std::collections::BTreeMap::<String, u32>::new();
    for r in results {
        *by_host.entry(r?.host).or_default() += 1;
    }
    let (n1, n2) = (cluster.handled(0), cluster.handled(1));
    assert_eq!(n1 + n2, 40, "every call handled once: {by_host:?}");
    assert!(n1 > 0 && n2 > 0, "both instances took some: {n1} and {n2}");
    assert_eq!(by_host.get("A1").copied().unwrap_or(0), n1);
    assert_eq!(by_host.get("A2").copied().unwrap_or(0), n2);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_info_and_instances_reach_across_hosts() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&["A1", "A2"]).await?;
    let (a2, _) = cluster.a.pop().expect("A2");
    let (a1, b) = (&cluster.a[0].0, &cluster.b);

    let status = within("remote status", b.host.service("Svc").status()).await??;
    assert_eq!(status.name, "Svc");
    assert_eq!(status.kind, koan::service::ServiceKind::Background);
    assert!(status.enabled);
    let status = within("remote status by type", b.host.services::<Svc>().status()).await??;
    assert_eq!(status.name, "Svc");

    let health = within("remote health", b.host.service("svc").health()).await??;
    assert_eq!(health.service, "Svc");
    assert_eq!(health.report.status, koan::health::HealthStatus::Healthy);

    let info = within("remote info", b.host.service("Svc").info()).await??;
    assert_eq!(info.name, "Svc");
    assert_eq!(info.description.as_deref(), Some("The remote service"));
    let actions: Vec<_> = info.actions.iter().map(|a| a.name.as_str()).collect();
    for name in ["act", "fail", "stall", "emit"] {
        assert!(actions.contains(&name), "lists `{name}`: {actions:?}");
    }
    assert!(info.events.iter().any(|e| e.name == "Evt"), "{info:?}");

    // The registry: both hosts of Svc with their services, and B itself.
    let instances = within("instances", b.host.instances()).await??;
    let find = |id: &str| instances.iter().find(|i| i.host_id == id);
    for m in [a1, &a2] {
        let i = find(&m.id()).unwrap_or_else(|| panic!("{} listed: {instances:?}", m.id()));
        let names: Vec<_> = i.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Svc"]);
    }
    let me = find(&b.id()).expect("B is listed too");
    assert!(me.services.is_empty());
    assert_eq!(b.host.host_id().as_deref(), Some(b.id().as_str()));

    // A detached host leaves the registry at once.
    let gone = a2.id();
    a2.stop().await?;
    eventually("A2 to leave the registry", || async {
        b.host
            .instances()
            .await
            .is_ok_and(|all| all.iter().all(|i| i.host_id != gone))
    })
    .await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_hosts_in_order_with_their_correlation_id() -> anyhow::Result<()> {
    const N: u32 = 200;
    let cluster = Cluster::start(&["A1", "A2"]).await?;
    let (a1, a2, b) = (&cluster.a[0].0, &cluster.a[1].0, &cluster.b);

    type Got = Arc<Mutex<Vec<(Option<String>, Tick)>>>;
    let got: Got = Arc::default();
    let sink = Arc::clone(&got);
    let _sub = b
        .host
        .service("Svc")
        .on("Evt")
        .handle_envelope(move |env: koan::event::EventEnvelope| {
            let sink = Arc::clone(&sink);
            async move {
                let tick = env.payload::<Tick>()?;
                sink.lock()
                    .map_err(|_| "poisoned")?
                    .push((env.correlation_id().map(str::to_owned), tick));
                Ok::<(), BoxError>(())
            }
        })
        .buffer(4 * N as usize)
        .subscribe()
        .await?;
    // A typed handler on B sees them too.
    let typed = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&typed);
    let _typed_sub = b
        .host
        .services::<Svc>()
        .on::<Tick>()
        .handle(move |_t: Tick| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .buffer(4 * N as usize)
        .subscribe()
        .await?;

    // Both emitters at once, each under its own correlation id.
    let emit = |m: &Member, corr: &str| {
        let call = m.host.services::<Svc>().action("emit", N);
        call.correlation_id(corr).execute()
    };
    let (e1, e2) = (emit(a1, "from-a1"), emit(a2, "from-a2"));
    let (r1, r2) = within("the emitters", async { tokio::join!(e1, e2) }).await?;
    assert_eq!(r1?.value::<u32>()?, N);
    assert_eq!(r2?.value::<u32>()?, N);

    eventually("every event on B", || async {
        got.lock().map(|g| g.len()).unwrap_or(0) >= 2 * N as usize
            && typed.load(Ordering::SeqCst) >= 2 * N
    })
    .await?;
    let got = got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    assert_eq!(got.len(), 2 * N as usize, "each event once");
    for (host, corr) in [("A1", "from-a1"), ("A2", "from-a2")] {
        let from: Vec<_> = got.iter().filter(|(_, t)| t.host == host).collect();
        assert!(
            from.iter().all(|(c, _)| c.as_deref() == Some(corr)),
            "events of {host} carry the correlation id {corr}"
        );
        let order: Vec<u32> = from.iter().map(|(_, t)| t.n).collect();
        assert_eq!(
            order,
            (0..N).collect::<Vec<_>>(),
            "{host}'s events in order"
        );
    }
    cluster.stop().await
}
