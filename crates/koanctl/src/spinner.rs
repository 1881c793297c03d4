//! A spinner with the elapsed seconds, on stderr, only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// A running spinner; cleared when stopped or dropped.
#[derive(Debug)]
pub(crate) struct Spinner {
    task: Option<JoinHandle<()>>,
    drawn: Arc<AtomicBool>,
}

impl Spinner {
    /// Starts a spinner showing `label`, or nothing when stderr is not a terminal.
    /// Answers quicker than 200 ms show no spinner at all.
    pub(crate) fn start(label: String) -> Spinner {
        let drawn = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Spinner { task: None, drawn };
        }
        let flag = Arc::clone(&drawn);
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let started = Instant::now();
            let first = tokio::time::Instant::now() + Duration::from_millis(200);
            let mut tick = tokio::time::interval_at(first, Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                tick.tick().await;
                let secs = started.elapsed().as_secs();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{frame} {label} {secs}s");
                let _ = err.flush();
                flag.store(true, Ordering::Relaxed);
            }
        });
        Spinner {
            task: Some(task),
            drawn,
        }
    }

    /// Stops the spinner and clears its line.
    pub(crate) fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if self.drawn.load(Ordering::Relaxed) {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}
