//! What the cluster's instances announced of each service besides its status: its
//! action names and its event names, each the union of every announcement since
//! this host joined (a rolling deploy adds a name on one host first). A job for
//! an action none announced is refused at its enqueue, and an event none declared
//! is not delivered here. An instance that announces no names (a host older than
//! the fields), or more or longer names than any service declares (a forged
//! entry), makes them unknown — nothing is refused for them — for as long as it
//! goes on announcing and a while after (`until`), not for good: one forged entry
//! that lived ten seconds turned the checks off on every host for its life (found
//! by a probe).

use std::collections::{BTreeMap, BTreeSet};

/// The most action (or event) names kept for one service, and the longest name
/// in bytes: past either, its names are not known (nothing is refused for them),
/// so that forged announcements cannot grow a host without bound.
const MAX_NAMES: usize = 4096;
const MAX_NAME: usize = 256;

/// One kind of names (actions, or events in lower case) announced for a service,
/// and until when (ms since the epoch) they are not known.
#[derive(Debug, Clone, Default)]
struct Names {
    names: BTreeSet<String>,
    unknown_until: i64,
    /// The `until` of the latest announcement: how long names grown past the
    /// bound stay unknown.
    horizon: i64,
}

impl Names {
    /// The names of one announcement (`None`: it gave none), unknown until
    /// `until` when it gave none or too many.
    fn of(given: Option<&Vec<String>>, lower: bool, until: i64) -> Names {
        let Some(given) =
            given.filter(|g| g.len() <= MAX_NAMES && g.iter().all(|n| n.len() <= MAX_NAME))
        else {
            return Names {
                names: BTreeSet::new(),
                unknown_until: until,
                horizon: until,
            };
        };
        let names = given
            .iter()
            .map(|n| {
                if lower {
                    n.to_ascii_lowercase()
                } else {
                    n.clone()
                }
            })
            .collect();
        Names {
            names,
            unknown_until: i64::MIN,
            horizon: until,
        }
    }

    fn merge(&mut self, other: Names) {
        self.unknown_until = self.unknown_until.max(other.unknown_until);
        self.horizon = self.horizon.max(other.horizon);
        self.names.extend(other.names);
        if self.names.len() > MAX_NAMES {
            // Kept within the bound: unknown for as long as the latest says.
            self.names.clear();
            self.unknown_until = self.horizon;
        }
    }

    /// The names, `None` while they are not known (at `now`, ms).
    fn known(&self, now: i64) -> Option<&BTreeSet<String>> {
        (now >= self.unknown_until).then_some(&self.names)
    }
}

/// The names announced for one service.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    actions: Names,
    /// Lower case: events are matched regardless of case.
    events: Names,
}

impl Announced {
    /// The names of an announcement of the service `service` (as the instance
    /// spells it), from its instance's maps; those it gives none of (or too many)
    /// are unknown until `until` (ms since the epoch).
    pub(crate) fn of(
        service: &str,
        actions: &BTreeMap<String, Vec<String>>,
        events: &BTreeMap<String, Vec<String>>,
        until: i64,
    ) -> Announced {
        Announced {
            actions: Names::of(actions.get(service), false, until),
            events: Names::of(events.get(service), true, until),
        }
    }

    /// Adds another instance's announcement of the same service.
    pub(crate) fn merge(&mut self, other: Announced) {
        self.actions.merge(other.actions);
        self.events.merge(other.events);
    }

    /// Every action name announced, `None` when not known (at `now`, ms).
    pub(crate) fn actions(&self, now: i64) -> Option<Vec<String>> {
        self.actions.known(now).map(|a| a.iter().cloned().collect())
    }

    /// Whether event `name` was announced (`None` when the events are not known
    /// at `now`, ms).
    pub(crate) fn declares_event(&self, name: &str, now: i64) -> Option<bool> {
        let events = self.events.known(now)?;
        Some(if name.bytes().any(|b| b.is_ascii_uppercase()) {
            events.contains(&name.to_ascii_lowercase())
        } else {
            events.contains(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Announced;

    fn names(service: &str, list: &[&str]) -> BTreeMap<String, Vec<String>> {
        [(
            service.to_owned(),
            list.iter().map(|s| (*s).to_owned()).collect(),
        )]
        .into()
    }

    /// Unknown until 1,000 ms; the tests read at 0 (within) and 2,000 (after).
    const UNTIL: i64 = 1_000;

    #[test]
    fn too_many_or_too_long_names_are_unknown_for_a_while() {
        let long = "a".repeat(super::MAX_NAME + 1);
        let a = Announced::of("S", &names("S", &[&long]), &names("S", &[]), UNTIL);
        assert_eq!(a.actions(0), None);
        assert_eq!(
            a.actions(2_000),
            Some(vec![]),
            "known again once it is past"
        );
        let many: Vec<String> = (0..=super::MAX_NAMES).map(|n| n.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let a = Announced::of("S", &names("S", &many), &names("S", &[]), UNTIL);
        assert_eq!(a.actions(0), None);
        // Grown past it by merges: not known either, for a while.
        let mut a = Announced::of("S", &names("S", &many[1..]), &names("S", &[]), UNTIL);
        assert!(a.actions(0).is_some());
        a.merge(Announced::of(
            "S",
            &names("S", &["x"]),
            &names("S", &[]),
            UNTIL,
        ));
        assert_eq!(a.actions(0), None);
    }

    #[test]
    fn announcements_add_up_and_one_without_names_makes_them_unknown_while_it_lasts() {
        let calc = |actions: &[&str], events: &[&str]| {
            Announced::of(
                "Calc",
                &names("Calc", actions),
                &names("Calc", events),
                UNTIL,
            )
        };
        let mut a = calc(&["add"], &["Added"]);
        a.merge(calc(&["sub"], &[]));
        assert_eq!(a.actions(0), Some(vec!["add".to_owned(), "sub".to_owned()]));
        assert_eq!(a.declares_event("ADDED", 0), Some(true));
        assert_eq!(a.declares_event("Removed", 0), Some(false));
        a.merge(Announced::of(
            "Calc",
            &BTreeMap::new(),
            &BTreeMap::new(),
            UNTIL,
        ));
        assert_eq!((a.actions(0), a.declares_event("added", 0)), (None, None));
        // Once that announcement is past, the names are known again.
        assert_eq!(a.declares_event("added", 2_000), Some(true));
        assert_eq!(
            a.actions(2_000),
            Some(vec!["add".to_owned(), "sub".to_owned()])
        );
    }
}
