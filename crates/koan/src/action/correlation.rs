//! Correlation ids and action ids: unique across processes with high probability
//! (a random per-process prefix and a counter). A generated correlation id is kept
//! as its number and formatted only when something reads it: most calls never do.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The longest correlation id a caller from outside may give (HTTP's
/// `X-Correlation-Id`, NATS's `Koan-Correlation-Id`): it travels with every event,
/// job record and log line of the call.
pub const MAX_CORRELATION_ID: usize = 200;

/// The one rule for a correlation id given from outside the process: 1 to
/// [`MAX_CORRELATION_ID`] printable ASCII characters (no tabs or other controls).
/// `Err` says what is wrong, for a message that names where it came from.
pub fn check_correlation_id(id: &str) -> Result<(), &'static str> {
    if !id.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("must be printable ASCII (no tabs or control characters)");
    }
    if id.is_empty() || id.len() > MAX_CORRELATION_ID {
        return Err("must have 1 to 200 characters");
    }
    Ok(())
}

/// The next block of ids not handed to any thread yet.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

/// How many ids a thread takes from [`NEXT_BLOCK`] at a time: the shared counter
/// (a line every core would write on every call) is touched once per block.
const BLOCK: u64 = 1024;

thread_local! {
    /// This thread's block: the next id to hand out, and the end of its block.
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next id number: unique across the process (each block is taken whole by one
/// thread), increasing on each thread, not across threads.
fn next_number() -> u64 {
    IDS.try_with(|ids| {
        let (mut next, mut end) = ids.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = next + BLOCK;
        }
        ids.set((next + 1, end));
        next
    })
    // A thread whose locals are being destroyed takes a block of one.
    .unwrap_or_else(|_| NEXT_BLOCK.fetch_add(1, Ordering::Relaxed))
}

fn process_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("{:08x}", fastrand::u32(..)))
}

/// A fresh id, unique across processes with high probability: the process's random
/// prefix and a counter, formatted on the stack so the id costs one allocation.
/// A new correlation id, as a call given none is given: for a caller that must
/// know a call's id before its answer (the HTTP plane names it on an error too).
pub fn new_correlation_id() -> String {
    String::from(IdText::of(next_number()).as_str())
}

pub(crate) fn new_id() -> Arc<str> {
    format_id(next_number())
}

/// The id numbered `n`: the process's prefix, a dash, the number.
fn format_id(n: u64) -> Arc<str> {
    Arc::from(IdText::of(n).as_str())
}

/// An id's text, written on the stack (no formatter: `write!` on a call's way out
/// to another process cost about 760 instructions, B8's profile).
struct IdText {
    buf: [u8; 32],
    len: usize,
}

impl IdText {
    fn of(n: u64) -> Self {
        let prefix = process_prefix().as_bytes();
        let mut buf = [0u8; 32];
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()] = b'-';
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let start = prefix.len() + 1;
        let len = start + digits.len() - i;
        buf[start..len].copy_from_slice(&digits[i..]);
        IdText { buf, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("id")
    }
}

/// A correlation id: given by the caller, or generated (and then formatted only
/// when read).
#[derive(Debug, Clone)]
pub(crate) enum Correlation {
    Given(Arc<str>),
    Generated(u64),
}

impl Correlation {
    /// A fresh generated id.
    pub(crate) fn generate() -> Self {
        Correlation::Generated(next_number())
    }

    /// The id given, else that of the action whose handler makes the call (see
    /// [`current`](super::context::current)), else a fresh one.
    #[inline]
    pub(crate) fn given_or_current(given: Option<Arc<str>>) -> Self {
        given.map_or_else(
            || super::context::current().unwrap_or_else(Correlation::generate),
            Correlation::Given,
        )
    }

    /// The id as an owned string (formatted now when generated).
    pub(crate) fn to_text(&self) -> String {
        match self {
            Correlation::Given(id) => String::from(&**id),
            Correlation::Generated(n) => String::from(IdText::of(*n).as_str()),
        }
    }

    /// The id as text (formatted now when generated).
    pub(crate) fn to_arc(&self) -> Arc<str> {
        match self {
            Correlation::Given(id) => Arc::clone(id),
            Correlation::Generated(n) => format_id(*n),
        }
    }
}

