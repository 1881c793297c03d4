//! The `koan.background_services` section: global switches (timeouts, fail-fast,
//! history, jobs) and per-service overrides (schedule, order, limits, settings).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::Config;
use super::tree::{Node, Origin, norm};
use crate::error::{Error, ErrorKind, Result};
use crate::schedule::Schedule;
use crate::service::{ScheduleSpec, ServiceOptions};

const GLOBAL_KEYS: &str = "enabled, startup_timeout_seconds, fail_fast_on_startup_failure, shutdown_grace_seconds, history_size, jobs, services";
const JOB_KEYS: &str =
    "lease_seconds, poll_ms, result_max_bytes, retention_hours, retention_max_mb";
const SERVICE_KEYS: &str = "enabled, interval_seconds, cron, startup_order, priority, timeout_seconds, stall_after_seconds, critical, singleton, max_concurrency, mailbox_capacity, actions, settings";
const ACTION_KEYS: &str = "max_attempts, backoff_seconds";

/// Overrides of one service, as configured.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceOverrides {
    pub(crate) enabled: Option<(bool, Origin)>,
    pub(crate) interval: Option<Duration>,
    pub(crate) cron: Option<String>,
    pub(crate) startup_order: Option<i32>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeout: Option<Duration>,
    /// How long a periodic run may go on past its due time before health says so.
    pub(crate) stall_after: Option<Duration>,
    pub(crate) critical: Option<bool>,
    /// A periodic service's ticks run on one host of the cluster at a time.
    pub(crate) singleton: Option<bool>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) mailbox_capacity: Option<usize>,
    pub(crate) settings: Option<(Value, String)>,
    /// `actions.<name>.{max_attempts, backoff_seconds}`: job retry policies.
    pub(crate) actions: Vec<ActionOverrides>,
}

/// The retry policy of one action's jobs, as configured.
#[derive(Debug, Clone)]
pub(crate) struct ActionOverrides {
    /// The action's name as written.
    pub(crate) name: String,
    /// Where it was configured, for errors.
    pub(crate) section: String,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<Duration>,
}

/// The parsed `background_services` section.
#[derive(Debug)]
pub(crate) struct BackgroundServicesConfig {
    pub(crate) enabled: Option<(bool, Origin)>,
    pub(crate) startup_timeout: Option<Duration>,
    pub(crate) fail_fast: Option<bool>,
    pub(crate) shutdown_grace: Option<Duration>,
    /// `history_size`: how many runs each service keeps for dashboards.
    pub(crate) history_size: usize,
    /// `jobs.*`: the job runner's settings.
    pub(crate) jobs: crate::job::JobSettings,
    services: Vec<(String, String, ServiceOverrides)>,
    used: std::sync::Mutex<HashSet<String>>,
}

impl Default for BackgroundServicesConfig {
    fn default() -> Self {
        BackgroundServicesConfig {
            enabled: None,
            startup_timeout: None,
            fail_fast: None,
            shutdown_grace: None,
            history_size: crate::registry::DEFAULT_HISTORY_SIZE,
            jobs: crate::job::JobSettings::default(),
            services: Vec::new(),
            used: std::sync::Mutex::default(),
        }
    }
}

fn bad(origin: &Origin, value: &Value, expected: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("configuration value {origin} is {value}, but {expected}"),
    )
}

fn leaf<'a>(node: &'a Node, spelling: &str, section: &str) -> Result<(&'a Value, &'a Origin)> {
    match node {
        Node::Leaf(v, o) => Ok((v, o)),
        Node::Map(_) => {
            let mut sources = Vec::new();
            node.sources(&mut sources);
            Err(Error::new(
                ErrorKind::Config,
                format!(
                    "configuration key `{section}.{spelling}` (from {}) must be a single value, not a section",
                    sources.join(", ")
                ),
            ))
        }
    }
}

