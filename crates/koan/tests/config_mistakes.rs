//! Mistakes in the configuration that once passed. A service section that matches
//! no service of the host: a misspelling of one it runs (or this binary links) is
//! a build error that names the service meant. Before, it was only logged, and
//! `enabled = false` in `[…services.Cleanupp]` left `Cleanup` running (found by a
//! probe). A section of a service that only another process runs (a configuration
//! shared by a cluster) is still accepted. And a `max_concurrency` past 10,000.

mod common;

use koan::config::Config;
use koan::error::ErrorKind;

common::waiting_service!(Cleanup, discover = false);
// Linked into this binary (discoverable), never added to the host below.
common::waiting_service!(ReportMailer, name = "ReportMailer");

fn config(section: &str) -> anyhow::Result<Config> {
    let text = format!("[background_services.services.{section}]\nenabled = false\n");
    Ok(Config::builder().toml("koan.toml", &text)?.build())
}

fn build(section: &str) -> anyhow::Result<koan::Result<koan::Host>> {
    Ok(koan::testing::host()
        .config(config(section)?)
        .service::<Cleanup>()
        .build())
}

#[test]
fn a_misspelled_service_section_names_the_service_meant() -> anyhow::Result<()> {
    for section in ["Cleanupp", "Clenup", "cleanp", "ReportMailr"] {
        let e = build(section)?.expect_err(section);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(
            e.message().contains(&format!("services.{section}`"))
                && e.message().contains("did you mean")
                && e.message().contains("this host runs: Cleanup"),
            "{e}"
        );
    }
    Ok(())
}

#[test]
fn sections_of_services_other_processes_run_are_accepted() -> anyhow::Result<()> {
    // One this binary links, and one it does not know at all.
    for section in ["ReportMailer", "report-mailer", "BillingExporter"] {
        let host = build(section)??;
        drop(host);
    }
    // The section of the service itself, in another spelling, applies.
    let host = build("CLEANUP")??;
    assert!(!host.handle().status("Cleanup")?.enabled);
    Ok(())
}

/// `max_concurrency` is a count of worker tasks, started with the service: past
/// 10,000 it is refused, where 100,000,000 grew a host by 220 MB a second until
/// the kernel killed it (found by a probe).
#[test]
fn a_max_concurrency_past_ten_thousand_is_refused() -> anyhow::Result<()> {
    for (n, ok) in [(10_000, true), (10_001, false), (100_000_000, false)] {
        let text = format!("[background_services.services.Cleanup]\nmax_concurrency = {n}\n");
        let built = koan::testing::host()
            .config(Config::builder().toml("koan.toml", &text)?.build())
            .service::<Cleanup>()
            .build();
        match built {
            Ok(host) => assert!(ok, "{n} accepted: {host:?}"),
            Err(e) => {
                assert!(!ok, "{n}: {e}");
                assert!(
                    e.message().contains("`max_concurrency`") && e.message().contains("10000"),
                    "{e}"
                );
            }
        }
    }
    Ok(())
}

/// Layers that contradict themselves or one another are refused, naming both
/// sides. Before, each was silent: two spellings of one key (one won), a value
/// in the environment over the file's section (which it wiped), `interval_seconds`
/// beside `cron` (the cron won; found by a probe).
#[test]
fn contradictions_in_the_configuration_are_refused() -> anyhow::Result<()> {
    let build = |config: Config| {
        koan::testing::host()
            .config(config)
            .service::<Cleanup>()
            .build()
    };
    let twice = "[background_services.services.Cleanup]\nmax_concurrency = 2\nMaxConcurrency = 3\n";
    let e = build(Config::builder().toml("koan.toml", twice)?.build()).expect_err("two spellings");
    assert!(
        e.message()
            .contains("`background_services.services.Cleanup.MaxConcurrency`")
            && e.message()
                .contains("`background_services.services.Cleanup.max_concurrency`")
            && e.message().contains("name the same key"),
        "{e}"
    );

    let file = "[background_services.services.Cleanup]\nenabled = false\n";
    let config = Config::builder()
        .toml("koan.toml", file)?
        .env_vars([("KOAN__BACKGROUND_SERVICES", "5")])
        .build();
    let e = build(config.clone()).expect_err("a value over a section");
    assert!(
        e.message().contains("KOAN__BACKGROUND_SERVICES")
            && e.message().contains("a section (from koan.toml)")
            && e.message().contains("cannot replace a section"),
        "{e}"
    );
    // An application reading its own section hears it too.
    assert!(config.section::<serde_json::Value>("koan").is_err());

    // One underscore short: refused, not dropped; the variables with one are read.
    let config = Config::builder()
        .env_vars([
            ("KOAN_BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS", "5"),
            ("KOAN_ENV", "production"),
            ("KOAN_HTTP_TOKEN", "t"),
        ])
        .build();
    let e = build(config).expect_err("one underscore short");
    assert!(
        e.message()
            .contains("KOAN_BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS is not read")
            && e.message()
                .contains("`KOAN__BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS`"),
        "{e}"
    );
    // Nor another program's variable that only begins like ours.
    let fine = Config::builder()
        .env_vars([
            ("KOAN_ENV", "production"),
            ("KOAN_HTTP_TOKEN", "t"),
            ("KOAN_SHOP__URL", "x"),
        ])
        .build();
    build(fine)?;

    let both =
        "[background_services.services.Cleanup]\ninterval_seconds = 5\ncron = \"* * * * *\"\n";
    let e = build(Config::builder().toml("koan.toml", both)?.build()).expect_err("two schedules");
    assert!(
        e.message().contains("both `interval_seconds` and `cron`"),
        "{e}"
    );
    Ok(())
}

