//! Small private helpers shared by the runtime.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

/// A boxed, sendable future: what [`Transport`](crate::transport::Transport) implementations
/// return, and the currency of type erasure inside the runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The future's output, or the message of a panic inside it (futures-util's
/// `catch_unwind`), so a misbehaving service or handler never unwinds into the
/// runtime. Unpin when `F` is.
pub(crate) type CaughtUnwind<F> = futures_util::future::Map<
    futures_util::future::CatchUnwind<AssertUnwindSafe<F>>,
    fn(std::thread::Result<<F as Future>::Output>) -> Result<<F as Future>::Output, String>,
>;

/// Runs `fut`, turning a panic inside it into `Err(message)`.
pub(crate) fn catch_unwind<F: Future>(fut: F) -> CaughtUnwind<F> {
    use futures_util::FutureExt;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .map(|r| r.map_err(panic_message))
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// An error of user code as one line: its own words, then each cause its words do
/// not already include (`top: middle: connection refused`). A handler's, a tick's
/// or a run's error was said by its `Display` alone: a `thiserror` `#[source]` or an
/// `anyhow` context chain lost everything under its top (found by a probe).
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    // Bounded, in case a source chain loops.
    for _ in 0..32 {
        let Some(cause) = next else { break };
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// `text` cut to `max` bytes (at a character's edge) when longer, saying how long
/// it was and that `keeper` keeps only its start: the one rule for the error texts
/// a host keeps (a job's record, a service's last error and run history).
pub(crate) fn cut_text(mut text: String, max: usize, keeper: &str) -> String {
    if text.len() > max {
        let total = text.len();
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(&format!(
            "… ({total} bytes; {keeper} keeps the first {max})"
        ));
    }
    text
}

/// The last path segment of a type name: `my_app::jobs::Cleanup<u8>` → `Cleanup`.
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Whole milliseconds of `d`, saturating (a record's or a message's `timeout_ms`).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds, rounded up: a stored job's timeout is never shorter than
/// the one given (`1ns` became `0` ms, and its job dead at once; found by a probe).
pub(crate) fn millis_up(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Renders a duration the way people write them in config: `1h`, `30s`, `250ms`.
pub(crate) fn fmt_duration(d: std::time::Duration) -> String {
    // Sub-millisecond precision only for tiny durations; logs want `153ms`, not `153ms449us897ns`.
    let d = if d >= std::time::Duration::from_millis(1) {
        std::time::Duration::from_millis(millis(d))
    } else {
        d
    };
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// `at + d`, or a far future (about 30 years on) when that would overflow: a huge
/// timeout, grace or interval means "never", not a panic.
pub(crate) fn after(at: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(std::time::Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(at)
}

/// A `HashMap` with rustc's Fx hash, for the small, fixed lookup tables on the hot
/// path (services by type and name, actions by name): their keys are set when the
/// host is built, never by a client, so flooding them is not a risk.
pub(crate) type FxHashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The longest service, action or event name a host takes, in bytes.
pub(crate) const MAX_NAME: usize = 200;

/// What is wrong with `name` as a service's, an action's or an event's name, if
/// anything: it must have 1 to [`MAX_NAME`] bytes, a letter or digit among them
/// (names are matched regardless of case and of `-`, `_`, `.` and spaces: one of
/// those alone is no name), and no control character or backslash. An empty name was taken,
/// and could then be reached by no route (seen in a probe).
pub(crate) fn name_problem(name: &str) -> Option<String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME {
        "is longer than 200 bytes"
    } else if name.chars().any(char::is_control) {
        "holds a control character"
    } else if name.chars().any(is_bidi_control) {
        // U+202E reverses what follows it on screen: `gnp.exe` shown as `exe.png`.
        "holds a bidirectional control character (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C)"
    } else if !name.chars().any(char::is_alphanumeric) {
        "has no letter or digit"
    } else if name.contains('\\') {
        // The Prometheus exporter reads `\"` and `\\` in a label as escapes made
        // already: `dup"x` and `dup\"x` were one series, and `a\\b` another than
        // the plane's own families gave it (a probe).
        "holds a backslash (metrics labels would mangle it)"
    } else {
        return None;
    };
    let shown: String = name.chars().take(40).collect();
    Some(format!(
        "`{}{}` {problem}; a name needs 1 to {MAX_NAME} bytes, a letter or digit among them, and no control characters or backslashes",
        shown.escape_debug(),
        if shown.len() < name.len() { "…" } else { "" },
    ))
}

/// Whether `c` changes the direction of the text around it when shown.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// A count of a repeated occurrence (a dropped event, a refused message) whose log
/// line is written at the 1st, 2nd, 4th, … one only: each is counted, and a flood
/// does not flood the log too (a warning each once wrote 66 MB and slowed its
/// emitter tenfold).
#[derive(Debug, Default)]
pub struct Sparse(std::sync::atomic::AtomicU64);

impl Sparse {
    /// None so far.
    pub const fn new() -> Self {
        Sparse(std::sync::atomic::AtomicU64::new(0))
    }

    /// Counts one more: `Some(n)` when this, the `n`-th, is one to log.
    pub fn hit(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        n.is_power_of_two().then_some(n)
    }
}
