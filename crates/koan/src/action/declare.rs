//! Declaring a service's actions and events (`Service::actions`).

use crate::util::FxHashMap as HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ActionContext;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::event::EventInfo;
use crate::payload::{Params, Payload};
use crate::service::{Service, ServiceKind};

use super::table::{ActionEntry, ActionTable, Call, Decode, normalized};

/// Where a service declares its actions and events (see [`Service::actions`]).
///
/// ```
/// use std::sync::Arc;
/// use koan::{Actions, ActionContext, Background, BackgroundService, BoxError, Service, ServiceContext};
///
/// #[derive(Default)]
/// struct Greeter;
///
/// impl Service for Greeter {
///     type Kind = Background;
///     fn actions(a: &mut Actions<Self>) {
///         a.action("greet", |svc: Arc<Self>, name: String, _cx: ActionContext| async move {
///             Ok::<_, BoxError>(svc.greet(&name))
///         })
///         .description("Says hello");
///         a.event::<String>("Greeted");
///     }
/// }
/// # impl Greeter { fn greet(&self, n: &str) -> String { format!("hello {n}") } }
/// # impl BackgroundService for Greeter {
/// #     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> { cx.cancelled().await; Ok(()) }
/// # }
/// ```
pub struct Actions<T> {
    service: String,
    kind: ServiceKind,
    pending: Vec<PendingAction<T>>,
    events: Vec<EventInfo>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Actions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("service", &self.service)
            .field(
                "actions",
                &self.pending.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

type Bind<T> = Box<dyn FnOnce(Arc<T>) -> Call>;

/// A handler shared by every run of its action (each run's future calls it). One
/// that is zero-sized and needs no drop — a function, or a closure capturing nothing:
/// the usual case — is `'static` for free (leaking it allocates nothing), so a run
/// takes no count on an `Arc` that every core running the action writes.
enum SharedHandler<F: 'static> {
    Static(&'static F),
    Counted(Arc<F>),
}

impl<F> SharedHandler<F> {
    fn new(handler: F) -> Self {
        if std::mem::size_of::<F>() == 0 && !std::mem::needs_drop::<F>() {
            SharedHandler::Static(Box::leak(Box::new(handler)))
        } else {
            SharedHandler::Counted(Arc::new(handler))
        }
    }
}

impl<F> Clone for SharedHandler<F> {
    fn clone(&self) -> Self {
        match self {
            SharedHandler::Static(f) => SharedHandler::Static(f),
            SharedHandler::Counted(f) => SharedHandler::Counted(Arc::clone(f)),
        }
    }
}

impl<F> std::ops::Deref for SharedHandler<F> {
    type Target = F;

    fn deref(&self) -> &F {
        match self {
            SharedHandler::Static(f) => f,
            SharedHandler::Counted(f) => f,
        }
    }
}

struct PendingAction<T> {
    name: String,
    description: Option<String>,
    retry: crate::job::RetryPolicy,
    idempotent: bool,
    params_schema: Value,
    decode: Decode,
    bind: Bind<T>,
}

/// Sets details of a declared action.
#[derive(Debug)]
pub struct ActionDecl<'a> {
    description: &'a mut Option<String>,
    retry: &'a mut crate::job::RetryPolicy,
    idempotent: &'a mut bool,
}

impl ActionDecl<'_> {
    /// What the action does, shown in `info`, OpenAPI and the dashboard.
    pub fn description(self, text: impl Into<String>) -> Self {
        *self.description = Some(text.into());
        self
    }

    /// How many runs an enqueued job of this action may have in all (default 3;
    /// 1 = never retried). Configuration can override it
    /// (`services.<name>.actions.<action>.max_attempts`).
    pub fn max_attempts(self, n: u32) -> Self {
        self.retry.max_attempts = n.max(1);
        self
    }

    /// Declares that running the action twice has the effect of running it once.
    /// A remote call to it whose instance leaves the cluster mid-call is then sent
    /// again to an instance that remains, instead of failing with "outcome unknown".
    /// Shown as `idempotent` in `info`.
    pub fn idempotent(self) -> Self {
        *self.idempotent = true;
        self
    }

    /// The wait before a failed job's second run (default 1 s); it doubles for each
    /// run after, with jitter, up to 5 minutes.
    pub fn backoff(self, wait: std::time::Duration) -> Self {
        self.retry.backoff = wait;
        self
    }
}

fn decode_as<P: DeserializeOwned + Send + 'static>(
    payload: Payload,
    what: &dyn Fn() -> String,
) -> Result<Params> {
    payload.decode_params::<P>(what)
}

fn schema_of<P: JsonSchema>() -> Value {
    if std::any::type_name::<P>() == "()" {
        return Value::Null;
    }
    serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Null)
}