impl Correlation {
    /// The id as a log line's field: as it is when it is one token, quoted and
    /// escaped otherwise, so that an id cannot write fields of its own
    /// (`x ran_ms=0 service=PaymentService` read as three fields in logfmt; found
    /// by a probe).
    pub(crate) fn logged(&self) -> Logged<'_> {
        Logged(self)
    }
}

/// [`Correlation::logged`].
pub(crate) struct Logged<'a>(&'a Correlation);

impl std::fmt::Display for Logged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Correlation::Given(id)
                if !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+#".contains(&b)) =>
            {
                write!(f, "{id:?}")
            }
            other => std::fmt::Display::fmt(other, f),
        }
    }
}

impl std::fmt::Display for Correlation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Correlation::Given(id) => f.write_str(id),
            Correlation::Generated(n) => f.write_str(IdText::of(*n).as_str()),
        }
    }
}

/// A correlation id that can lend its text: formatted once, on first read.
#[derive(Debug, Clone)]
pub(crate) struct CorrelationText {
    id: Correlation,
    text: OnceLock<Arc<str>>,
}

impl CorrelationText {
    pub(crate) fn new(id: Correlation) -> Self {
        CorrelationText {
            id,
            text: OnceLock::new(),
        }
    }

    pub(crate) fn as_arc(&self) -> &Arc<str> {
        match &self.id {
            Correlation::Given(id) => id,
            Correlation::Generated(_) => self.text.get_or_init(|| self.id.to_arc()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        self.as_arc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_in_a_log_line_writes_no_field_of_its_own() {
        let given = |id: &str| Correlation::Given(Arc::from(id)).logged().to_string();
        assert_eq!(given("order-7/a:b@c"), "order-7/a:b@c");
        assert_eq!(
            given("x ran_ms=0 service=PaymentService"),
            r#""x ran_ms=0 service=PaymentService""#
        );
        assert_eq!(given(r#"a"b"#), r#""a\"b""#);
        let generated = Correlation::Generated(7);
        assert_eq!(generated.logged().to_string(), generated.to_string());
    }

    #[test]
    fn a_generated_id_reads_the_same_everywhere() {
        let c = Correlation::generate();
        let text = CorrelationText::new(c.clone());
        assert_eq!(c.to_string(), *c.to_arc());
        assert_eq!(c.to_text(), *c.to_arc());
        assert_eq!(text.as_str(), &*c.to_arc());
        let given = Correlation::Given(Arc::from("order-7"));
        assert_eq!(
            (given.to_text(), given.to_string()),
            ("order-7".into(), "order-7".into())
        );
        let (prefix, n) = text.as_str().split_once('-').expect("prefix-number");
        assert_eq!(prefix.len(), 8);
        assert!(n.parse::<u64>().is_ok());
        assert_ne!(Correlation::generate().to_arc(), c.to_arc(), "ids differ");
    }

    #[test]
    fn ids_taken_by_blocks_on_many_threads_are_unique() {
        // Enough ids per thread to cross several blocks.
        let per_thread = 3 * BLOCK as usize + 7;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut ids: Vec<String> = (0..per_thread)
                        .map(|i| {
                            if i % 2 == 0 {
                                Correlation::generate().to_string()
                            } else {
                                new_id().to_string()
                            }
                        })
                        .collect();
                    ids.push(Correlation::generate().to_string());
                    ids
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().expect("the thread returns its ids") {
                let (prefix, n) = id.split_once('-').expect("prefix-number");
                assert_eq!(prefix, process_prefix(), "the printed form is unchanged");
                assert!(n.parse::<u64>().is_ok_and(|n| n > 0), "a number: {id}");
                assert!(all.insert(id.clone()), "id {id} handed out twice");
            }
        }
        assert_eq!(all.len(), 4 * (per_thread + 1));
    }

    #[test]
    fn a_given_id_is_kept_as_given() {
        let c = Correlation::given_or_current(Some(Arc::from("order-42")));
        assert_eq!(CorrelationText::new(c).as_str(), "order-42");
    }
}
