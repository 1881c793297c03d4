//! Typed callers: the request builder that `#[koan::actions]` generates a method
//! for, per action, on `Services<T>`, so that the compiler checks the action's name,
//! its parameter type and its result type.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::execute::Execute;
use super::request::{ActionRequest, CallOptions};
use crate::error::Result;
use crate::job::JobTicket;

/// A call of one action whose result type `R` is the handler's own: what the method
/// that `#[koan::actions]` generates for each action returns.
///
/// ```
/// use koan::{ActionContext, BackgroundService, BoxError, Host, ServiceContext};
///
/// #[koan::service]
/// #[derive(Default)]
/// struct Greeter;
///
/// #[koan::actions]
/// impl Greeter {
///     #[action("greet")]
///     async fn greet(&self, name: String, _cx: &ActionContext) -> Result<String, BoxError> {
///         Ok(format!("hello {name}"))
///     }
/// }
/// # impl BackgroundService for Greeter {
/// #     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> { cx.cancelled().await; Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), koan::Error> {
/// let host = Host::builder().service::<Greeter>().build()?.start();
/// host.started().await?;
/// // `GreeterActions` is the trait `#[koan::actions]` generated next to the impl block.
/// let text: String = host
///     .services::<Greeter>()
///     .greet("Ada".to_owned())
///     .priority(5)
///     .execute()
///     .await?;
/// assert_eq!(text, "hello Ada");
/// # host.shutdown();
/// # host.wait().await.into_result()
/// # }
/// ```
///
/// It carries the same options as [`ActionRequest`]; [`TypedRequest::into_request`]
/// gives the untyped request (to chain further actions by name, or to `spawn` it).
#[must_use = "a typed request does nothing until `.execute()` or `.enqueue()`"]
pub struct TypedRequest<R> {
    request: ActionRequest,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for TypedRequest<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedRequest")
            .field("request", &self.request)
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R> TypedRequest<R> {
    pub(crate) fn new(request: ActionRequest) -> Self {
        TypedRequest {
            request,
            _result: PhantomData,
        }
    }

    fn map(self, f: impl FnOnce(ActionRequest) -> ActionRequest) -> Self {
        TypedRequest::new(f(self.request))
    }

    /// Priority of the call: higher runs first (see [`ActionRequest::priority`]).
    pub fn priority(self, priority: i32) -> Self {
        self.map(|r| r.priority(priority))
    }

    /// Deadline of the call, queue time included (see [`ActionRequest::timeout`]).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|r| r.timeout(timeout))
    }

    /// The correlation id (generated when not given).
    pub fn correlation_id(self, id: impl AsRef<str>) -> Self {
        self.map(|r| r.correlation_id(id))
    }

    /// Applies [`CallOptions`] (priority, timeout, correlation id).
    pub fn options(self, options: CallOptions) -> Self {
        self.map(|r| r.options(options))
    }

    /// Stops the run when `token` is cancelled (see [`ActionRequest::cancel_on`]).
    pub fn cancel_on(self, token: tokio_util::sync::CancellationToken) -> Self {
        self.map(|r| r.cancel_on(token))
    }

    /// For `enqueue()`: the job runs no sooner than `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.map(|r| r.delay(delay))
    }

    /// For `enqueue()`: the job runs no sooner than `at`.
    pub fn at(self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.map(|r| r.at(at))
    }

    /// For `enqueue()`: a repeated enqueue with the same key returns the first job
    /// (see [`ActionRequest::idempotency_key`]).
    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        self.map(|r| r.idempotency_key(key))
    }

    /// Stores the call as a job and returns once the store has it (see
    /// [`ActionRequest::enqueue`]); the ticket's outcome is the handler's result.
    pub async fn enqueue(self) -> Result<TypedJobTicket<R>> {
        self.request.enqueue().await.map(|ticket| TypedJobTicket {
            ticket,
            _result: PhantomData,
        })
    }

    /// The untyped request, to chain more actions by name or to `spawn` it; its
    /// output is an [`ActionOutput`](crate::action::ActionOutput) again.
    pub fn into_request(self) -> ActionRequest {
        self.request
    }
}

impl<R: DeserializeOwned + 'static> TypedRequest<R> {
    /// Runs the action and waits for its result, the handler's own value.
    ///
    /// In this process the handler's value is handed over as it is (no
    /// serialization); from a service in another process it is decoded from JSON.
    pub fn execute(self) -> TypedExecute<R> {
        TypedExecute {
            inner: self.request.execute(),
            _result: PhantomData,
        }
    }
}

