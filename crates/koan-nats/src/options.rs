//! Connection and cluster settings (`koan.nats` in configuration).

use std::path::PathBuf;
use std::time::Duration;

use koan::{Error, config::Config, error::ErrorKind};
use serde::Deserialize;

/// How to reach NATS, and the cluster's timings.
///
/// Made with [`NatsOptions::new`], [`NatsOptions::from_config`] or `Default`, then
/// its fields set: `#[non_exhaustive]`, so that a setting added in a later release
/// does not break code that names every field in a struct literal.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Server URL(s), comma-separated (default `nats://127.0.0.1:4222`).
    pub url: String,
    /// User and password.
    pub user_password: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// An nkey seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// Require TLS.
    pub tls_required: bool,
    /// Extra root certificate (PEM) for TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// Deadline of remote calls that give none (default 60 s).
    pub default_request_timeout: Duration,
    /// Heartbeat period of the registry (default 2 s).
    pub heartbeat: Duration,
    /// Lease period of cluster singletons (default 5 s).
    pub lease: Duration,
    /// The most deliveries of one durable job's message (default 5): its action's
    /// retry policy decides how many runs within it; after the last failed run the
    /// job goes to the dead-letter subject.
    pub max_deliver: i64,
    /// How long a durable job may run before it is redelivered elsewhere (default 30 s).
    pub ack_wait: Duration,
    /// How long outcomes of durable work, their records and cancels' markers are
    /// kept after their last write (default 1 h; set when the buckets are made, by
    /// the first host: every host then reads it from them, and one configured
    /// otherwise says so in its log). The record of a job still to end is written
    /// again while it waits or runs.
    pub outcome_ttl: Duration,
    /// How long this host keeps watching the cluster's job records after its last
    /// listing, and its durable jobs' outcomes after it last awaited one (default
    /// 2 min): a host that does neither (a worker) receives none of the cluster's
    /// record or outcome writes.
    pub watch_idle: Duration,
    /// The most of the cluster's job records this host holds in memory while its
    /// listing is read (default 50,000, about 200–250 MB at the 4–5 KB a record measured): past it the listing and its
    /// counts cover the most recently written (failures and unfinished jobs before
    /// successes) and say they are partial; any job is still read by its id.
    pub view_max_records: usize,
    /// The most bytes of job records (as stored, JSON) this host's view holds
    /// (default 64 MiB, about 200 MB of memory): past it, as past
    /// `view_max_records`. Records of large parameters (64 KiB each) took a host
    /// from 36 MB to 1.3 GB at 6,000 jobs, all well under the count (a probe).
    pub view_max_bytes: usize,
    /// How long dead letters (`KOAN_DLQ`) are kept (default 7 days, as a host's
    /// own store keeps its jobs).
    pub dead_letter_retention: Duration,
    /// The most bytes of dead letters kept (default 256 MiB): past it the oldest
    /// go first. The latest host to start sets both limits.
    pub dead_letter_max_bytes: u64,
    /// The most bytes koan's streams and buckets may hold together (default none):
    /// each gets a share as its `max_bytes` (the work queue 40 %, outcomes 18 %,
    /// records 14 %, …), so that with the broker's storage filling, enqueues are
    /// refused at the work queue's share while outcomes, records and heartbeats
    /// still have room. Set it under the server's `max_file_store`, less what
    /// other streams on the server may take. The latest host to start sets it.
    pub storage_budget_bytes: Option<u64>,
    /// How many servers keep a copy of each of koan's streams and buckets (1 to 5;
    /// `None`, the default, chooses: 1 on a single server, on a cluster as many as
    /// it has servers up when the host connects, at most 3). With one copy, the
    /// server holding it down meant every enqueue refused ("no stream found") and
    /// its lost store meant accepted jobs lost. Streams made with fewer are raised
    /// to it when a host starts (a configured count also lowers them).
    pub replicas: Option<usize>,
    /// JetStream storage in memory instead of files (tests).
    pub memory_storage: bool,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("NatsOptions")
            .field("url", &self.url)
            .field(
                "user_password",
                &self.user_password.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "***"))
            .field("tls_required", &self.tls_required)
            .field("heartbeat", &self.heartbeat)
            .field("lease", &self.lease)
            .field("max_deliver", &self.max_deliver)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            url: "nats://127.0.0.1:4222".to_owned(),
            user_password: None,
            token: None,
            nkey_seed: None,
            tls_required: false,
            tls_ca_file: None,
            tls_client_cert: None,
            default_request_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(5),
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            outcome_ttl: Duration::from_secs(3600),
            watch_idle: Duration::from_secs(120),
            view_max_records: 50_000,
            view_max_bytes: 64 * 1024 * 1024,
            dead_letter_retention: Duration::from_secs(7 * 24 * 3600),
            dead_letter_max_bytes: 256 * 1024 * 1024,
            storage_budget_bytes: None,
            replicas: None,
            memory_storage: false,
        }
    }
}