/// The job runner's knobs are bounded: a lease of 3 million years passed the
/// check (at least 1) and panicked the runner at its first claim, after which
/// every enqueue was answered 202 and nothing ran (found by a probe).
#[test]
fn job_runner_knobs_past_their_bounds_are_refused() -> anyhow::Result<()> {
    for (key, value, max) in [
        ("lease_seconds", "99999999999999", "at most 86400 seconds"),
        ("poll_ms", "60001", "at most 60000 milliseconds"),
        ("retention_hours", "87601", "at most 87600 hours"),
    ] {
        let text = format!("[background_services.jobs]\n{key} = {value}\n");
        let e = koan::testing::host()
            .config(Config::builder().toml("koan.toml", &text)?.build())
            .service::<Cleanup>()
            .build()
            .expect_err(key);
        assert!(
            e.message()
                .contains(&format!("`background_services.jobs.{key}`"))
                && e.message().contains(max),
            "{e}"
        );
    }
    Ok(())
}

/// A periodic service whose hand-written options give it a startup order.
struct Tidy;

impl koan::Service for Tidy {
    type Kind = koan::Periodic;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Tidy")
            .every(std::time::Duration::from_secs(60))
            .order(5)
    }
}

impl koan::PeriodicService for Tidy {
    async fn tick(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}

/// An option only one kind of service reads, set on another, is refused, naming
/// where it was set: a startup order or a startup timeout on a background or
/// periodic service, a stall limit on a background one, were taken without a
/// word and did nothing (found by a probe).
#[test]
fn an_option_the_service_s_kind_does_not_read_is_refused() -> anyhow::Result<()> {
    for (key, reader) in [
        ("startup_order = 5", "startup"),
        ("timeout_seconds = 5", "startup"),
        ("stall_after_seconds = 30", "periodic"),
    ] {
        let text = format!("[background_services.services.Cleanup]\n{key}\n");
        let e = koan::testing::host()
            .config(Config::builder().toml("koan.toml", &text)?.build())
            .service::<Cleanup>()
            .build()
            .expect_err(key);
        let name = key.split(' ').next().unwrap_or(key);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(
            e.message().contains(&format!(
                "background service `Cleanup`: `koan.background_services.services.Cleanup.{name}` is set, but only {reader} services read it"
            )),
            "{e}"
        );
    }
    let e = koan::testing::host()
        .instance(Tidy)
        .build()
        .expect_err("an order on a periodic service");
    assert!(
        e.message()
            .contains("periodic service `Tidy`: `ServiceOptions::order` is set, but only startup services read it")
            && e.message().contains("`type Kind = koan::Startup`"),
        "{e}"
    );
    // A key on a service of the kind that reads it is taken.
    let text = "[background_services.services.Sweep]\nstall_after_seconds = 30\n";
    koan::testing::host()
        .config(Config::builder().toml("koan.toml", text)?.build())
        .instance(Sweep)
        .build()?;
    Ok(())
}

/// A periodic service as written by hand, with no option of another kind.
struct Sweep;

impl koan::Service for Sweep {
    type Kind = koan::Periodic;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Sweep").every(std::time::Duration::from_secs(60))
    }
}

impl koan::PeriodicService for Sweep {
    async fn tick(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}
