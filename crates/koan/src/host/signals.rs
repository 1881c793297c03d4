//! What [`HostHandle::run_until_signal`](super::HostHandle::run_until_signal) does
//! for the process: the signals that stop the host, a second one that ends the
//! process at once, and an end to a process that work left past the grace keeps
//! alive.

use std::time::Duration;

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

/// A second signal while the host stops: the operator will not wait for the grace.
/// The process ends now, as it would have without the first being handled (the
/// signals stay taken over: a second SIGTERM or Ctrl-C did nothing, a hung stop
/// could be ended only by SIGKILL; a probe).
pub(super) fn exit_now(code: i32) -> ! {
    tracing::warn!(
        code,
        "a second shutdown signal: exiting now, without waiting for the grace"
    );
    std::process::exit(code)
}

/// How long a process may live on after its host stopped having abandoned work
/// at the grace's end, before it is ended.
pub(super) const LINGER: Duration = Duration::from_secs(5);

/// Ends the process with `code` if it still lives [`LINGER`] from now. Called
/// once the host stopped having abandoned some service's work at the grace's end:
/// an aborted task is gone, but work it handed to a thread of tokio's blocking
/// pool (`spawn_blocking`, as the guide says to run blocking code) is not, and the
/// runtime's drop at the end of `main` waits for it without limit (a probe's host
/// said "host stopped", returned from `main`, and lived on for good).
pub(super) fn end_if_lingering(code: i32) {
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