/// The least `storage_budget_mb` (its smallest share is then some 160 KiB).
const MIN_BUDGET_MB: u64 = 16;

/// The most copies of a stream nats-server keeps.
const MAX_REPLICAS: u64 = 5;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey_seed: Option<String>,
    tls_required: Option<bool>,
    tls_ca_file: Option<PathBuf>,
    tls_client_cert: Option<PathBuf>,
    tls_client_key: Option<PathBuf>,
    default_request_timeout_seconds: Option<u64>,
    heartbeat_ms: Option<u64>,
    lease_ms: Option<u64>,
    max_deliver: Option<i64>,
    ack_wait_seconds: Option<u64>,
    watch_idle_seconds: Option<u64>,
    outcome_ttl_seconds: Option<u64>,
    view_max_records: Option<usize>,
    view_max_mb: Option<usize>,
    dead_letter_retention_hours: Option<u64>,
    dead_letter_max_mb: Option<u64>,
    storage_budget_mb: Option<u64>,
    replicas: Option<u64>,
}

impl NatsOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            ..NatsOptions::default()
        }
    }

    /// Reads `koan.nats`: `url`, `user`/`password`, `token`, `nkey_seed`,
    /// `tls_required`, `tls_ca_file`, `tls_client_cert`/`tls_client_key`,
    /// `default_request_timeout_seconds`, `heartbeat_ms`, `lease_ms`, `max_deliver`,
    /// `ack_wait_seconds`, `watch_idle_seconds`, `outcome_ttl_seconds`, `view_max_records`,
    /// `view_max_mb`, `dead_letter_retention_hours`, `dead_letter_max_mb`, `storage_budget_mb`,
    /// `replicas`.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let s: Section = config.section("koan.nats")?;
        let mut o = NatsOptions::default();
        if let Some(u) = s.url {
            o.url = u;
        }
        match (s.user, s.password) {
            (Some(u), Some(p)) => o.user_password = Some((u, p)),
            (None, None) => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "`koan.nats.user` and `koan.nats.password` go together; give both or neither",
                ));
            }
        }
        o.token = s.token;
        o.nkey_seed = s.nkey_seed;
        o.tls_required = s.tls_required.unwrap_or(false);
        o.tls_ca_file = s.tls_ca_file;
        match (s.tls_client_cert, s.tls_client_key) {
            (Some(c), Some(k)) => o.tls_client_cert = Some((c, k)),
            (None, None) => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "`koan.nats.tls_client_cert` and `koan.nats.tls_client_key` go together",
                ));
            }
        }
        if let Some(t) = s.default_request_timeout_seconds {
            o.default_request_timeout = Duration::from_secs(t.max(1));
        }
        if let Some(h) = s.heartbeat_ms {
            o.heartbeat = Duration::from_millis(h.max(100));
        }
        if let Some(l) = s.lease_ms {
            o.lease = Duration::from_millis(l.max(300));
        }
        if let Some(m) = s.max_deliver {
            o.max_deliver = m.max(1);
        }
        if let Some(a) = s.ack_wait_seconds {
            o.ack_wait = Duration::from_secs(a.max(1));
        }
        if let Some(i) = s.watch_idle_seconds {
            o.watch_idle = Duration::from_secs(i.max(1));
        }
        if let Some(t) = s.outcome_ttl_seconds {
            o.outcome_ttl = Duration::from_secs(t.max(1));
        }
        if let Some(n) = s.view_max_records {
            o.view_max_records = n.max(1);
        }
        if let Some(mb) = s.view_max_mb {
            o.view_max_bytes = mb.max(1).saturating_mul(1024 * 1024);
        }
        if let Some(h) = s.dead_letter_retention_hours {
            o.dead_letter_retention = Duration::from_secs(h.max(1).saturating_mul(3600));
        }
        if let Some(mb) = s.dead_letter_max_mb {
            o.dead_letter_max_bytes = mb.max(1).saturating_mul(1024 * 1024);
        }
        if let Some(mb) = s.storage_budget_mb {
            if mb < MIN_BUDGET_MB {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "configuration value {} is {mb}: `koan.nats.storage_budget_mb` must be at least {MIN_BUDGET_MB} (each of koan's nine streams and buckets gets a share of it)",
                        config
                            .origin("koan.nats.storage_budget_mb")
                            .unwrap_or_else(|| "`koan.nats.storage_budget_mb`".to_owned())
                    ),
                ));
            }
            o.storage_budget_bytes = Some(mb.saturating_mul(1024 * 1024));
        }
        if let Some(n) = s.replicas {
            if !(1..=MAX_REPLICAS).contains(&n) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "configuration value {} is {n}: `koan.nats.replicas` must be 1 to {MAX_REPLICAS} (how many servers keep a copy of each stream; leave it out to choose by the cluster's size)",
                        config
                            .origin("koan.nats.replicas")
                            .unwrap_or_else(|| "`koan.nats.replicas`".to_owned())
                    ),
                ));
            }
            o.replicas = usize::try_from(n).ok();
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml: &str) -> Result<NatsOptions, Error> {
        let config = Config::builder().toml("test.toml", toml)?.build();
        NatsOptions::from_config(&config)
    }

    #[test]
    fn every_key_is_read() -> Result<(), Error> {
        let o = read(
            r#"
            [koan.nats]
            url = "nats://10.0.0.1:4222"
            user = "koan"
            password = "secret"
            default_request_timeout_seconds = 7
            heartbeat_ms = 250
            lease_ms = 900
            max_deliver = 9
            ack_wait_seconds = 11
            watch_idle_seconds = 30
            outcome_ttl_seconds = 600
            view_max_records = 1000
            dead_letter_retention_hours = 48
            dead_letter_max_mb = 64
            storage_budget_mb = 900
            replicas = 3
            "#,
        )?;
        assert_eq!(o.url, "nats://10.0.0.1:4222");
        assert_eq!(o.user_password, Some(("koan".into(), "secret".into())));
        assert_eq!(o.default_request_timeout, Duration::from_secs(7));
        assert_eq!(o.heartbeat, Duration::from_millis(250));
        assert_eq!(o.lease, Duration::from_millis(900));
        assert_eq!(o.max_deliver, 9);
        assert_eq!(o.ack_wait, Duration::from_secs(11));
        assert_eq!(o.watch_idle, Duration::from_secs(30));
        assert_eq!(o.outcome_ttl, Duration::from_secs(600));
        assert_eq!(o.view_max_records, 1000);
        assert_eq!(o.dead_letter_retention, Duration::from_secs(48 * 3600));
        assert_eq!(o.dead_letter_max_bytes, 64 * 1024 * 1024);
        assert_eq!(o.storage_budget_bytes, Some(900 * 1024 * 1024));
        assert_eq!(o.replicas, Some(3));
        for wrong in ["0", "6"] {
            let e = read(&format!("[koan.nats]\nreplicas = {wrong}\n")).expect_err("out of bounds");
            assert!(e.message().contains("`koan.nats.replicas` in test"), "{e}");
            assert!(e.message().contains("must be 1 to 5"), "{e}");
        }
        let e = read("[koan.nats]\nstorage_budget_mb = 4\n").expect_err("too small");
        assert!(e.message().contains("at least 16"), "{e}");
        // The value named as written, and where it came from.
        assert!(
            e.message()
                .contains("`koan.nats.storage_budget_mb` in test"),
            "{e}"
        );
        // Absent: the defaults.
        assert_eq!(read("")?, NatsOptions::default());
        Ok(())
    }

    #[test]
    fn a_wrong_key_or_a_lone_password_is_refused_by_name() {
        let e = read("[koan.nats]\nwatch_idle = 30\n").expect_err("an unknown key");
        // It names the key given and the one meant.
        assert!(e.message().contains("unknown field `watch_idle`"), "{e}");
        assert!(e.message().contains("`watch_idle_seconds`"), "{e}");
        let e = read("[koan.nats]\npassword = \"p\"\n").expect_err("a password alone");
        assert!(e.message().contains("go together"), "{e}");
    }
}
