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
#[derive(Debug)]
pub(crate) struct Route {
    /// The instance's host id.
    pub(crate) host: Arc<str>,
    /// Its heartbeat's time, ms since the epoch.
    at: i64,
    /// The service's running and queued actions there, as last announced.
    pub(crate) load: usize,
    /// The actions it announced for the service (`None`: an older host, which
    /// announces none).
    pub(crate) actions: Option<Arc<[String]>>,
}

impl Route {
    /// Whether the instance may serve `action`: it announced it, or announces no
    /// actions. In a rolling deploy, an instance of the older build answered
    /// `unknown_action` to calls of an action only the newer one has (found by a
    /// probe).
    pub(crate) fn may_serve(&self, action: &str) -> bool {
        self.actions
            .as_ref()
            .is_none_or(|a| a.iter().any(|n| koan::action::same_action_name(n, action)))
    }
}

/// The instances of each service that take new calls, by the bytes of the
/// service's name in lower case (names are matched as the rest of koan matches
/// them: ASCII case ignored). Bytes, so that a look-up checks no UTF-8; hashed
/// with `rustc-hash` (the standard SipHash was 150 instructions a call of B8's
/// round trip for a four-letter name, by callgrind; the names are the cluster's
/// own services').
#[derive(Debug, Default)]
pub(crate) struct Routes(FxHashMap<Box<[u8]>, Vec<Route>>);

/// Whether a service as announced takes new calls: enabled, started (not
/// `pending`: its host's startup services still run, and its calls wait for them;
/// a new instance's load of 0 drew every call to it, found by a review), and
/// neither failed nor stopping (its host shutting down) nor stopped.
fn serving(s: &ServiceStatus) -> bool {
    s.enabled
        && !matches!(
            s.state,
            ServiceState::Pending
                | ServiceState::Failed
                | ServiceState::Disabled
                | ServiceState::Stopping
                | ServiceState::Stopped
        )
}

/// `name`'s bytes in lower case: in `buf` when they fit (a service's name is
/// short), in `long` otherwise.
fn lowered<'b>(name: &str, buf: &'b mut [u8; 64], long: &'b mut Vec<u8>) -> &'b [u8] {
    match buf.get_mut(..name.len()) {
        Some(b) => {
            b.copy_from_slice(name.as_bytes());
            b.make_ascii_lowercase();
            b
        }
        None => {
            *long = name.as_bytes().to_ascii_lowercase();
            long
        }
    }
}

impl Routes {
    /// Adds the routes of `i`, heard at `at` (ms since the epoch): one for each
    /// service it announces that takes new calls. A service's key is allocated
    /// when it is first listed, not once per instance.
    pub(crate) fn add(&mut self, at: i64, i: &Instance) {
        let (mut buf, mut long) = ([0u8; 64], Vec::new());
        let mut host: Option<Arc<str>> = None;
        for s in i.services.iter().filter(|s| serving(s)) {
            let route = Route {
                host: Arc::clone(host.get_or_insert_with(|| Arc::from(i.host_id.as_str()))),
                at,
                load: s.in_flight + s.queue_depth,
                actions: i.actions.get(&s.name).map(|a| Arc::from(a.as_slice())),
            };
            let key = lowered(&s.name, &mut buf, &mut long);
            match self.0.get_mut(key) {
                Some(routes) => routes.push(route),
                None => {
                    self.0.insert(key.into(), vec![route]);
                }
            }
        }
    }

    /// Takes out what [`add`](Routes::add) put in for `i`: its host's routes to
    /// the services it announces. An announcement replaces the one before it by
    /// these two, so that each costs its own services' entries, not the whole
    /// cluster's (made again whole, a cluster of 1,000 instances of 20 services
    /// would be 20,000 entries at each of its 500 announcements a second).
    pub(crate) fn remove(&mut self, i: &Instance) {
        let (mut buf, mut long) = ([0u8; 64], Vec::new());
        for s in &i.services {
            let key = lowered(&s.name, &mut buf, &mut long);
            if let Some(routes) = self.0.get_mut(key) {
                routes.retain(|r| *r.host != *i.host_id);
                if routes.is_empty() {
                    self.0.remove(key);
                }
            }
        }
    }

    /// How many routes are listed, all services together.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Calls `f` with each instance of `service` that takes new calls and was
    /// heard at or after `oldest` (ms since the epoch).
    pub(crate) fn each(&self, service: &str, oldest: i64, f: impl FnMut(&Route)) {
        let (mut buf, mut long) = ([0u8; 64], Vec::new());
        if let Some(routes) = self.0.get(lowered(service, &mut buf, &mut long)) {
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
        // Its host's startup services still run.
        let p = Instance::new("p", vec![status("Calc", ServiceState::Pending, (0, 0))]);
        let mut routes = Routes::default();
        routes.add(10, &a);
        for i in [&b, &c, &d, &e, &p] {
            routes.add(20, i);
        }
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
        routes.add(0, &f);
        assert_eq!(
            seen(&routes, &long.to_lowercase(), 0),
            vec![("f".to_owned(), 0)]
        );
        // Taken out, each leaves the others' routes as they were.
        routes.remove(&a);
        assert_eq!(seen(&routes, "calc", 0), vec![("b".to_owned(), 1)]);
        assert!(seen(&routes, "other", 0).is_empty());
        routes.remove(&f);
        assert!(seen(&routes, &long, 0).is_empty());
        for i in [&b, &c, &d, &e, &p] {
            routes.remove(i);
        }
        assert!(routes.0.is_empty(), "no key left without routes");
    }
}
