use std::any::TypeId;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Environment, Host, HostConfig, HostInner};
use crate::action::{ActionTable, Actions};
use crate::clock::Clock;
use crate::config::{BackgroundServicesConfig, Config, ServiceOverrides};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventBus;
use crate::registry::ServiceSpec;
use crate::registry::{Registry, ServiceCell};
use crate::schedule::Schedule;
use crate::service::Resources;
use crate::service::{
    BuildContext, FromContext, KindOf, ScheduleSpec, Service, ServiceKind, ServiceOptions,
};
use crate::transport::Transport;
use crate::util::short_type_name;

type MakeCell = Box<dyn FnOnce(&BuildEnv<'_>) -> Result<ServiceCell> + Send>;
/// A registration, keyed by type for de-duplication (`None` for named instances).
type Registration = (Option<TypeId>, MakeCell);

pub(crate) struct BuildEnv<'a> {
    resources: &'a Resources,
    environment: Environment,
    clock: &'a Clock,
    config: &'a BackgroundServicesConfig,
    throughput: &'a Arc<crate::registry::Throughput>,
}

impl BuildEnv<'_> {
    /// Declared options with configuration applied, the name, and the overrides.
    fn options<T: Service>(&self) -> (ServiceOptions, String, Option<&ServiceOverrides>) {
        let mut options = T::options();
        let name = resolve_name::<T>(&options);
        let section = options
            .config_section
            .clone()
            .unwrap_or_else(|| name.clone());
        let overrides = self.config.for_service(&section);
        if let Some(o) = overrides {
            o.apply(&mut options);
        }
        (options, name, overrides)
    }
}

/// Configures and builds a [`Host`].
///
/// Services are constructed in `build()`, in registration order, so a missing resource
/// or a bad schedule is reported before anything runs.
pub struct HostBuilder {
    registrations: Vec<Registration>,
    resources: Resources,
    grace: Duration,
    environment: Option<Environment>,
    startup_timeout: Duration,
    fail_fast: bool,
    clock: Clock,
    action_grace: Duration,
    transport: Option<Arc<dyn Transport>>,
    job_store: Option<Arc<dyn crate::job::JobStore>>,
    /// Sections under `koan` that something reads.
    config_sections: Vec<String>,
    config: Option<Config>,
    load_config: bool,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field("services", &self.registrations.len())
            .field("resources", &self.resources)
            .field("grace", &self.grace)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBuilder {
    /// A builder with the defaults: 30 s shutdown grace, 120 s startup timeout,
    /// fail-fast startup, environment from `KOAN_ENV`.
    pub fn new() -> Self {
        HostBuilder {
            registrations: Vec::new(),
            resources: Resources::default(),
            grace: Duration::from_secs(30),
            environment: None,
            startup_timeout: Duration::from_secs(120),
            fail_fast: true,
            clock: Clock::System,
            action_grace: Duration::from_secs(1),
            transport: None,
            job_store: None,
            config_sections: ["background_services", "http", "nats"]
                .map(str::to_owned)
                .to_vec(),
            config: None,
            load_config: false,
        }
    }

    fn register(mut self, type_id: TypeId, f: MakeCell) -> Self {
        match self
            .registrations
            .iter_mut()
            .find(|(id, _)| *id == Some(type_id))
        {
            Some(slot) => slot.1 = f,
            None => self.registrations.push((Some(type_id), f)),
        }
        self
    }

    /// Adds every service marked `#[service]` in any crate linked into the binary,
    /// except those already added explicitly and those marked
    /// `#[service(discover = false)]` (built by the caller and added with
    /// [`instance`](Self::instance)).
    pub fn discover(self) -> Self {
        self.discover_where(|_| true)
    }

    /// Like [`discover`](Self::discover), for the discovered services whose name
    /// passes `keep` (e.g. one process of a cluster hosting some services only).
    pub fn discover_where(mut self, keep: impl Fn(&str) -> bool) -> Self {
        for d in crate::discovery::all() {
            let id = (d.type_id)();
            if keep(d.name) && !self.registrations.iter().any(|(t, _)| *t == Some(id)) {
                self = (d.register)(self);
            }
        }
        self
    }

    /// Uses `config` (see [`Config`]): global switches, per-service overrides and
    /// typed settings from `koan.background_services`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Loads configuration with [`Config::load`] when the host is built (a bad file
    /// or value is a `build()` error).
    pub fn load_config(mut self) -> Self {
        self.load_config = true;
        self
    }

    /// Adds a service that the host constructs (`Default`, or [`FromContext`]).
    pub fn service<T: Service + FromContext>(self) -> Self {
        self.register(
            TypeId::of::<T>(),
            Box::new(|env: &BuildEnv<'_>| {
                let (options, name, overrides) = env.options::<T>();
                let settings = overrides.and_then(|o| o.settings.as_ref());
                let cx = BuildContext {
                    service: &name,
                    resources: env.resources,
                    settings: settings.map(|(v, _)| v),
                    settings_source: settings.map_or("defaults", |(_, s)| s.as_str()),
                    environment: env.environment.clone(),
                };
                let svc = T::from_context(&cx)?;
                make_cell(Arc::new(svc), options, name, overrides, env)
            }),
        )
    }

