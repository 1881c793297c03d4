//! Supervision of background services: restart policy, backoff with jitter and an
//! intensity limit (at most N restarts within T), as in Erlang/OTP.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::HostInner;
use crate::registry::{RunOutcome, ServiceCell, ServiceState};
use crate::service::{RestartPolicy, RunFn, RunReason};
use crate::util::{catch_unwind, fmt_duration};

/// Runs a background service until it is stopped, restarting it per its policy.
pub(crate) async fn supervise(host: Arc<HostInner>, cell: Arc<ServiceCell>, run: RunFn) {
    let opts = &cell.spec.options;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut reason = RunReason::Start;
    loop {
        cell.board.mark_started(ServiceState::Running);
        if reason == RunReason::Start {
            tracing::info!("service started");
        }
        let started = Instant::now();
        let started_wall = cell.spec.clock.now();
        let cx = host.context(&cell, reason);
        let mut running = catch_unwind(run(cx));
        // A restarted service that stays up for the intensity window has recovered:
        // its failures stop counting against its health.
        let result = tokio::select! {
            r = &mut running => r,
            _ = tokio::time::sleep(opts.intensity.within), if reason == RunReason::Restart => {
                cell.board.clear_failures();
                running.await
            }
        };
        let stopping = cell.life.token.is_cancelled();
        let outcome = match result {
            Ok(Ok(())) if stopping => RunOutcome::Cancelled,
            Ok(Ok(())) => RunOutcome::Success,
            Ok(Err(e)) => RunOutcome::failed(crate::util::with_causes(&*e)),
            Err(panic) => RunOutcome::panicked(panic),
        };
        let failed = outcome.is_failure();
        let error_text = outcome.error_text();
        cell.board
            .record_run(reason, started_wall, started.elapsed(), outcome);
        let host_stopping = host.is_stopping();
        if stopping && !host_stopping {
            // Its own code cancelled its token (handed out by `cx.token()`): it is
            // not restarted (its token stays cancelled) and says why. Before, it
            // showed `running` for ever, "failed while stopping" in the log, and a
            // call was refused as if the host were shutting down (found by a probe).
            const WHY: &str = "its own code cancelled its token; not restarted";
            match error_text {
                Some(e) => give_up(&host, &cell, format!("{e} ({WHY})")),
                None => {
                    tracing::info!("service stopped: {WHY}");
                    cell.board.set_state(ServiceState::Stopped);
                }
            }
            return;
        }
        if stopping {
            if let Some(e) = &error_text {
                tracing::warn!(error = %e, "service failed while stopping");
            }
            return;
        }
        let restart = match opts.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !restart {
            match error_text {
                Some(e) => give_up(&host, &cell, format!("{e} (restart policy: never)")),
                None => {
                    tracing::info!("service finished");
                    cell.board.set_state(ServiceState::Stopped);
                }
            }
            return;
        }

        // Intensity: at most `max_restarts` within the sliding window.
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > opts.intensity.within)
        {
            recent.pop_front();
        }
        if recent.len() >= opts.intensity.max_restarts as usize {
            let why = error_text.unwrap_or_else(|| "returned".to_owned());
            give_up(
                &host,
                &cell,
                format!(
                    "{why}; restart intensity exceeded ({} restarts within {})",
                    opts.intensity.max_restarts,
                    fmt_duration(opts.intensity.within)
                ),
            );
            return;
        }
        let delay = opts.backoff.delay(recent.len() as u32);
        recent.push_back(now);
        match &error_text {
            Some(e) => {
                tracing::warn!(error = %e, delay = %fmt_duration(delay), "service failed; restarting")
            }
            None => {
                tracing::info!(delay = %fmt_duration(delay), "service returned; restarting (policy: always)")
            }
        }
        cell.board.set_state(ServiceState::Restarting);
        tokio::select! {
            _ = cell.life.token.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        cell.board.add_restart();
        reason = RunReason::Restart;
    }
}

/// Marks the service failed for good; a critical one stops the host.
pub(crate) fn give_up(host: &HostInner, cell: &ServiceCell, error: String) {
    tracing::error!(error = %error, critical = cell.spec.options.critical, "service failed");
    cell.board.fail(error.clone());
    cell.life.fail();
    if cell.spec.options.critical {
        let _ = host.critical_tx.send((cell.spec.name.to_string(), error));
    }
}
