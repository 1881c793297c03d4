use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::host::Environment;

/// Shared values registered on the host builder with `.resource(value)`, by type.
#[derive(Default, Clone)]
pub(crate) struct Resources {
    map: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.map.values().map(|(n, _)| n))
            .finish()
    }
}

impl Resources {
    pub(crate) fn insert<R: Send + Sync + 'static>(&mut self, value: Arc<R>) {
        self.map
            .insert(TypeId::of::<R>(), (std::any::type_name::<R>(), value));
    }

    pub(crate) fn get<R: Send + Sync + 'static>(&self) -> Option<Arc<R>> {
        self.map
            .get(&TypeId::of::<R>())
            .and_then(|(_, v)| Arc::clone(v).downcast::<R>().ok())
    }

    fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.map.values().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names
    }
}

/// What a service can draw on while it is constructed: shared resources, its typed
/// settings and the environment (see [`FromContext`]).
#[derive(Debug)]
pub struct BuildContext<'a> {
    pub(crate) service: &'a str,
    pub(crate) resources: &'a Resources,
    pub(crate) settings: Option<&'a serde_json::Value>,
    pub(crate) settings_source: &'a str,
    pub(crate) environment: Environment,
}

impl BuildContext<'_> {
    /// The name of the service being built.
    pub fn service_name(&self) -> &str {
        self.service
    }

    /// The environment the host runs in.
    pub fn environment(&self) -> Environment {
        self.environment.clone()
    }

    /// A shared resource registered with `HostBuilder::resource`.
    ///
    /// A missing resource is a `Build` error naming the service, the type asked for and
    /// the types that are registered.
    pub fn resource<R: Send + Sync + 'static>(&self) -> Result<Arc<R>> {
        self.resources.get::<R>().ok_or_else(|| {
            let have = self.resources.names();
            Error::new(
                ErrorKind::Build,
                format!(
                    "service `{}` needs a resource of type `{}`, but none is registered \
                     (register it with `HostBuilder::resource`); registered: {}",
                    self.service,
                    std::any::type_name::<R>(),
                    if have.is_empty() {
                        "none".to_owned()
                    } else {
                        have.join(", ")
                    }
                ),
            )
        })
    }

    /// The service's typed settings, from its configuration section's `settings`
    /// (defaults when there is none). A mismatch is a `Config` error naming the field
    /// and where the value came from.
    pub fn settings<S: DeserializeOwned + Default>(&self) -> Result<S> {
        match self.settings {
            None => Ok(S::default()),
            Some(value) => {
                self.warn_ignored::<S>(value);
                self.decode_settings(value)
            }
        }
    }

    /// The service's typed settings, which the configuration must give: as
    /// [`settings`](Self::settings), but without a `settings` section the service
    /// is not built (a `Config` error naming the section to write), where
    /// `settings` would take `S::default()`. For settings with no sensible default
    /// (a currency, a URL): a required field was required only when the section
    /// existed, and an absent section started the service with empty values
    /// (found by a probe of an upgrade).
    pub fn required_settings<S: DeserializeOwned>(&self) -> Result<S> {
        let Some(value) = self.settings else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "service `{}` needs its settings ({}), and the configuration gives none: add them under its section's `settings`, e.g. `[koan.background_services.services.{}.settings]` in koan.toml",
                    self.service,
                    std::any::type_name::<S>(),
                    toml_key(self.service)
                ),
            ));
        };
        self.warn_ignored::<S>(value);
        self.decode_settings(value)
    }

    /// Warns of each key of `value` that `S` does not read: a misspelt key in a
    /// service's settings (`max_totl`) was dropped without a word, its field left
    /// at its default (found by a probe). Warned, not refused: a configuration
    /// shared by a cluster may name a field that only a newer build reads.
    fn warn_ignored<S: DeserializeOwned>(&self, value: &serde_json::Value) {
        for key in crate::config::folded::ignored_keys::<S>(value) {
            tracing::warn!(
                service = %self.service,
                key = %key,
                source = %self.settings_source,
                "configuration key `settings.{key}` of service `{}` is read by no field of {} (misspelt?): ignored",
                self.service,
                std::any::type_name::<S>()
            );
        }
    }

    fn decode_settings<S: DeserializeOwned>(&self, value: &serde_json::Value) -> Result<S> {
        crate::config::folded::settings::<S>(value, &|| {
            format!(
                "settings of service `{}` (from {})",
                self.service, self.settings_source
            )
        })
    }
}

/// How a service is constructed by the host. Every `Default` type has it; implement it
/// for services that need resources or settings.
///
/// ```
/// use std::sync::Arc;
/// use koan::{service::BuildContext, service::FromContext};
///
/// struct Pool;
/// struct Cleanup { pool: Arc<Pool> }
///
/// impl FromContext for Cleanup {
///     fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
///         Ok(Cleanup { pool: cx.resource::<Pool>()? })
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "the host cannot construct `{Self}`",
    note = "derive `Default` for `{Self}`, or implement `koan::service::FromContext` to take resources and settings from the `BuildContext`, or build it yourself and register the value with `HostBuilder::instance` (under `#[koan::service]`, also add `discover = false`: discovery has the host construct it)"
)]
pub trait FromContext: Sized {
    /// Builds the service.
    fn from_context(cx: &BuildContext<'_>) -> Result<Self>;
}

impl<T: Default> FromContext for T {
    fn from_context(_: &BuildContext<'_>) -> Result<Self> {
        Ok(T::default())
    }
}

/// `name` as a TOML key: bare when it may be, quoted otherwise (`"Mail Sender"`).
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Default, serde::Deserialize)]
    #[allow(dead_code)]
    struct Orders {
        max_total: Option<u32>,
        limits: Limits,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[allow(dead_code)]
    struct Limits {
        per_day: u32,
    }

    #[test]
    fn the_keys_a_settings_type_does_not_read_are_named() {
        let value = serde_json::json!({"max_totl": 5, "limits": {"per_day": 3, "per_dya": 4}});
        assert_eq!(
            crate::config::folded::ignored_keys::<Orders>(&value),
            ["limits.per_dya", "max_totl"]
        );
        let fine = serde_json::json!({"max_total": 5, "limits": {"per_day": 3}});
        assert!(crate::config::folded::ignored_keys::<Orders>(&fine).is_empty());
        // One that does not read at all is refused elsewhere, with its own words.
        assert!(
            crate::config::folded::ignored_keys::<Orders>(&serde_json::json!({"limits": 1}))
                .is_empty()
        );
    }

    #[test]
    fn a_name_that_is_no_bare_key_is_quoted() {
        assert_eq!(super::toml_key("Billing"), "Billing");
        assert_eq!(super::toml_key("mail-sender_2"), "mail-sender_2");
        assert_eq!(super::toml_key("Mail Sender"), "\"Mail Sender\"");
        assert_eq!(super::toml_key("a.b"), "\"a.b\"");
    }
}