fn as_bool(node: &Node, spelling: &str, section: &str) -> Result<(bool, Origin)> {
    let (v, o) = leaf(node, spelling, section)?;
    match v {
        Value::Bool(b) => Ok((*b, o.clone())),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok((true, o.clone())),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok((false, o.clone())),
        other => Err(bad(o, other, "it must be true or false")),
    }
}

fn as_u64(node: &Node, spelling: &str, section: &str, what: &str) -> Result<u64> {
    let (v, o) = leaf(node, spelling, section)?;
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| bad(o, v, &format!("it must be a whole number of {what}")))
}

fn as_i32(node: &Node, spelling: &str, section: &str) -> Result<i32> {
    let (v, o) = leaf(node, spelling, section)?;
    let n = match v {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<i32>().ok(),
        _ => None,
    };
    n.ok_or_else(|| bad(o, v, "it must be a whole number"))
}

fn positive(node: &Node, spelling: &str, section: &str, what: &str) -> Result<u64> {
    let n = as_u64(node, spelling, section, what)?;
    if n == 0 {
        let (v, o) = leaf(node, spelling, section)?;
        return Err(bad(o, v, "it must be at least 1"));
    }
    Ok(n)
}

/// A whole number from 1 to `max` (`what` names its unit): past a bound the value
/// means nothing a host can honour (a lease of 3 million years panicked the job
/// runner at its first claim, found by a probe).
fn bounded(node: &Node, spelling: &str, section: &str, (what, max): (&str, u64)) -> Result<u64> {
    let n = positive(node, spelling, section, what)?;
    if n > max {
        let (v, o) = leaf(node, spelling, section)?;
        return Err(bad(o, v, &format!("it must be at most {max} {what}")));
    }
    Ok(n)
}

fn unknown(section: &str, spelling: &str, node: &Node, known: &str) -> Error {
    let mut sources = Vec::new();
    node.sources(&mut sources);
    Error::new(
        ErrorKind::Config,
        format!(
            "unknown configuration key `{section}.{spelling}` (from {}); known keys: {known}",
            sources.join(", ")
        ),
    )
}

impl BackgroundServicesConfig {
    pub(crate) fn from_config(config: &Config) -> Result<Self> {
        let mut out = BackgroundServicesConfig::default();
        let Some(section) = config.node(&["koan", "background_services"]) else {
            return Ok(out);
        };
        let sec = "koan.background_services";
        for (key, spelling, node) in section.entries() {
            match key {
                "enabled" => out.enabled = Some(as_bool(node, spelling, sec)?),
                "startuptimeoutseconds" => {
                    out.startup_timeout = Some(Duration::from_secs(positive(
                        node, spelling, sec, "seconds",
                    )?))
                }
                "failfastonstartupfailure" => out.fail_fast = Some(as_bool(node, spelling, sec)?.0),
                "shutdowngraceseconds" => {
                    out.shutdown_grace =
                        Some(Duration::from_secs(as_u64(node, spelling, sec, "seconds")?))
                }
                "historysize" => {
                    let n = as_u64(node, spelling, sec, "runs")?;
                    if n > 10_000 {
                        let (v, o) = leaf(node, spelling, sec)?;
                        return Err(bad(o, v, "it must be at most 10000 runs"));
                    }
                    out.history_size = usize::try_from(n).unwrap_or(10_000);
                }
                "jobs" => {
                    let jsec = format!("{sec}.{spelling}");
                    for (jkey, jspelling, jnode) in node.entries() {
                        let j = &mut out.jobs;
                        match jkey {
                            "leaseseconds" => {
                                j.lease = Duration::from_secs(bounded(
                                    jnode,
                                    jspelling,
                                    &jsec,
                                    ("seconds", 86_400),
                                )?)
                            }
                            "pollms" => {
                                j.poll = Duration::from_millis(bounded(
                                    jnode,
                                    jspelling,
                                    &jsec,
                                    ("milliseconds", 60_000),
                                )?)
                            }
                            "resultmaxbytes" => {
                                j.result_max_bytes =
                                    usize::try_from(positive(jnode, jspelling, &jsec, "bytes")?)
                                        .unwrap_or(usize::MAX)
                            }
                            "retentionhours" => {
                                j.retention = Duration::from_secs(
                                    bounded(jnode, jspelling, &jsec, ("hours", 87_600))? * 3600,
                                )
                            }
                            "retentionmaxmb" => {
                                j.retention_max_bytes =
                                    positive(jnode, jspelling, &jsec, "megabytes")?
                                        .saturating_mul(1024 * 1024)
                            }
                            _ => return Err(unknown(&jsec, jspelling, jnode, JOB_KEYS)),
                        }
                    }
                }
                "services" => {
                    for (skey, sspelling, snode) in node.entries() {
                        let ssec = format!("{sec}.services.{sspelling}");
                        out.services.push((
                            skey.to_owned(),
                            sspelling.to_owned(),
                            service(snode, &ssec)?,
                        ));
                    }
                }
                _ => return Err(unknown(sec, spelling, node, GLOBAL_KEYS)),
            }
        }
        Ok(out)
    }

