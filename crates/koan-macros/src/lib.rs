//! Attribute macros of [koan](https://docs.rs/koan). Use them through `koan`'s
//! re-exports: `#[koan::service]`, `#[koan::actions]`, `#[derive(koan::Event)]`.
//!
//! The generated code calls only `::koan::__private`, which is not a stable API.

mod attr;
mod expand;
mod lit;
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
/// implement `koan::service::FromContext`. A service you build yourself (with fields the host
/// cannot fill) takes `discover = false` and is added with
/// `HostBuilder::instance(value)`; it is then left out of `HostBuilder::discover()`.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::service(args.into(), input.into()).into()
}

/// Declares the `#[action("name", description = "…")]` methods of an impl block as the
/// service's actions, and generates their typed callers.
///
/// # `#[action]`
/// `#[action("name")]`, `#[action(name = CONSTANT)]`, or `#[action]` alone (the method's
/// name in kebab case, without one trailing `_async`: `check_queue` and
/// `check_queue_async` → `check-queue`, `r#match` → `match`); then optionally
/// `description = "…"`, and for enqueued jobs `max_attempts = N` (default 3) and
/// `backoff = "1s"` (the first wait, doubled after each failure); `idempotent` when
/// running it twice has the effect of once (a remote call is then sent again to
/// another instance if its instance leaves the cluster mid-call).
///
/// An action is an `async fn` taking `&self`, then at most one parameter value and
/// an optional `&ActionContext` (or `ActionContext`), in any order:
///
/// | signature | parameters |
/// | --- | --- |
/// | `async fn a(&self) -> R` | none |
/// | `async fn a(&self, cx: &ActionContext) -> R` | none |
/// | `async fn a(&self, p: P) -> R` | `P` |
/// | `async fn a(&self, p: P, cx: &ActionContext) -> R` | `P` |
///
/// `P` is `serde::Deserialize + schemars::JsonSchema` (`()` means none). The result is a
/// `Serialize` value `R`, or a `Result<R, E>` whose error turns into `koan::BoxError`
/// (any `std::error::Error`, a `String`, …); a return type is taken as a `Result` when
/// its last path segment is `Result` (`anyhow::Result<R>`, `koan::Result<R>` too).
///
/// # Typed callers
/// For `impl TranslationService`, the macro also generates a trait
/// `TranslationServiceActions`, implemented for `koan::Services<TranslationService>`,
/// with one method per action, named as the handler:
///
/// ```ignore
/// // #[action("translate")]
/// // async fn translate(&self, opts: TranslationOptions, cx: &ActionContext) -> Result<String, BoxError>
/// let file: String = host
///     .services::<TranslationService>()
///     .translate(opts)                 // takes a `TranslationOptions`
///     .priority(10)
///     .timeout(Duration::from_secs(60))
///     .correlation_id("upload-42")
///     .execute()                       // or `.enqueue()`: a job whose outcome is a `String`
///     .await?;                         // `koan::Result<String>`
/// ```
///
/// The method returns a `koan::action::TypedRequest<R>`, so a misspelled action, a
/// parameter of another type and a result read as another type do not compile. A
/// handler without parameters gives a caller without arguments. In this process the
/// parameter and the result are handed over as they are (no serialization); calling
/// a typed caller needs the parameter type to be `Serialize` too, so that the same
/// call can reach a service in another process.
///
/// - The trait is `pub` and sits next to the impl block; bring it into scope to call
///   its methods (`use crate::translation::TranslationServiceActions;`), as the
///   compiler suggests.
/// - A handler named like a method `Services` has itself (`status`, `health`,
///   `info`, `trigger`, `check_queue`, `process_batch`, `on`, `action`, `name`,
///   `instance`) keeps its caller, but method syntax finds `Services`' own first:
///   call it as `TranslationServiceActions::status(&services)`, or give the handler
///   another name (the action keeps its declared name).
/// - Nothing is generated for a generic impl block, nor for an action whose
///   parameter or result type is an `impl Trait`.
///
/// The by-name form, `services.action("translate", params)`, stays for callers that
/// only know the name (HTTP, the CLI, JSON, other processes).
#[proc_macro_attribute]
pub fn actions(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::actions(args.into(), input.into()).into()
}

/// Marks a handler inside an `impl` block marked [`macro@actions`], which reads it: on
/// its own, outside such a block, it is an error saying so (a bare `#[action]` on a
/// plain `impl` declared nothing and was refused only as an unknown attribute).
#[proc_macro_attribute]
pub fn action(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::action_alone(args.into(), input.into()).into()
}

/// Gives an event payload type its event name: `#[event(name = "TranslationCompleted")]`
/// (default: the type's name).
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    expand::event(input.into()).into()
}
