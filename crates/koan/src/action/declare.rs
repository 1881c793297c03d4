//! Declaring a service's actions and events (`Service::actions`).

use crate::util::FxHashMap as HashMap;
use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ActionContext;
use super::info::ActionInfo;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::event::EventInfo;
use crate::payload::Payload;
use crate::service::{BatchRequest, Service, ServiceKind};
use crate::util::BoxFuture;
use crate::well_known::actions as builtin;

type Decode = fn(Payload, &dyn Fn() -> String) -> Result<Box<dyn Any + Send>>;
type Call = Box<
    dyn Fn(
            Box<dyn Any + Send>,
            ActionContext,
        ) -> BoxFuture<'static, std::result::Result<Payload, BoxError>>
        + Send
        + Sync,
>;

/// One declared action, type-erased.
pub(crate) struct ActionEntry {
    pub(crate) name: Arc<str>,
    pub(crate) description: Option<String>,
    pub(crate) params_schema: Value,
    pub(crate) decode: Decode,
    pub(crate) call: Call,
    pub(crate) metrics: OnceLock<super::metrics::ActionMetrics>,
    /// How an enqueued job of this action is retried.
    pub(crate) retry: crate::job::RetryPolicy,
}

/// The declared actions and events of one service.
pub(crate) struct ActionTable {
    pub(crate) entries: Vec<Arc<ActionEntry>>,
    by_name: HashMap<String, usize>,
    pub(crate) events: Vec<EventInfo>,
    periodic: bool,
}

impl std::fmt::Debug for ActionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.' | b' ')
}

/// The key an action name is matched by: lowercase, without separators.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// What an action name resolves to.
pub(crate) enum Resolved<'a> {
    Declared(&'a Arc<ActionEntry>),
    Builtin(crate::schedule::Poke),
}

