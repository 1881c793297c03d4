//! A run's heartbeat: the host's runner renews a running job's claim every third
//! of the lease, and tells the run when the claim is lost (it lapsed while the
//! process stalled, or the job was cancelled) or the host stops.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::store::{Claim, lease_from};
use crate::host::HostInner;

/// Renews `claim` every third of the lease; cancels `fence` and the run's `token`
/// once it is lost.
pub(super) async fn renew(
    host: Arc<HostInner>,
    claim: Claim,
    fence: CancellationToken,
    token: CancellationToken,
) {
    let every = host.jobs.settings.lease / 3;
    let mut told = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // The host stops: the handler is told to stop, once; its claim is
            // renewed while it winds down.
            _ = host.jobs.halt.cancelled(), if !told => {
                token.cancel();
                told = true;
                continue;
            }
        }
        let until = lease_from(host.config.clock.now(), host.jobs.settings.lease);
        match host.jobs.store.heartbeat(&claim, until).await {
            Ok(true) => {}
            Ok(false) => {
                fence.cancel();
                token.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(job = %claim.id, error = %e, "could not renew the job's claim");
            }
        }
    }
}
