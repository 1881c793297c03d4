//! Which instances run a service, as a call's routing reads them: derived from
//! the registry view ([`crate::view`]) each time an instance's announcement
//! changes, kept by service, so that choosing where a call goes reads only the
//! instances of the call's service and only what the choice needs.
//!
//! Read through every instance's whole status instead, a call compared its
//! service's name with every service of every instance (a cluster of 20
//! instances of 10 services each: 200 case-insensitive comparisons a call, and
//! as many statuses' cache lines touched), where an announcement changes once a
//! heartbeat per instance.

use std::sync::Arc;

use koan::status::{ServiceState, ServiceStatus};
use koan::transport::Instance;
use rustc_hash::FxHashMap;

/// An instance of a service that takes new calls.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The instance's host id.
    pub(crate) host: Arc<str>,
    /// Its heartbeat's time, ms since the epoch.
    at: i64,
    /// The service's running and queued actions there, as last announced.
    pub(crate) load: usize,
}

/// The instances of each service that take new calls, by the bytes of the
/// service's name in lower case (names are matched as the rest of koan matches
/// them: ASCII case ignored). Bytes, so that a look-up checks no UTF-8; hashed
/// with `rustc-hash` (the standard SipHash was 150 instructions a call of B8's
/// round trip for a four-letter name, by callgrind; the names are the cluster's
/// own services').
#[derive(Debug, Default)]
pub(crate) struct Routes(FxHashMap<Box<[u8]>, Vec<Route>>);

/// Whether a service as announced takes new calls: enabled, and neither failed
/// nor stopping (its host shutting down) nor stopped.
pub(crate) fn serving(s: &ServiceStatus) -> bool {
    s.enabled
        && !matches!(
            s.state,
            ServiceState::Failed
                | ServiceState::Disabled
                | ServiceState::Stopping
                | ServiceState::Stopped
        )
}

impl Routes {
    /// The routes of `instances` (each with its heartbeat's time).
    pub(crate) fn of<'a>(instances: impl Iterator<Item = (i64, &'a Instance)>) -> Routes {
        let mut by_service: FxHashMap<Box<[u8]>, Vec<Route>> = FxHashMap::default();
        for (at, i) in instances {
            let mut host: Option<Arc<str>> = None;
            for s in i.services.iter().filter(|s| serving(s)) {
                let host = host.get_or_insert_with(|| Arc::from(i.host_id.as_str()));
                by_service
                    .entry(s.name.as_bytes().to_ascii_lowercase().into_boxed_slice())
                    .or_default()
                    .push(Route {
                        host: Arc::clone(host),
                        at,
                        load: s.in_flight + s.queue_depth,
                    });
            }
        }
        Routes(by_service)
    }

    /// Calls `f` with each instance of `service` that takes new calls and was
    /// heard at or after `oldest` (ms since the epoch).
    pub(crate) fn each(&self, service: &str, oldest: i64, f: impl FnMut(&Route)) {
        // The name in lower case without an allocation (a service's name is short).
        let mut buf = [0u8; 64];
        let long;
        let key: &[u8] = match buf.get_mut(..service.len()) {
            Some(b) => {
                b.copy_from_slice(service.as_bytes());
                b.make_ascii_lowercase();
                b
            }
            None => {
                long = service.as_bytes().to_ascii_lowercase();
                &long
            }
        };
        if let Some(routes) = self.0.get(key) {
            routes.iter().filter(|r| r.at >= oldest).for_each(f);
        }
    }
}

/// A status of `name` in `state`, with its running and queued actions (tests).
#[cfg(test)]
pub(crate) fn status(name: &str, state: ServiceState, load: (usize, usize)) -> ServiceStatus {
    let mut s: ServiceStatus = serde_json::from_value(serde_json::json!({
        "name": name, "kind": "background", "state": "running", "enabled": true,
        "critical": false, "started_at": null, "last_run": null, "next_run": null,
        "runs": 0, "failures": 0, "consecutive_failures": 0, "restarts": 0,
        "queue_depth": 0, "in_flight": 0, "last_error": null
    }))
    .unwrap_or_else(|e| panic!("a status: {e}"));
    s.state = state;
    (s.in_flight, s.queue_depth) = load;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(routes: &Routes, service: &str, oldest: i64) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        routes.each(service, oldest, |r| v.push((r.host.to_string(), r.load)));
        v.sort();
        v
    }

    #[test]
    fn a_service_is_found_in_any_case_with_its_serving_instances_and_their_load() {
        let a = Instance::new(
            "a",
            vec![
                status("Calc", ServiceState::Running, (2, 3)),
                status("Other", ServiceState::Running, (0, 0)),
            ],
        );
        let b = Instance::new("b", vec![status("calc", ServiceState::Idle, (0, 1))]);
        let c = Instance::new("c", vec![status("Calc", ServiceState::Stopping, (0, 0))]);
        let mut d = Instance::new("d", vec![status("Calc", ServiceState::Running, (0, 0))]);
        d.services[0].enabled = false;
        let e = Instance::new("e", vec![status("Calc", ServiceState::Failed, (0, 0))]);
        let routes = Routes::of([(10, &a), (20, &b), (20, &c), (20, &d), (20, &e)].into_iter());
        let both = vec![("a".to_owned(), 5), ("b".to_owned(), 1)];
        assert_eq!(seen(&routes, "Calc", 0), both);
        assert_eq!(seen(&routes, "CALC", 0), both);
        // Heard too long ago: left out.
        assert_eq!(seen(&routes, "calc", 11), vec![("b".to_owned(), 1)]);
        assert_eq!(seen(&routes, "other", 0), vec![("a".to_owned(), 0)]);
        assert!(seen(&routes, "Nope", 0).is_empty());
        // A name longer than the lookup's buffer is found too.
        let long = "L".repeat(100);
        let f = Instance::new("f", vec![status(&long, ServiceState::Running, (0, 0))]);
        let routes = Routes::of([(0, &f)].into_iter());
        assert_eq!(
            seen(&routes, &long.to_lowercase(), 0),
            vec![("f".to_owned(), 0)]
        );
    }
}