impl ActionTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The declared action `name`, matched as written, then regardless of case and
    /// of separators (`ProcessBatch`, `process-batch` and `process_batch` are one).
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ActionEntry>> {
        let idx = match self.by_name.get(name) {
            Some(i) => *i,
            None if name
                .bytes()
                .any(|b| b.is_ascii_uppercase() || is_separator(b)) =>
            {
                *self.by_name.get(&normalized(name))?
            }
            None => return None,
        };
        self.entries.get(idx)
    }

    /// Whether the service declares an action `name` itself.
    pub(crate) fn declares(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Finds `name`; built-in pokes apply to periodic services unless overridden.
    /// `params` is consumed only for built-in `process-batch`.
    pub(crate) fn resolve(
        &self,
        service: &str,
        name: &str,
        params: &mut Option<Payload>,
    ) -> Result<Resolved<'_>> {
        if let Some(e) = self.get(name) {
            return Ok(Resolved::Declared(e));
        }
        if self.periodic {
            // The built-in names as written need no allocation; other spellings
            // (`Trigger`, `check_queue`) are normalized.
            let normalized;
            let key = if matches!(
                name,
                builtin::TRIGGER | builtin::CHECK_QUEUE | builtin::PROCESS_BATCH
            ) {
                name
            } else {
                normalized = name.to_ascii_lowercase().replace('_', "-");
                normalized.as_str()
            };
            match key {
                builtin::TRIGGER | "trigger-now" => {
                    return Ok(Resolved::Builtin(crate::schedule::Poke::Trigger));
                }
                builtin::CHECK_QUEUE => {
                    return Ok(Resolved::Builtin(crate::schedule::Poke::CheckQueue));
                }
                builtin::PROCESS_BATCH => {
                    let what = || format!("action `process-batch` of `{service}`");
                    // No parameters (none given, `()`, or JSON `null` such as an
                    // empty HTTP body) mean the default batch.
                    let req = match params.take() {
                        None | Some(Payload::Unit) | Some(Payload::Json(Value::Null)) => {
                            BatchRequest::default()
                        }
                        Some(p) => p.decode::<BatchRequest>(&what)?,
                    };
                    return Ok(Resolved::Builtin(crate::schedule::Poke::ProcessBatch(req)));
                }
                _ => {}
            }
        }
        Err(self.unknown(service, name))
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.iter().map(|e| e.name.to_string()).collect();
        if self.periodic {
            for b in [
                builtin::TRIGGER,
                builtin::CHECK_QUEUE,
                builtin::PROCESS_BATCH,
            ] {
                if !names.iter().any(|n| n == b) {
                    names.push(b.to_owned());
                }
            }
        }
        names
    }

    fn unknown(&self, service: &str, name: &str) -> Error {
        let names = self.names();
        Error::new(
            ErrorKind::UnknownAction,
            format!(
                "service `{service}` has no action `{name}`; its actions: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        )
    }

    pub(crate) fn info(&self) -> Vec<ActionInfo> {
        let mut out: Vec<ActionInfo> = self
            .entries
            .iter()
            .map(|e| ActionInfo {
                name: e.name.to_string(),
                description: e.description.clone(),
                params_schema: e.params_schema.clone(),
                builtin: false,
            })
            .collect();
        if self.periodic {
            let batch_schema =
                serde_json::to_value(schemars::schema_for!(BatchRequest)).unwrap_or(Value::Null);
            let builtins = [
                (
                    builtin::TRIGGER,
                    "Run the tick now (coalesced with a run in progress)",
                    Value::Null,
                ),
                (
                    builtin::CHECK_QUEUE,
                    "Check the queue now (runs `check_queue`)",
                    Value::Null,
                ),
                (
                    builtin::PROCESS_BATCH,
                    "Process a batch now (runs `process_batch`)",
                    batch_schema,
                ),
            ];
            for (name, desc, schema) in builtins {
                if !out.iter().any(|a| a.name == name) {
                    out.push(ActionInfo {
                        name: name.to_owned(),
                        description: Some(desc.to_owned()),
                        params_schema: schema,
                        builtin: true,
                    });
                }
            }
        }
        out
    }

    pub(crate) fn declares_event(&self, name: &str) -> bool {
        self.events.is_empty()
            || self
                .events
                .iter()
                .any(|e| e.name.eq_ignore_ascii_case(name))
    }

    /// The one rule for emitting and subscribing: a service that declares events
    /// takes only those (`"*"` stands for all of them); one that declares none takes
    /// any name.
    pub(crate) fn check_event(&self, service: &str, name: &str) -> crate::Result<()> {
        if name == "*" || self.declares_event(name) {
            return Ok(());
        }
        let declared: Vec<_> = self.events.iter().map(|e| e.name.as_str()).collect();
        Err(crate::Error::new(
            crate::error::ErrorKind::UnknownEvent,
            format!(
                "service `{service}` declares no event `{name}`; its events: {}",
                declared.join(", ")
            ),
        ))
    }
}

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

struct PendingAction<T> {
    name: String,
    description: Option<String>,
    retry: crate::job::RetryPolicy,
    params_schema: Value,
    decode: Decode,
    bind: Bind<T>,
}

/// Sets details of a declared action.
#[derive(Debug)]
pub struct ActionDecl<'a> {
    description: &'a mut Option<String>,
    retry: &'a mut crate::job::RetryPolicy,
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
) -> Result<Box<dyn Any + Send>> {
    payload.decode_boxed::<P>(what)
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
        let handler = Arc::new(handler);
        let bind: Bind<T> = Box::new(move |svc: Arc<T>| -> Call {
            Box::new(move |params: Box<dyn Any + Send>, cx: ActionContext| {
                let svc = Arc::clone(&svc);
                let handler = Arc::clone(&handler);
                Box::pin(async move {
                    let params = params
                        .downcast::<P>()
                        .map_err(|_| BoxError::from("parameter type confusion"))?;
                    match handler(svc, *params, cx).await {
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
            params_schema: schema_of::<P>(),
            decode: decode_as::<P>,
            bind,
        });
        let last = self.pending.len() - 1;
        let pending = &mut self.pending[last];
        ActionDecl {
            description: &mut pending.description,
            retry: &mut pending.retry,
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
        for p in self.pending {
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
                description: p.description,
                params_schema: p.params_schema,
                decode: p.decode,
                call: (p.bind)(Arc::clone(&service)),
                metrics: OnceLock::new(),
                retry: p.retry,
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