    /// Adds an already constructed service.
    pub fn instance<T: Service>(self, service: T) -> Self {
        self.register(
            TypeId::of::<T>(),
            Box::new(move |env: &BuildEnv<'_>| {
                let (options, name, overrides) = env.options::<T>();
                make_cell(Arc::new(service), options, name, overrides, env)
            }),
        )
    }

    /// Adds an already constructed service under an explicit `name`, overriding the
    /// name its [`ServiceOptions`] declare (configuration is looked up under `name`
    /// unless the options set a `config_section`).
    ///
    /// Unlike [`instance`](Self::instance), this does not replace an earlier
    /// registration of the same type: call it once per instance to run many services of
    /// one type (shards, tenants, benchmarks). Names must still be unique; a clash is a
    /// `build()` error. The typed API ([`HostHandle::services`](crate::HostHandle::services))
    /// reaches the last instance of the type registered; use
    /// [`HostHandle::service`](crate::HostHandle::service) with the name to reach each one.
    pub fn instance_named<T: Service>(mut self, name: impl Into<String>, service: T) -> Self {
        let name: String = name.into();
        let make: MakeCell = Box::new(move |env: &BuildEnv<'_>| {
            let mut options = T::options();
            options.name = Some(name.clone().into());
            let section = options
                .config_section
                .clone()
                .unwrap_or_else(|| name.clone());
            let overrides = env.config.for_service(&section);
            if let Some(o) = overrides {
                o.apply(&mut options);
            }
            make_cell(Arc::new(service), options, name, overrides, env)
        });
        // Not keyed by type: named instances never replace one another.
        self.registrations.push((None, make));
        self
    }

    /// Registers a shared value that services take in [`FromContext`] through
    /// [`BuildContext::resource`].
    pub fn resource<R: Send + Sync + 'static>(mut self, value: R) -> Self {
        self.resources.insert(Arc::new(value));
        self
    }

    /// How long shutdown waits for services before aborting them (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The environment for the `run_in_*` gates (default: `KOAN_ENV`, else production).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Upper bound of the whole startup phase: every startup service together
    /// (default 120 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Whether a failing startup service stops the host (default true); a service's own
    /// `continue_on_failure` overrides it.
    pub fn fail_fast_on_startup_failure(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// How long an action that ignores its cancelled token may run on after its deadline
    /// before its future is dropped (default 1 s).
    pub fn action_grace(mut self, grace: Duration) -> Self {
        self.action_grace = grace;
        self
    }

    /// Routes calls to services this host does not run through `transport`.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Declares a section under `koan` that the application reads itself (others than
    /// `background_services`, `http` and `nats` are refused as unknown).
    pub fn config_section(mut self, name: impl Into<String>) -> Self {
        self.config_sections.push(name.into());
        self
    }

    /// Keeps enqueued jobs in `store` (`koan_sqlite::SqliteJobStore` for one
    /// machine). Without one, jobs are kept in memory ([`crate::job::MemoryJobStore`]):
    /// the host warns at start that they do not survive the process, and runs the
    /// queued ones within the shutdown grace.
    pub fn job_store(mut self, store: Arc<dyn crate::job::JobStore>) -> Self {
        self.job_store = Some(store);
        self
    }

    /// Makes status timestamps and cron schedules follow tokio's (possibly paused)
    /// clock. Used by [`crate::testing`].
    #[cfg(feature = "test-util")]
    pub(crate) fn following_tokio_clock(mut self, wall: chrono::DateTime<chrono::Utc>) -> Self {
        self.clock = Clock::following_tokio(wall);
        self
    }

    /// Constructs every service and checks every declaration.
    pub fn build(mut self) -> Result<Host> {
        let environment = match self.environment {
            Some(e) => e,
            None => Environment::from_env()?,
        };
        let config = match (self.config.take(), self.load_config) {
            (Some(c), _) => c,
            (None, true) => Config::load()?,
            (None, false) => Config::default(),
        };
        config.check_conflicts()?;
        config.check_sections(&self.config_sections)?;
        let bg = BackgroundServicesConfig::from_config(&config)?;
        if let Some(t) = bg.startup_timeout {
            self.startup_timeout = t;
        }
        if let Some(f) = bg.fail_fast {
            self.fail_fast = f;
        }
        if let Some(g) = bg.shutdown_grace {
            self.grace = g;
        }
        // The actions' clock calibrates once per process, here rather than in a call.
        crate::clock::calibrate();
        let throughput = Arc::new(crate::registry::Throughput::default());
        let env = BuildEnv {
            resources: &self.resources,
            environment: environment.clone(),
            clock: &self.clock,
            config: &bg,
            throughput: &throughput,
        };
        let mut registry = Registry::default();
        for (_, register) in self.registrations {
            registry.insert(register(&env)?)?;
        }
        let linked: Vec<&str> = crate::discovery::all().iter().map(|d| d.name).collect();
        bg.check_unused(&registry.names(), &linked)?;
        environment.warn_if_unnamed(
            registry
                .all()
                .iter()
                .filter_map(|c| c.spec.options.run_in.as_deref()),
        );
        let (critical_tx, critical_rx) = mpsc::unbounded_channel();
        let (exit, _) = watch::channel(None);
        let inner = Arc::new(HostInner {
            registry,
            config: HostConfig {
                grace: self.grace,
                environment,
                startup_timeout: self.startup_timeout,
                fail_fast: self.fail_fast,
                clock: self.clock.clone(),
                action_grace: self.action_grace,
            },
            stop_request: CancellationToken::new(),
            // Accepting no calls until `Host::start()`.
            stopping: AtomicBool::new(true),
            launched: AtomicBool::new(false),
            startup_done: watch::Sender::new(false),
            critical_tx,
            critical_rx: Mutex::new(Some(critical_rx)),
            exit,
            failure: std::sync::OnceLock::new(),
            events: EventBus::new(self.clock.clone(), self.transport.clone()),
            jobs: crate::job::JobRunner::new(
                self.job_store
                    .unwrap_or_else(|| Arc::new(crate::job::MemoryJobStore::new())),
                bg.jobs.clone(),
            ),
            transport: self.transport,
            throughput,
        });
        for cell in inner.registry.all() {
            cell.set_host(Arc::downgrade(&inner));
        }
        Ok(Host { inner })
    }
}

