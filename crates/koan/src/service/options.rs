use std::borrow::Cow;
use std::time::Duration;

use crate::health::HealthThresholds;
use crate::host::Environment;
use crate::schedule::MissedTickPolicy;

/// What to do when a background service's `run` returns or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart: a failure leaves the service `Failed`.
    Never,
    /// Restart after an error or a panic (the default).
    #[default]
    OnFailure,
    /// Restart whenever `run` returns, even with `Ok`.
    Always,
}

/// Exponential backoff between restarts, with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart (default 1 s).
    pub initial: Duration,
    /// Upper bound of any delay (default 60 s).
    pub max: Duration,
    /// Growth per restart (default 2).
    pub factor: f64,
    /// Random spread, as a fraction of the delay: 0.1 means ±10 % (default 0.1).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (0-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(attempt as i32);
        let capped = base.min(self.max.as_secs_f64());
        // A jitter that is not a number means none (`clamp` would keep the NaN).
        let spread = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let factor = 1.0 + spread * (fastrand::f64() * 2.0 - 1.0);
        let secs = (capped * factor).clamp(0.0, self.max.as_secs_f64());
        // A `max` near `Duration::MAX` rounds up past it as an `f64`: the cap itself.
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

/// At most `max_restarts` restarts within `within` (Erlang/OTP's intensity and period);
/// one more and the service is `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed in the window (default 5).
    pub max_restarts: u32,
    /// The sliding window (default 60 s).
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// How a schedule was declared; parsed when the host is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScheduleSpec {
    Every(Duration),
    Cron(String),
}

/// Declared options of a service, as a builder: name, schedule, supervision, startup
/// order, limits and the environments it runs in.
///
/// ```
/// use std::time::Duration;
/// use koan::ServiceOptions;
///
/// let options = ServiceOptions::named("DataCleanupService")
///     .description("Deletes old log entries")
///     .every(Duration::from_secs(3600))
///     .run_on_startup(true);
/// assert_eq!(options.name_ref(), Some("DataCleanupService"));
/// ```
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) description: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) critical: bool,
    pub(crate) priority: i32,
    pub(crate) run_in_development: bool,
    pub(crate) run_in_production: bool,
    pub(crate) run_in_testing: bool,
    /// Set by `run_in([...])`: the environments the service runs in, by name.
    pub(crate) run_in: Option<Vec<String>>,
    pub(crate) restart: RestartPolicy,
    pub(crate) backoff: Backoff,
    pub(crate) intensity: Intensity,
    pub(crate) schedule: Option<ScheduleSpec>,
    pub(crate) initial_delay: Duration,
    pub(crate) run_on_startup: bool,
    pub(crate) missed_ticks: MissedTickPolicy,
    pub(crate) order: i32,
    pub(crate) timeout: Duration,
    pub(crate) continue_on_failure: bool,
    pub(crate) mailbox_capacity: usize,
    pub(crate) max_concurrency: usize,
    pub(crate) health_thresholds: HealthThresholds,
    pub(crate) config_section: Option<String>,
    pub(crate) singleton: bool,
    pub(crate) stall_after: Option<Duration>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            name: None,
            description: None,
            enabled: true,
            critical: false,
            priority: 100,
            run_in_development: true,
            run_in_production: true,
            run_in_testing: true,
            run_in: None,
            restart: RestartPolicy::OnFailure,
            backoff: Backoff::default(),
            intensity: Intensity::default(),
            schedule: None,
            initial_delay: Duration::ZERO,
            run_on_startup: false,
            missed_ticks: MissedTickPolicy::Skip,
            order: 100,
            timeout: Duration::from_secs(30),
            continue_on_failure: false,
            mailbox_capacity: 1024,
            max_concurrency: 1,
            health_thresholds: HealthThresholds::default(),
            config_section: None,
            singleton: false,
            stall_after: None,
        }
    }
}

/// The most actions a service may run at once (`max_concurrency`): each is a
/// worker task, started with the service.
pub const MAX_CONCURRENCY: usize = 10_000;

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
    };
}

