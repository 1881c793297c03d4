//! The hosts that `koan::services::<T>()` reaches: those started in this
//! process, and the rule that picks one of them for a service type.

use std::any::TypeId;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{HostHandle, HostInner};
use crate::error::{Error, ErrorKind, Result};

/// The hosts started in this process that something still holds, in the order
/// they started.
static STARTED: Mutex<Vec<Weak<HostInner>>> = Mutex::new(Vec::new());

/// Notes that `inner` started.
pub(super) fn started(inner: &Arc<HostInner>) {
    let mut hosts = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    hosts.retain(|h| h.strong_count() > 0);
    hosts.push(Arc::downgrade(inner));
}

/// The host that `koan::services::<T>()` reaches for the service of type `id`
/// (named `name`), by this rule:
///
/// - among the hosts that run (started, not yet stopped), the one that has the
///   service; a host that has it is never passed over for one that does not
///   (the accessor reached the host started last, whatever it held: a call for
///   the first host's service went to the second; a probe);
/// - the one host that runs, when it does not have the service (it may reach
///   it in another process, through its transport, or says that it has none);
/// - refused when that does not name one host: several running hosts have the
///   service, or several run and none has it (`host.services::<T>()` names the
///   host);
/// - when none runs, the host started last that is still held (its calls
///   answer that it stopped); refused when there is none.
pub(crate) fn host_for(id: TypeId, name: &str) -> Result<HostHandle> {
    let hosts: Vec<HostHandle> = {
        let mut held = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|h| h.strong_count() > 0);
        held.iter()
            .filter_map(Weak::upgrade)
            .map(HostHandle::from_inner)
            .collect()
    };
    let running: Vec<&HostHandle> = hosts.iter().filter(|h| h.exit().is_none()).collect();
    if running.is_empty() {
        return hosts.last().cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::ServiceUnavailable,
                "no koan host is running in this process; start one with `Host::builder()…build()?.start()`",
            )
        });
    }
    let having: Vec<&HostHandle> = running
        .iter()
        .copied()
        .filter(|h| h.inner.registry.by_type_at(id).is_some())
        .collect();
    let why = match (having.as_slice(), running.as_slice()) {
        ([one], _) | ([], [one]) => return Ok(HostHandle::clone(one)),
        ([], several) => format!(
            "none of the {} running koan hosts in this process has service `{name}`, and which should reach it cannot be told",
            several.len()
        ),
        (several, _) => format!(
            "{} running koan hosts in this process have service `{name}`, and which is meant cannot be told",
            several.len()
        ),
    };
    Err(Error::new(
        ErrorKind::ServiceUnavailable,
        format!(
            "{why}: `koan::services::<T>()` reaches a service only when one host is meant; call `host.services::<T>()` on the handle of the host you mean"
        ),
    ))
}