fn resolve_name<T: Service>(options: &ServiceOptions) -> String {
    options
        .name
        .as_deref()
        .map_or_else(|| short_type_name::<T>().to_owned(), str::to_owned)
}

fn make_cell<T: Service>(
    service: Arc<T>,
    options: ServiceOptions,
    name: String,
    overrides: Option<&ServiceOverrides>,
    env: &BuildEnv<'_>,
) -> Result<ServiceCell> {
    let kind = <T::Kind as KindOf<T>>::KIND;
    if options.singleton && kind != ServiceKind::Periodic {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "{} service `{name}` is marked `singleton`, but only periodic services run their ticks on one host of the cluster; remove `singleton`",
                kind.as_str()
            ),
        ));
    }
    options.check_names(&name)?;
    super::kind_fit::check(kind, &options, overrides, &name)?;
    let schedule = match (&options.schedule, kind) {
        (Some(ScheduleSpec::Every(p)), ServiceKind::Periodic) => {
            Some(Schedule::every(*p).map_err(|e| in_service(&name, e))?)
        }
        (Some(ScheduleSpec::Cron(expr)), ServiceKind::Periodic) => {
            let schedule = Schedule::cron(expr).map_err(|e| in_service(&name, e))?;
            schedule
                .check_fires(env.clock.now())
                .map_err(|e| in_service(&name, e))?;
            Some(schedule)
        }
        (None, ServiceKind::Periodic) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "periodic service `{name}` has no schedule; set `ServiceOptions::every(..)` or `ServiceOptions::cron(..)`"
                ),
            ));
        }
        (Some(_), _) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} service `{name}` has a schedule, but only periodic services run on one; use `type Kind = koan::Periodic`",
                    kind.as_str()
                ),
            ));
        }
        (None, _) => None,
    };
    if options.max_concurrency == 0 || options.mailbox_capacity == 0 {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "service `{name}`: `max_concurrency` and `mailbox_capacity` must be at least 1"
            ),
        ));
    }
    if options.max_concurrency > crate::service::MAX_CONCURRENCY {
        // One worker task each: 100,000,000 grew a host by 220 MB a second.
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "service `{name}`: `max_concurrency` = {} is more than {}; each is a worker task, started with the service",
                options.max_concurrency,
                crate::service::MAX_CONCURRENCY
            ),
        ));
    }
    let by_config = overrides
        .and_then(|o| o.enabled.as_ref())
        .filter(|(e, _)| !e);
    let disabled = if let Some((false, origin)) = &env.config.enabled {
        Some(format!(
            "background services are disabled by configuration ({origin} = false)"
        ))
    } else if let Some((_, origin)) = by_config {
        Some(format!("disabled by configuration ({origin} = false)"))
    } else if !options.enabled {
        Some("disabled by its declaration (enabled = false)".to_owned())
    } else if !options.runs_in(&env.environment) {
        Some(match &options.run_in {
            Some(list) => format!(
                "not run in the {} environment (run_in = {list:?})",
                env.environment
            ),
            None => format!(
                "not run in the {0} environment (run_in_{0} = false)",
                env.environment
            ),
        })
    } else {
        None
    };
    let mut actions = Actions::<T>::new(&name, kind);
    T::actions(&mut actions);
    for a in overrides.map(|o| o.actions.as_slice()).unwrap_or_default() {
        actions.override_retry(&a.name, a.max_attempts, a.backoff, &a.section)?;
    }
    let table: ActionTable = actions.into_table(Arc::clone(&service))?;
    let runner = <T::Kind as KindOf<T>>::runner(Arc::clone(&service));
    let spec = ServiceSpec {
        name: Arc::from(name),
        kind,
        type_id: TypeId::of::<T>(),
        options,
        schedule,
        service,
        runner,
        actions: Arc::new(table),
        disabled,
        clock: env.clock.clone(),
    };
    let activity =
        crate::registry::Activity::new(env.config.history_size, Arc::clone(env.throughput));
    Ok(ServiceCell::new(spec, CancellationToken::new(), activity))
}

fn in_service(name: &str, e: Error) -> Error {
    Error::new(e.kind(), format!("service `{name}`: {}", e.message()))
}