impl ServiceOptions {
    /// Options with an explicit service name (the default is the type's name).
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        ServiceOptions::default().name(name)
    }

    /// Sets the service's name, used by the by-name API, HTTP routes and config.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets a description shown in `info` and the dashboard.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    setter!(
        /// Whether the service runs at all (default true).
        enabled: bool
    );
    setter!(
        /// A critical service's failure stops the host with a non-zero exit, and its
        /// health counts fully toward the host's (default false).
        critical: bool
    );
    setter!(
        /// Start priority among non-startup services: higher starts first and stops
        /// last (default 100). Services of one priority start together and stop
        /// together (all cancelled, then awaited within the one grace period).
        priority: i32
    );
    setter!(
        /// Whether the service runs when `KOAN_ENV=development` (default true).
        run_in_development: bool
    );
    setter!(
        /// Whether the service runs when `KOAN_ENV=production` (default true).
        run_in_production: bool
    );
    setter!(
        /// Whether the service runs when `KOAN_ENV=testing` (default true).
        run_in_testing: bool
    );
    setter!(
        /// The restart policy of a background service (default `OnFailure`).
        restart: RestartPolicy
    );
    setter!(
        /// Backoff between restarts.
        backoff: Backoff
    );
    setter!(
        /// The restart intensity limit.
        intensity: Intensity
    );
    setter!(
        /// Delay before the schedule starts (default zero): the first run comes at
        /// `initial_delay` with `run_on_startup`, else one period (of a cron, its next
        /// time) after it — `every = "10s", initial_delay = "5s"` first runs at 15 s,
        /// as the .NET original's `InitialDelay` does.
        initial_delay: Duration
    );
    setter!(
        /// Run `tick` right at start (after `initial_delay`) instead of one period later.
        run_on_startup: bool
    );
    setter!(
        /// What to do with scheduled ticks that fell due during a run or a stall.
        missed_ticks: MissedTickPolicy
    );
    setter!(
        /// Startup order: lower runs first (default 100).
        order: i32
    );
    setter!(
        /// Startup timeout (default 30 s).
        timeout: Duration
    );
    setter!(
        /// Let the host go on when this startup service fails (default false).
        continue_on_failure: bool
    );
    setter!(
        /// Capacity of the action mailbox (default 1024); full means `Busy`.
        mailbox_capacity: usize
    );
    setter!(
        /// How many actions may run at once (default 1).
        max_concurrency: usize
    );
    setter!(
        /// Consecutive-failure thresholds for degraded and unhealthy.
        health_thresholds: HealthThresholds
    );
    setter!(
        /// A periodic service whose scheduled ticks run on one host of the cluster at
        /// a time: the holder of its lease (see [`Transport::may_run`](crate::transport::Transport::may_run)).
        /// Without a transport it runs as usual.
        singleton: bool
    );

    /// How long a periodic run may go on past its due time (past its start, when it
    /// started late) before the service's health says it is stalled (`degraded`,
    /// naming the run). The default is ten periods (of a cron, the gap between its
    /// next two fire times), at least a minute. Only health says it: the run goes
    /// on, and is not cut short.
    pub fn stall_after(mut self, limit: Duration) -> Self {
        self.stall_after = Some(limit);
        self
    }

    /// Runs `tick` every `period`.
    pub fn every(mut self, period: Duration) -> Self {
        self.schedule = Some(ScheduleSpec::Every(period));
        self
    }

    /// Runs `tick` on a cron expression: six fields with seconds
    /// (`"0 */5 * * * *"`) or the classic five (`"*/5 * * * *"`). Checked when the host
    /// is built; a bad expression is a `Config` error naming the service.
    pub fn cron(mut self, expression: impl Into<String>) -> Self {
        self.schedule = Some(ScheduleSpec::Cron(expression.into()));
        self
    }

    /// The configuration section holding this service's settings (default: its name).
    pub fn config_section(mut self, section: impl Into<String>) -> Self {
        self.config_section = Some(section.into());
        self
    }

    /// The declared name, if any.
    pub fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether the options allow running in `env`.
    pub fn runs_in(&self, env: &Environment) -> bool {
        if let Some(list) = &self.run_in {
            // Each name as `KOAN_ENV` would read it: `prod` is production.
            return list
                .iter()
                .any(|n| Environment::new(n).is_ok_and(|e| e == *env));
        }
        match env.as_str() {
            "development" => self.run_in_development,
            "production" => self.run_in_production,
            "testing" => self.run_in_testing,
            _ => true,
        }
    }

    /// Refuses a service name that is no name ([`crate::util::name_problem`]), and
    /// a `run_in` name that is no environment name (service `name`'s).
    pub(crate) fn check_names(&self, name: &str) -> crate::error::Result<()> {
        if let Some(problem) = crate::util::name_problem(name) {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Config,
                format!("the service name {problem}"),
            ));
        }
        for n in self.run_in.iter().flatten() {
            if Environment::new(n).is_err() {
                return Err(crate::error::Error::new(
                    crate::error::ErrorKind::Config,
                    format!(
                        "service `{name}`: run_in names `{}`, which is no environment name; use 1 to 64 letters, digits, `-`, `_` or `.` (e.g. development, staging, production)",
                        n.escape_debug()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs only in these environments (any names, e.g. `["staging", "production"]`,
    /// read as `KOAN_ENV` is: regardless of case, `dev`, `prod` and `test` for the
    /// well-known three), instead of the `run_in_*` switches. A name that is no
    /// environment name is refused when the host is built.
    pub fn run_in<I, S>(mut self, environments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.run_in = Some(environments.into_iter().map(Into::into).collect());
        self
    }
}
