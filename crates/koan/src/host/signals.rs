//! What [`HostHandle::run_until_signal`](super::HostHandle::run_until_signal) does
//! for the process: the signals that stop the host, a second one that ends the
//! process at once, and an end to a process that work left past the grace keeps
//! alive.

use std::time::Duration;

use super::{HostExit, HostHandle};
use crate::error::Result;

/// The shutdown signals, taken over when made (not when first awaited): SIGINT,
/// SIGTERM or SIGHUP (a closed terminal) each stop the host gracefully (a SIGHUP
/// not handled killed it at once, its calls in flight reset).
pub(super) struct Signals {
    #[cfg(unix)]
    streams: [Option<tokio::signal::unix::Signal>; 3],
}

/// SIGINT, SIGTERM, SIGHUP, with the exit code a process killed by each has.
#[cfg(unix)]
const KINDS: [(tokio::signal::unix::SignalKind, i32); 3] = [
    (tokio::signal::unix::SignalKind::interrupt(), 130),
    (tokio::signal::unix::SignalKind::terminate(), 143),
    (tokio::signal::unix::SignalKind::hangup(), 129),
];

impl Signals {
    pub(super) fn take_over() -> Self {
        Signals {
            #[cfg(unix)]
            streams: KINDS.map(|(kind, _)| tokio::signal::unix::signal(kind).ok()),
        }
    }

    /// The next signal, as the exit code of a process it would have killed.
    #[cfg(unix)]
    pub(super) async fn next(&mut self) -> i32 {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let [int, term, hup] = &mut self.streams;
        tokio::select! {
            () = recv(int) => KINDS[0].1,
            () = recv(term) => KINDS[1].1,
            () = recv(hup) => KINDS[2].1,
        }
    }

    /// Ctrl-C.
    #[cfg(not(unix))]
    pub(super) async fn next(&mut self) -> i32 {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        130
    }
}

/// What `HostHandle::run_until_signal` does: waits for a signal (or the host's
/// own stop), stops the host, and waits for it, a second signal ending the
/// process; then arms the end of a lingering process.
///
/// A host that stops because a startup or critical service failed keeps that
/// failure's exit code through every signal: one while it stops is absorbed by
/// the stop in progress, and one that ends the process (a second, or one after
/// the host stopped) ends it with the failure's code, not 128 + the signal's
/// number (the process exited 143, the operator losing the fact that a critical
/// service had failed; a probe).
pub(super) async fn run_until_signal(host: &HostHandle, mut signals: Signals) -> Result<()> {
    tokio::select! {
        exit = host.wait() => return ended(host, exit, signals),
        _ = signals.next() => match host.inner.failure.get() {
            Some(failure) => tracing::warn!(
                code = failure.exit_code(),
                "a shutdown signal while the host stops because {}: the stop goes on, and the process keeps the failure's exit code",
                what_failed(failure)
            ),
            None => tracing::info!("shutdown signal received"),
        },
    }
    let first = std::time::Instant::now();
    host.shutdown();
    let exit = loop {
        tokio::select! {
            exit = host.wait() => break exit,
            code = signals.next() => {
                if first.elapsed() >= SECOND_AFTER {
                    exit_now(host.inner.failure.get().map_or(code, HostExit::exit_code));
                }
                // A wrapper forwarding the signal its process group also got
                // (a shell's trap, `tini -g`, systemd's SIGTERM then SIGHUP)
                // sends two at once: one stop asked for, not two (a review).
                tracing::debug!("a second shutdown signal within a second of the first: taken as the same");
            }
        }
    };
    ended(host, exit, signals)
}

/// What made the host stop with a failure, in words: "critical service `x`
/// failed: …".
fn what_failed(failure: &HostExit) -> String {
    match failure.clone().into_result() {
        Err(e) => e.message().to_owned(),
        Ok(()) => "it was asked to".to_owned(),
    }
}

/// How long after the first a signal must come to end the process at once.
const SECOND_AFTER: Duration = Duration::from_secs(1);

/// `exit` as `run_until_signal` returns it. With work abandoned at the grace's
/// end, the process is ended should it linger once its runtime shuts down: timed
/// from there (a task's drop, as the runtime drops its tasks), not from this
/// return, so that `main`'s own work after it (waiting for the HTTP plane,
/// flushing telemetry) is not cut short (a review).
///
/// The signals stay taken over (tokio never gives them back): a further one
/// ends the process at once, where it was swallowed for the rest of `main` (a
/// hung cleanup could be ended only by SIGKILL; a re-probe).
fn ended(host: &HostHandle, exit: HostExit, mut signals: Signals) -> Result<()> {
    let failure = (!exit.is_success()).then(|| exit.clone());
    tokio::spawn(async move {
        let code = signals.next().await;
        match failure {
            Some(failure) => {
                let code = failure.exit_code();
                tracing::warn!(
                    code,
                    "a shutdown signal after the host stopped because {}: exiting now, with the failure's exit code",
                    what_failed(&failure)
                );
                std::process::exit(code)
            }
            None => {
                tracing::warn!(
                    code,
                    "a shutdown signal after the host stopped: exiting now"
                );
                std::process::exit(code)
            }
        }
    });
    if host.inner.registry.all().iter().any(|c| c.life.aborted()) {
        struct AtRuntimeEnd(i32);
        impl Drop for AtRuntimeEnd {
            fn drop(&mut self) {
                end_if_lingering(self.0);
            }
        }
        let armed = AtRuntimeEnd(exit.exit_code());
        tokio::spawn(async move {
            let _armed = armed;
            std::future::pending::<()>().await;
        });
    }
    exit.into_result()
}

/// A second signal while the host stops: the operator will not wait for the grace.
/// The process ends now, as it would have without the first being handled (the
/// signals stay taken over: a second SIGTERM or Ctrl-C did nothing, a hung stop
/// could be ended only by SIGKILL; a probe), with `code`: the signal's, or the
/// failure's that the host stops for.
pub(super) fn exit_now(code: i32) -> ! {
    tracing::warn!(
        code,
        "a second shutdown signal: exiting now, without waiting for the grace"
    );
    std::process::exit(code)
}

/// How long a process may live on after its host stopped having abandoned work
/// at the grace's end, before it is ended.
const LINGER: Duration = Duration::from_secs(5);

/// Ends the process with `code` if it still lives [`LINGER`] from now. Called
/// as the runtime shuts down, the host having abandoned some service's work at
/// the grace's end:
/// an aborted task is gone, but work it handed to a thread of tokio's blocking
/// pool (`spawn_blocking`, as the guide says to run blocking code) is not, and the
/// runtime's drop at the end of `main` waits for it without limit (a probe's host
/// said "host stopped", returned from `main`, and lived on for good).
fn end_if_lingering(code: i32) {
    let watchdog = std::thread::Builder::new()
        .name("koan-exit".into())
        .spawn(move || {
            std::thread::sleep(LINGER);
            tracing::error!(
                code,
                linger = ?LINGER,
                "the process did not end after its host stopped: work abandoned at the grace's end (a blocking task?) keeps it alive; exiting"
            );
            std::process::exit(code)
        });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "could not start the thread that ends a lingering process");
    }
}