/// The future of [`TypedRequest::execute`]: the handler's result.
#[must_use = "futures do nothing unless polled"]
pub struct TypedExecute<R> {
    inner: Execute,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for TypedExecute<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedExecute")
            .field("inner", &self.inner)
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R: DeserializeOwned + 'static> Future for TypedExecute<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        Poll::Ready(out.and_then(|out| out.value::<R>()))
    }
}

/// An accepted job of a typed call (see [`TypedRequest::enqueue`]): a [`JobTicket`]
/// whose outcome is the handler's result type.
pub struct TypedJobTicket<R> {
    ticket: JobTicket,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for TypedJobTicket<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedJobTicket")
            .field("ticket", &self.ticket)
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R> TypedJobTicket<R> {
    /// The job's id (see [`JobTicket::id`]).
    pub fn id(&self) -> &str {
        self.ticket.id()
    }

    /// The correlation id its action runs under.
    pub fn correlation_id(&self) -> &str {
        self.ticket.correlation_id()
    }

    /// `false` when the idempotency key matched a job stored before (see
    /// [`JobTicket::created`]).
    pub fn created(&self) -> bool {
        self.ticket.created()
    }

    /// The untyped ticket.
    pub fn into_ticket(self) -> JobTicket {
        self.ticket
    }
}

impl<R: DeserializeOwned + 'static> TypedJobTicket<R> {
    /// Waits until the job is final: the handler's result when it succeeded (read
    /// back from the job store), its last error when it is dead or cancelled.
    pub async fn outcome(self) -> Result<R> {
        self.ticket.outcome().await?.value::<R>()
    }
}

/// The typed call of action `name` of `T` with `params`: the body of each method
/// `#[koan::actions]` generates. Not public API.
#[doc(hidden)]
pub fn typed_request<T, P, R>(
    services: &crate::Services<T>,
    name: impl AsRef<str>,
    params: P,
) -> TypedRequest<R>
where
    T: crate::Service,
    P: serde::Serialize + Send + 'static,
{
    TypedRequest::new(services.action(name.as_ref(), params))
}

/// What `#[koan::actions]` names as the result type of a handler returning a
/// `Result` it cannot see the arguments of (an alias). Not public API.
#[doc(hidden)]
pub trait HandlerResult {
    /// The success type.
    type Ok;
}

impl<T, E> HandlerResult for std::result::Result<T, E> {
    type Ok = T;
}

/// The kind of value a handler returned, told apart by method resolution (the
/// `anyhow!` macro's way): `(&value).koan_return_kind()` is a [`ReturnsResult`]
/// for any `Result`, whatever its name, a [`ReturnsValue`] otherwise. Not public
/// API.
#[doc(hidden)]
#[derive(Debug)]
pub struct ReturnsResult;

/// See [`ReturnsResult`]. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct ReturnsValue;

/// Found first for a `Result`. Not public API.
#[doc(hidden)]
pub trait ResultKind {
    /// A `Result`.
    fn koan_return_kind(&self) -> ReturnsResult {
        ReturnsResult
    }
}

impl<T, E> ResultKind for std::result::Result<T, E> {}

/// Found for anything else (one auto-reference further). Not public API.
#[doc(hidden)]
pub trait ValueKind {
    /// Not a `Result`.
    fn koan_return_kind(&self) -> ReturnsValue {
        ReturnsValue
    }
}

impl<T: ?Sized> ValueKind for &T {}

/// What a handler whose return type is not written `Result<…>` must return: a
/// value. A `Result` under another name (`type AppResult<T> = Result<T, AppError>`)
/// was taken for a value, and its `Err` answered as a success (found by a probe).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this action returns a `Result` under another name (an alias such as `AppResult<T>`)",
    label = "write this return type as `Result<T, E>`",
    note = "`#[koan::actions]` reads an action's failure from a return type written `Result<T, E>` (`Result`, `io::Result`, `anyhow::Result`: a path whose last part is `Result`); under another name its `Err` would be answered as a success"
)]
pub trait PlainValue {}

impl PlainValue for ReturnsValue {}

/// Checks, at compile time, that a handler's value is no `Result` (see
/// [`PlainValue`]). Not public API.
#[doc(hidden)]
#[inline(always)]
pub fn plain_value<K: PlainValue>(_: K) {}