    /// The overrides for a service whose config section is `section`: the key may be
    /// the section itself or drop a trailing `Service` (`Translation` for
    /// `TranslationService`).
    pub(crate) fn for_service(&self, section: &str) -> Option<&ServiceOverrides> {
        let full = norm(section);
        let short = full.strip_suffix("service").unwrap_or(&full);
        let (key, _, o) = self
            .services
            .iter()
            .find(|(k, _, _)| *k == full || (!short.is_empty() && *k == short))?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.clone());
        }
        Some(o)
    }

    /// Checks the configured service sections that matched no service of this host:
    /// one whose name is within two letters of a service this host runs or this
    /// binary links (`Cleanupp` for `Cleanup`), and is not itself one this binary
    /// links, is a misspelling, and an error naming the service meant; the others
    /// are services of other processes (a configuration shared by a cluster), noted
    /// in the log. Before, a misspelled section was only logged, and `enabled =
    /// false` in it silently did nothing.
    pub(crate) fn check_unused(&self, here: &[&str], linked: &[&str]) -> Result<()> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let short = |n: &str| {
            let full = norm(n);
            full.strip_suffix("service").unwrap_or(&full).to_owned()
        };
        for (key, spelling, _) in self.services.iter().filter(|(k, _, _)| !used.contains(k)) {
            let is = |n: &&str| norm(n) == *key || short(n) == *key;
            if linked.iter().any(is) {
                tracing::info!(section = %spelling, "configuration for a service this host does not run (ignored)");
                continue;
            }
            let near = here.iter().chain(linked).find(|n| {
                strsim::levenshtein(key, &norm(n)) <= 2 || strsim::levenshtein(key, &short(n)) <= 2
            });
            match near {
                Some(meant) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "configuration section `koan.background_services.services.{spelling}` names no service; did you mean `{meant}`? (this host runs: {})",
                            here.join(", ")
                        ),
                    ));
                }
                None => {
                    tracing::warn!(section = %spelling, "configuration for a service this host does not run, nor this binary links (ignored: another process's, or a misspelling)");
                }
            }
        }
        Ok(())
    }
}

