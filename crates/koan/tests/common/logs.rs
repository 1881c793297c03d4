//! Log lines captured per test: a subscriber installed on the test's thread (a
//! current-thread runtime, so the host's tasks log there too).

use std::sync::{Arc, Mutex};

/// Log lines written while it is installed on this thread.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Asserts that `count` lines hold `needle`, the first of them also `also`.
    pub(crate) fn assert_lines(&self, needle: &str, count: usize, also: &str) {
        let lines = self.lines_with(needle);
        assert_eq!(lines.len(), count, "lines with {needle:?}: {lines:?}");
        assert!(lines[0].contains(also), "{}", lines[0]);
    }

    pub(crate) fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}
