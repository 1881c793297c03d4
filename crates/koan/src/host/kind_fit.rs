//! Options that only one kind of service reads, refused on the others when the
//! host is built: a startup order on a periodic service, or a stall limit on a
//! background one, was taken without a word and did nothing (found by a probe).
//! The `#[service]` attribute refuses them at compile time; this covers the
//! configuration and `ServiceOptions` written by hand. A value equal to the
//! default cannot be told from one not set, and changes nothing.

use crate::config::ServiceOverrides;
use crate::error::{Error, ErrorKind, Result};
use crate::service::{ServiceKind, ServiceOptions};

/// `Err` naming the first option `kind` does not read that `options` (with the
/// configuration applied) sets: the configuration key when it came from there.
pub(crate) fn check(
    kind: ServiceKind,
    options: &ServiceOptions,
    overrides: Option<&ServiceOverrides>,
    name: &str,
) -> Result<()> {
    let defaults = ServiceOptions::default();
    let configured = |key: &str| {
        let section = options.config_section.as_deref().unwrap_or(name);
        format!("`koan.background_services.services.{section}.{key}`")
    };
    let set = |setter: &str| format!("`ServiceOptions::{setter}`");
    let o = overrides;
    // (what set it, whether it is set)
    let startup_only = [
        (
            o.and_then(|o| o.startup_order)
                .map_or_else(|| set("order"), |_| configured("startup_order")),
            options.order != defaults.order,
        ),
        (
            o.and_then(|o| o.timeout)
                .map_or_else(|| set("timeout"), |_| configured("timeout_seconds")),
            options.timeout != defaults.timeout,
        ),
        (
            set("continue_on_failure"),
            options.continue_on_failure != defaults.continue_on_failure,
        ),
    ];
    let periodic_only = [
        (
            o.and_then(|o| o.stall_after)
                .map_or_else(|| set("stall_after"), |_| configured("stall_after_seconds")),
            options.stall_after.is_some(),
        ),
        (
            set("run_on_startup"),
            options.run_on_startup != defaults.run_on_startup,
        ),
        (
            set("initial_delay"),
            options.initial_delay != defaults.initial_delay,
        ),
        (
            set("missed_ticks"),
            options.missed_ticks != defaults.missed_ticks,
        ),
    ];
    let kinds = [
        (&startup_only[..], ServiceKind::Startup),
        (&periodic_only[..], ServiceKind::Periodic),
    ];
    for (only, reader) in kinds {
        if kind == reader {
            continue;
        }
        if let Some((by, _)) = only.iter().find(|(_, on)| *on) {
            return Err(refused(kind, name, by, reader));
        }
    }
    Ok(())
}

fn refused(kind: ServiceKind, name: &str, by: &str, reader: ServiceKind) -> Error {
    let needs = match reader {
        ServiceKind::Startup => "Startup",
        _ => "Periodic",
    };
    Error::new(
        ErrorKind::Config,
        format!(
            "{} service `{name}`: {by} is set, but only {} services read it (here it would do nothing); remove it, or make the service `type Kind = koan::{needs}`",
            kind.as_str(),
            reader.as_str()
        ),
    )
}