fn service(node: &Node, sec: &str) -> Result<ServiceOverrides> {
    let mut o = ServiceOverrides::default();
    if let Node::Leaf(v, origin) = node {
        return Err(bad(
            origin,
            v,
            "it must be a section with keys such as `enabled` or `settings`",
        ));
    }
    for (key, spelling, n) in node.entries() {
        match key {
            "enabled" => o.enabled = Some(as_bool(n, spelling, sec)?),
            "intervalseconds" => {
                o.interval = Some(Duration::from_secs(positive(n, spelling, sec, "seconds")?))
            }
            "cron" => {
                let (v, origin) = leaf(n, spelling, sec)?;
                let Value::String(expr) = v else {
                    return Err(bad(origin, v, "it must be a cron expression in quotes"));
                };
                Schedule::cron(expr).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("configuration value {origin}: {}", e.message()),
                    )
                })?;
                o.cron = Some(expr.clone());
            }
            "startuporder" => o.startup_order = Some(as_i32(n, spelling, sec)?),
            "priority" => o.priority = Some(as_i32(n, spelling, sec)?),
            "timeoutseconds" => {
                o.timeout = Some(Duration::from_secs(positive(n, spelling, sec, "seconds")?))
            }
            "stallafterseconds" => {
                o.stall_after = Some(Duration::from_secs(bounded(
                    n,
                    spelling,
                    sec,
                    ("seconds", crate::schedule::MAX_PERIOD.as_secs()),
                )?))
            }
            "critical" => o.critical = Some(as_bool(n, spelling, sec)?.0),
            "singleton" => o.singleton = Some(as_bool(n, spelling, sec)?.0),
            "maxconcurrency" => {
                o.max_concurrency = Some(positive(n, spelling, sec, "actions")? as usize)
            }
            "mailboxcapacity" => {
                o.mailbox_capacity = Some(positive(n, spelling, sec, "actions")? as usize)
            }
            "actions" => {
                for (_, aspelling, an) in n.entries() {
                    let asec = format!("{sec}.{spelling}.{aspelling}");
                    let mut a = ActionOverrides {
                        name: aspelling.to_owned(),
                        section: asec.clone(),
                        max_attempts: None,
                        backoff: None,
                    };
                    for (k, kspelling, kn) in an.entries() {
                        match k {
                            "maxattempts" => {
                                a.max_attempts = Some(
                                    u32::try_from(positive(kn, kspelling, &asec, "runs")?)
                                        .unwrap_or(u32::MAX),
                                )
                            }
                            "backoffseconds" => {
                                a.backoff = Some(Duration::from_secs(as_u64(
                                    kn, kspelling, &asec, "seconds",
                                )?))
                            }
                            _ => return Err(unknown(&asec, kspelling, kn, ACTION_KEYS)),
                        }
                    }
                    o.actions.push(a);
                }
            }
            "settings" => {
                // Keys as written: the settings' type decides which are its
                // fields and which are data (see `folded`).
                let json = n.to_json_as_written();
                let mut sources = Vec::new();
                n.sources(&mut sources);
                o.settings = Some((
                    json,
                    format!("`{sec}.{spelling}` in {}", sources.join(", ")),
                ));
            }
            _ => return Err(unknown(sec, spelling, n, SERVICE_KEYS)),
        }
    }
    if o.interval.is_some() && o.cron.is_some() {
        // One schedule: the cron used to win without a word.
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "`{sec}` sets both `interval_seconds` and `cron`; a service has one schedule: keep one"
            ),
        ));
    }
    Ok(o)
}

impl ServiceOverrides {
    /// Applies the overrides to declared options (configuration wins over attributes).
    pub(crate) fn apply(&self, options: &mut ServiceOptions) {
        if let Some((enabled, _)) = &self.enabled {
            options.enabled = *enabled;
        }
        if let Some(i) = self.interval {
            options.schedule = Some(ScheduleSpec::Every(i));
        }
        if let Some(c) = &self.cron {
            options.schedule = Some(ScheduleSpec::Cron(c.clone()));
        }
        if let Some(o) = self.startup_order {
            options.order = o;
        }
        if let Some(p) = self.priority {
            options.priority = p;
        }
        if let Some(t) = self.timeout {
            options.timeout = t;
        }
        if let Some(t) = self.stall_after {
            options.stall_after = Some(t);
        }
        if let Some(c) = self.critical {
            options.critical = c;
        }
        if let Some(s) = self.singleton {
            options.singleton = s;
        }
        if let Some(m) = self.max_concurrency {
            options.max_concurrency = m;
        }
        if let Some(m) = self.mailbox_capacity {
            options.mailbox_capacity = m;
        }
    }
}