impl<T: Service> Actions<T> {
    pub(crate) fn new(service: &str, kind: ServiceKind) -> Self {
        Actions {
            service: service.to_owned(),
            kind,
            pending: Vec::new(),
            events: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Declares action `name` with a handler taking typed parameters `P` (use `()` for
    /// none) and returning a serializable result.
    pub fn action<P, R, E, F, Fut>(&mut self, name: impl Into<String>, handler: F) -> ActionDecl<'_>
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<BoxError> + 'static,
        F: Fn(Arc<T>, P, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, E>> + Send + 'static,
    {
        let handler = SharedHandler::new(handler);
        let bind: Bind<T> = Box::new(move |svc: Arc<T>| -> Call {
            Box::new(move |mut params: Params, cx: ActionContext| {
                let svc = Arc::clone(&svc);
                let handler = handler.clone();
                // Taken now: the future holds the parameters, not their holder.
                let params = params.take::<P>();
                Box::pin(async move {
                    let params =
                        params.ok_or_else(|| BoxError::from("parameter type confusion"))?;
                    match handler(svc, params, cx).await {
                        Ok(r) => Ok(Payload::of(r)),
                        Err(e) => Err(e.into()),
                    }
                })
            })
        });
        self.pending.push(PendingAction {
            name: name.into(),
            description: None,
            retry: crate::job::RetryPolicy::default(),
            idempotent: false,
            params_schema: schema_of::<P>(),
            decode: decode_as::<P>,
            bind,
        });
        let last = self.pending.len() - 1;
        let pending = &mut self.pending[last];
        ActionDecl {
            description: &mut pending.description,
            retry: &mut pending.retry,
            idempotent: &mut pending.idempotent,
        }
    }

    /// Declares an event the service emits, with payload type `E` (its schema is shown
    /// in `info`).
    pub fn event<E: JsonSchema>(&mut self, name: impl Into<String>) -> &mut Self {
        self.events.push(EventInfo {
            name: name.into(),
            description: None,
            payload_schema: schema_of::<E>(),
        });
        self
    }

    /// Declares an event with a description.
    pub fn event_described<E: JsonSchema>(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.event::<E>(name);
        if let Some(last) = self.events.last_mut() {
            last.description = Some(description.into());
        }
        self
    }

    /// Applies a configured retry policy to a declared action.
    pub(crate) fn override_retry(
        &mut self,
        name: &str,
        max_attempts: Option<u32>,
        backoff: Option<std::time::Duration>,
        section: &str,
    ) -> Result<()> {
        let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        else {
            let names: Vec<&str> = self.pending.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "configuration section `{section}` names action `{name}`, which service `{}` does not declare; it declares: {}",
                    self.service,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        if let Some(n) = max_attempts {
            p.retry.max_attempts = n.max(1);
        }
        if let Some(b) = backoff {
            p.retry.backoff = b;
        }
        Ok(())
    }

    pub(crate) fn into_table(self, service: Arc<T>) -> Result<ActionTable> {
        let mut by_name = HashMap::default();
        let mut entries = Vec::new();
        for e in &self.events {
            if let Some(problem) = crate::util::name_problem(&e.name) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("service `{}`: the event name {problem}", self.service),
                ));
            }
        }
        for (i, e) in self.events.iter().enumerate() {
            if self.events[..i].iter().any(|d| d.name == e.name) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "service `{}` declares event `{}` twice; declare each event once",
                        self.service,
                        e.name.escape_debug()
                    ),
                ));
            }
        }
        for p in self.pending {
            if let Some(problem) = crate::util::name_problem(&p.name) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("service `{}`: the action name {problem}", self.service),
                ));
            }
            let key = normalized(&p.name);
            if by_name.contains_key(&key) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "service `{}` declares action `{}` twice (names are matched regardless of case and of `-`, `_`, `.` and spaces)",
                        self.service, p.name
                    ),
                ));
            }
            by_name.insert(key, entries.len());
            by_name.insert(p.name.clone(), entries.len());
            entries.push(Arc::new(ActionEntry {
                name: Arc::from(p.name),
                index: entries.len(),
                description: p.description,
                takes_object: super::table::takes_object(&p.params_schema),
                params_schema: p.params_schema,
                decode: p.decode,
                call: (p.bind)(Arc::clone(&service)),
                metrics: OnceLock::new(),
                retry: p.retry,
                idempotent: p.idempotent,
            }));
        }
        Ok(ActionTable {
            entries,
            by_name,
            events: self.events,
            periodic: self.kind == ServiceKind::Periodic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SharedHandler;

    #[test]
    fn a_handler_capturing_nothing_is_shared_without_a_count() {
        let plain = SharedHandler::new(|x: u32| x + 1);
        assert!(matches!(plain, SharedHandler::Static(_)));
        assert_eq!(plain.clone()(1), 2);

        let captured = String::from("state");
        let with_state = SharedHandler::new(move |x: u32| captured.len() as u32 + x);
        let SharedHandler::Counted(arc) = &with_state else {
            panic!("a handler with state is counted");
        };
        assert_eq!(std::sync::Arc::strong_count(arc), 1);
        let copy = with_state.clone();
        assert_eq!(copy(1), 6);
        drop(copy);
        assert_eq!(
            std::sync::Arc::strong_count(arc),
            1,
            "dropped with its copy"
        );
    }
}
