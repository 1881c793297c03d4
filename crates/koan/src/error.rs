//! The one error type of the runtime: a kind to match on and a message for people.

use std::fmt;
use std::sync::Arc;

/// What went wrong, for code that reacts to failures.
///
/// Each kind maps to one HTTP status in `koan-http` and travels unchanged over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No service of that name or type is registered (here or, with a transport, anywhere).
    UnknownService,
    /// The service exists but has no action of that name.
    UnknownAction,
    /// The parameters could not be converted to the handler's parameter type.
    InvalidParameters,
    /// The service is disabled (by configuration or environment gate).
    Disabled,
    /// The service's mailbox is full; retry later.
    Busy,
    /// The deadline passed before the work finished (queue time included).
    Timeout,
    /// The host is shutting down and no longer accepts or finishes work.
    ShuttingDown,
    /// The handler returned an error.
    Handler,
    /// The handler panicked; the service keeps serving.
    Panic,
    /// The service is known but no instance can be reached.
    ServiceUnavailable,
    /// Configuration or a declaration is invalid.
    Config,
    /// A service could not be constructed (missing resource, bad settings).
    Build,
    /// The startup phase failed.
    Startup,
    /// A service marked critical failed for good.
    CriticalFailure,
    /// An action id that the host does not know (never issued, or forgotten).
    UnknownActionId,
    /// The service declares no event of that name.
    UnknownEvent,
    /// No job with that id is stored (never enqueued, deleted, or past retention).
    UnknownJob,
    /// The job store could not write or read (full disk, read-only file, broker
    /// down): nothing was accepted.
    StoreUnavailable,
    /// The job is not in a state that allows this (retrying a running job, …).
    JobState,
    /// The service is not in a state that allows this (restarting one that runs).
    ServiceState,
    /// The action ran, but its result does not read as the type the caller asked
    /// for (a result type changed between builds, a by-name call read as the wrong
    /// type): the parameters were fine, and the work is done.
    InvalidResult,
}

impl ErrorKind {
    /// A stable snake_case identifier, used in JSON bodies and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::UnknownAction => "unknown_action",
            ErrorKind::InvalidParameters => "invalid_parameters",
            ErrorKind::Disabled => "disabled",
            ErrorKind::Busy => "busy",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Handler => "handler_error",
            ErrorKind::Panic => "handler_panic",
            ErrorKind::ServiceUnavailable => "service_unavailable",
            ErrorKind::Config => "config",
            ErrorKind::Build => "build",
            ErrorKind::Startup => "startup",
            ErrorKind::CriticalFailure => "critical_failure",
            ErrorKind::UnknownActionId => "unknown_action_id",
            ErrorKind::UnknownEvent => "unknown_event",
            ErrorKind::UnknownJob => "unknown_job",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::JobState => "job_state",
            ErrorKind::ServiceState => "service_state",
            ErrorKind::InvalidResult => "invalid_result",
        }
    }

    /// The inverse of [`ErrorKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        const ALL: [ErrorKind; 21] = [
            ErrorKind::UnknownService,
            ErrorKind::UnknownAction,
            ErrorKind::InvalidParameters,
            ErrorKind::Disabled,
            ErrorKind::Busy,
            ErrorKind::Timeout,
            ErrorKind::ShuttingDown,
            ErrorKind::Handler,
            ErrorKind::Panic,
            ErrorKind::ServiceUnavailable,
            ErrorKind::Config,
            ErrorKind::Build,
            ErrorKind::Startup,
            ErrorKind::CriticalFailure,
            ErrorKind::UnknownActionId,
            ErrorKind::UnknownEvent,
            ErrorKind::UnknownJob,
            ErrorKind::StoreUnavailable,
            ErrorKind::JobState,
            ErrorKind::ServiceState,
            ErrorKind::InvalidResult,
        ];
        ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the runtime: a [`ErrorKind`] and a message that says what was asked
/// and what exists.
///
/// Cheap to clone, so one outcome can answer several waiters.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// See [`Error::not_started`].
    not_started: bool,
    /// The answer to a call this process made (`execute()`, a result's `value`):
    /// a handler that returns it failed itself (see `action/run.rs`).
    of_a_call: bool,
}

/// The error type user code returns from `run`, `tick` and action handlers: any error,
/// boxed, so `?` works on everything.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Error {
            kind,
            message: message.into(),
            source: None,
            not_started: false,
            of_a_call: false,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Whether the work is known never to have started, and never to start: a call
    /// answered `Timeout` while it still waited in its service's mailbox (no worker
    /// had taken it). Calling again is then safe. `false` says only that this is not
    /// known: a call that timed out after it started may have done its work.
    pub fn not_started(&self) -> bool {
        self.not_started
    }

    /// Marks the work as known never to have started (see
    /// [`not_started`](Self::not_started)): for a transport whose peer said so.
    pub fn never_started(mut self) -> Self {
        self.not_started = true;
        self
    }

    /// Not [`not_started`](Self::not_started): of work that ran.
    pub(crate) fn ran(mut self) -> Self {
        self.not_started = false;
        self
    }

    /// Marks the answer to a call this process made.
    pub(crate) fn of_a_call(mut self) -> Self {
        self.of_a_call = true;
        self
    }

    /// Whether this is the answer to a call this process made.
    pub(crate) fn is_of_a_call(&self) -> bool {
        self.of_a_call
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code for a host that ended with this error, as
    /// [`HostExit::exit_code`](crate::host::HostExit::exit_code) says it: 2 for a
    /// critical service's failure, 1 for anything else. `fn main() -> Result<()>`
    /// exits 1 for every error; a `main` that wants the 2 returns
    /// `std::process::ExitCode::from(e.exit_code())`, as the demo does.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::CriticalFailure => 2,
            _ => 1,
        }
    }

    /// Work that had started and was stopped as its host shut down: its caller is
    /// told it may be partly done (it was told "accepts no more work", as if it
    /// had never been accepted; a probe).
    pub(crate) fn stopped_while_running(what: &str) -> Self {
        Error::new(
            ErrorKind::ShuttingDown,
            format!(
                "{what} was stopped while it ran: the host shut down and its grace ended before the handler did, so its work may be partly done"
            ),
        )
    }

    pub(crate) fn shutting_down(what: &str) -> Self {
        Error::new(
            ErrorKind::ShuttingDown,
            format!("{what}: the host is shutting down and accepts no more work"),
        )
    }
}

impl Error {
    /// The causes that the message does not already say, outermost first: each
    /// cause's own words (a koan [`Error`] cause counts by its message, not by its
    /// whole chain), so that nothing is printed twice.
    fn causes(&self) -> Vec<String> {
        let mut said = self.message.to_string();
        let mut out = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let text = match cause.downcast_ref::<Error>() {
                Some(e) => e.message.to_string(),
                None => cause.to_string(),
            };
            if !text.is_empty() && !said.contains(&text) {
                said.push('\n');
                said.push_str(&text);
                out.push(text);
            }
            next = cause.source();
        }
        out
    }
}

/// `Error { kind: startup, message: "…", causes: ["…"] }`: the kind, the message,
/// and each cause the message does not already include, once.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Prints the kind as its snake_case name, without quotes.
        struct Kind(ErrorKind);
        impl fmt::Debug for Kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }
        let mut d = f.debug_struct("Error");
        d.field("kind", &Kind(self.kind))
            .field("message", &&*self.message);
        let causes = self.causes();
        if !causes.is_empty() {
            d.field("causes", &causes);
        }
        d.finish()
    }
}

/// The message, then each cause it does not already include: `a: b: c`, every part
/// once.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in self.causes() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
