//! A service's declared actions at run time: found by name (case and separators
//! ignored), resolved for a call, and described for `info()`.

use crate::util::FxHashMap as HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::ActionContext;
use super::info::ActionInfo;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::event::EventInfo;
use crate::payload::{Params, Payload};
use crate::service::BatchRequest;
use crate::util::BoxFuture;
use crate::well_known::actions as builtin;

pub(super) type Decode = fn(Payload, &dyn Fn() -> String) -> Result<Params>;
pub(super) type Call = Box<
    dyn Fn(Params, ActionContext) -> BoxFuture<'static, std::result::Result<Payload, BoxError>>
        + Send
        + Sync,
>;

/// One declared action, type-erased.
pub(crate) struct ActionEntry {
    pub(crate) name: Arc<str>,
    /// Where it is in its service's [`ActionTable::entries`]: an action's context
    /// finds its name there, through the service it holds anyway, instead of taking a
    /// count on the name (a line every core running the action writes).
    pub(crate) index: usize,
    pub(crate) description: Option<String>,
    pub(crate) params_schema: Value,
    pub(crate) decode: Decode,
    pub(crate) call: Call,
    pub(crate) metrics: OnceLock<super::metrics::ActionMetrics>,
    /// How an enqueued job of this action is retried.
    pub(crate) retry: crate::job::RetryPolicy,
    /// Safe to run twice (see `ActionDecl::idempotent`).
    pub(crate) idempotent: bool,
    /// Its parameters are a JSON object (a struct): see [`ActionEntry::decode_params`].
    pub(crate) takes_object: bool,
}

/// The declared actions and events of one service.
pub(crate) struct ActionTable {
    pub(crate) entries: Vec<Arc<ActionEntry>>,
    pub(super) by_name: HashMap<String, usize>,
    pub(crate) events: Vec<EventInfo>,
    pub(super) periodic: bool,
}

impl ActionEntry {
    /// The parameters of a call, decoded. An array is refused for parameters that
    /// are an object: serde would take its items for the fields in order, a call
    /// that names none of them (`[0, "hi"]` ran as `{"failTimes": 0, "note": "hi"}`).
    pub(crate) fn decode_params(
        &self,
        params: Payload,
        what: &dyn Fn() -> String,
    ) -> crate::error::Result<Params> {
        if self.takes_object && params.is_json_array() {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::InvalidParameters,
                format!(
                    "{}: expected a JSON object of named fields, got an array",
                    what()
                ),
            ));
        }
        (self.decode)(params, what)
    }
}

/// Whether parameters of schema `schema` are a JSON object.
pub(crate) fn takes_object(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

impl std::fmt::Debug for ActionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

/// Up to this many declared actions, [`ActionTable::get`] compares a name with
/// each before hashing it.
const FEW: usize = 8;

fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.' | b' ')
}

/// The key an action name is matched by: lowercase, without separators.
pub(crate) fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether two action names name one action as a service matches them (regardless
/// of case and of separators: `ProcessBatch`, `process-batch`, `process_batch`),
/// without allocating.
///
/// ```
/// use koan::action::same_action_name;
/// assert!(same_action_name("ProcessBatch", "process-batch"));
/// assert!(same_action_name("process_order", "process-order"));
/// assert!(!same_action_name("process-order", "process-orders"));
/// ```
pub fn same_action_name(a: &str, b: &str) -> bool {
    fn key(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .flat_map(char::to_lowercase)
    }
    a == b || key(a).eq(key(b))
}

/// What an action name resolves to.
pub(crate) enum Resolved<'a> {
    Declared(&'a Arc<ActionEntry>),
    Builtin(crate::schedule::Poke),
}

/// Refuses parameters given to the built-in poke `action` (`trigger`,
/// `check-queue`), which takes none: nothing, `()`, `null` or `{}`. A field was
/// dropped without a word (`trigger` with `{"force": true}` ran a plain tick; found
/// by a probe).
fn no_params(service: &str, action: &str, params: Option<Payload>) -> Result<()> {
    let given = match params {
        None | Some(Payload::Unit) | Some(Payload::Json(Value::Null)) => return Ok(()),
        Some(p) => p.into_json()?,
    };
    let what = match &given {
        Value::Null => return Ok(()),
        Value::Object(fields) => match fields.keys().next() {
            None => return Ok(()),
            Some(field) => format!("a field `{}`", field.escape_debug()),
        },
        other => {
            let text = other.to_string();
            let cut: String = text.chars().take(60).collect();
            let more = if cut.len() < text.len() { "…" } else { "" };
            format!("`{cut}{more}`")
        }
    };
    Err(Error::new(
        ErrorKind::InvalidParameters,
        format!(
            "action `{action}` of `{service}` takes no parameters (none, `null` or `{{}}`); it was given {what}"
        ),
    ))
}

impl ActionTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The declared action `name`, matched as written, then regardless of case and
    /// of separators (`ProcessBatch`, `process-batch` and `process_batch` are one).
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ActionEntry>> {
        // A service without actions (a periodic one poked by `trigger`, say, which
        // asks first whether its built-in is overridden) hashes nothing.
        if self.entries.is_empty() {
            return None;
        }
        // A name as declared, among a few: compared directly, cheaper than hashing
        // it. (Declared names are unique even normalized, so this finds what the
        // map would.)
        if self.entries.len() <= FEW
            && let Some(e) = self.entries.iter().find(|e| *e.name == *name)
        {
            return Some(e);
        }
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
    /// `params` is consumed (checked) only for a built-in poke.
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
            match builtin::poke(name) {
                Some(builtin::TRIGGER) => {
                    no_params(service, builtin::TRIGGER, params.take())?;
                    return Ok(Resolved::Builtin(crate::schedule::Poke::Trigger));
                }
                Some(builtin::CHECK_QUEUE) => {
                    no_params(service, builtin::CHECK_QUEUE, params.take())?;
                    return Ok(Resolved::Builtin(crate::schedule::Poke::CheckQueue));
                }
                Some(builtin::PROCESS_BATCH) => {
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
                idempotent: e.idempotent,
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
                        idempotent: false,
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
        // `*`, or a declared name (checked when the service was built): the
        // name's own check is not paid at each emit (B5).
        if name == "*" || (!self.events.is_empty() && self.declares_event(name)) {
            return Ok(());
        }
        // A name that is no name (a service that declares none took any: an empty
        // one, or 5,000 bytes that cut the host's NATS connection; found by a probe).
        if let Some(problem) = crate::util::name_problem(name) {
            return Err(crate::Error::new(
                crate::error::ErrorKind::InvalidParameters,
                format!("service `{service}`: the event name {problem}"),
            ));
        }
        if self.declares_event(name) {
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
