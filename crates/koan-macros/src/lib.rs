//! Attribute macros of [koan](https://docs.rs/koan). Use them through `koan`'s
//! re-exports: `#[koan::service]`, `#[koan::actions]`, `#[derive(koan::Event)]`.
//!
//! The generated code calls only `::koan::__private`, which is not a stable API.

mod attr;
mod expand;
mod typed;

use proc_macro::TokenStream;

/// Makes a struct a koan service and registers it for `HostBuilder::discover()`
/// (unless `discover = false`).
///
/// Options (all optional): `name`, `description`, `enabled`, `config_section`,
/// `priority`, `run_in_development`, `run_in_production`, `run_in_testing`,
/// `run_in = ["staging", "production"]` (any environment names, instead of the three
/// switches), `background` / `periodic` / `startup` (the kind; inferred from the other options
/// when absent), `every = "1h"`, `cron = "0 */5 * * * *"`, `initial_delay = "10s"`,
/// `run_on_startup`, `missed_ticks = "skip" | "delay" | "catch-up-once"`, `singleton`, `order`,
/// `continue_on_failure`, `timeout = "60s"`, `critical`, `restart = "never" |
/// "on-failure" | "always"`, `max_concurrency`, `mailbox_capacity`, `health = method`
/// and `ready = method` (an `async fn(&self) -> HealthReport` / `-> bool` of the
/// service reporting its health and readiness), and
/// `event(name = "X", payload = Type, description = "…")` / `event(Type)`
/// (repeatable), and `discover = false`.
///
/// Discovery has the host construct the service, so the type must be `Default` or
/// implement `koan::FromContext`. A service you build yourself (with fields the host
/// cannot fill) takes `discover = false` and is added with
/// `HostBuilder::instance(value)`; it is then left out of `HostBuilder::discover()`.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::service(args.into(), input.into()).into()
}

/// Declares the `#[action("name", description = "…")]` methods of an impl block as the
/// service's actions.
#[proc_macro_attribute]
pub fn actions(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::actions(args.into(), input.into()).into()
}

/// Gives an event payload type its event name: `#[event(name = "TranslationCompleted")]`
/// (default: the type's name).
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event(input.into()).into()
}
