//! Pokes of cluster singletons. A singleton's runs happen on the holder of its lease,
//! poked ones as much as scheduled ones: a `trigger` made on another host, or sent
//! to one by another process, would otherwise run beside the holder's tick, which
//! is what the lease is there to prevent.
//!
//! The transport says whether this host holds the lease ([`Transport::may_poke`],
//! renewed with a compare-and-set as a tick's is). When it does not, a poke made
//! here is sent through the transport, which takes it to the holder; one that came
//! from another process is refused, not sent on, so that a poke never travels in a
//! circle while the lease moves.

use std::sync::Arc;

use super::correlation::Correlation;
use super::execute::{StepFut, remote, start_job, waited};
use super::route::{Prepared, poke_cell, prepare, wait_poke};
use super::step::Step;
use crate::error::{Error, ErrorKind};
use crate::host::HostInner;
use crate::registry::ServiceCell;
use crate::transport::Transport;

/// A built-in poke of the singleton `cell`: run here when this host holds its lease,
/// sent to the holder through `transport` otherwise, or refused when it was
/// `served` for another process; a `stored` job's run is awaited to its end.
pub(super) fn poke(
    host: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    transport: &Arc<dyn Transport>,
    step: Step,
    correlation: &Correlation,
    (served, stored): (bool, bool),
) -> StepFut {
    let (host, cell, transport) = (Arc::clone(host), Arc::clone(cell), Arc::clone(transport));
    let correlation = correlation.clone();
    StepFut::Boxed(Box::pin(async move {
        let name = &cell.spec.name;
        if transport.may_poke(name).await {
            return match prepare(&host, &cell, step, &correlation, None)? {
                Prepared::Builtin(poke, timeout) => {
                    let (receipt, action) = poke_cell(&cell, poke, timeout)?;
                    wait_poke(receipt, name, action, waited(timeout, stored)).await
                }
                // Not a built-in after all (`singleton_poke` said it was): run as
                // any action would be.
                Prepared::Job(job) => start_job(&host, &cell, job).await,
            };
        }
        if served {
            return Err(Error::new(
                ErrorKind::ServiceUnavailable,
                format!(
                    "`{name}` is a cluster singleton and this instance does not hold its lease: its runs, poked ones too, happen on the holder. None holds it right now, or it moved a moment ago; nothing ran — try again within a lease period"
                ),
            ));
        }
        remote(&transport, Arc::clone(name), step, &correlation).await
    }))
}
