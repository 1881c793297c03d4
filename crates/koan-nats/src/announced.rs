//! What the cluster's instances announced of each service besides its status: its
//! action names and its event names, each the union of every announcement since
//! this host joined (a rolling deploy adds a name on one host first). A job for
//! an action none announced is refused at its enqueue, and an event none declared
//! is not delivered here. An instance that announces no names (a host older than
//! the fields) makes them unknown, and then nothing is refused for them.

use std::collections::{BTreeMap, BTreeSet};

/// The most action (or event) names kept for one service, and the longest name
/// in bytes: past either, its names are not known (nothing is refused for them),
/// so that forged announcements cannot grow a host without bound.
const MAX_NAMES: usize = 4096;
const MAX_NAME: usize = 256;

/// The names announced for one service: `None` once some instance announced none.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    actions: Option<BTreeSet<String>>,
    /// Lower case: events are matched regardless of case.
    events: Option<BTreeSet<String>>,
}

impl Announced {
    /// The names of an announcement of the service `service` (as the instance
    /// spells it), from its instance's maps.
    pub(crate) fn of(
        service: &str,
        actions: &BTreeMap<String, Vec<String>>,
        events: &BTreeMap<String, Vec<String>>,
    ) -> Announced {
        let set = |names: &Vec<String>, lower: bool| -> Option<BTreeSet<String>> {
            // More names, or longer, than any service declares (a forged entry):
            // not known, rather than kept whole.
            if names.len() > MAX_NAMES || names.iter().any(|n| n.len() > MAX_NAME) {
                return None;
            }
            Some(
                names
                    .iter()
                    .map(|n| {
                        if lower {
                            n.to_ascii_lowercase()
                        } else {
                            n.clone()
                        }
                    })
                    .collect(),
            )
        };
        Announced {
            actions: actions.get(service).and_then(|a| set(a, false)),
            events: events.get(service).and_then(|e| set(e, true)),
        }
    }

    /// Adds another instance's announcement of the same service.
    pub(crate) fn merge(&mut self, other: Announced) {
        fn union(mine: &mut Option<BTreeSet<String>>, theirs: Option<BTreeSet<String>>) {
            match (mine.as_mut(), theirs) {
                (Some(names), Some(theirs)) => {
                    names.extend(theirs);
                    if names.len() > MAX_NAMES {
                        *mine = None;
                    }
                }
                _ => *mine = None,
            }
        }
        union(&mut self.actions, other.actions);
        union(&mut self.events, other.events);
    }

    /// Every action name announced, `None` when not known.
    pub(crate) fn actions(&self) -> Option<Vec<String>> {
        self.actions.as_ref().map(|a| a.iter().cloned().collect())
    }

    /// Whether event `name` was announced (`None` when the events are not known).
    pub(crate) fn declares_event(&self, name: &str) -> Option<bool> {
        let events = self.events.as_ref()?;
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

    #[test]
    fn too_many_or_too_long_names_are_not_kept() {
        let long = "a".repeat(super::MAX_NAME + 1);
        let a = Announced::of("S", &names("S", &[&long]), &names("S", &[]));
        assert_eq!(a.actions(), None);
        let many: Vec<String> = (0..=super::MAX_NAMES).map(|n| n.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            Announced::of("S", &names("S", &many), &names("S", &[])).actions(),
            None
        );
        // Grown past it by merges: not known either.
        let mut a = Announced::of("S", &names("S", &many[1..]), &names("S", &[]));
        assert!(a.actions().is_some());
        a.merge(Announced::of("S", &names("S", &["x"]), &names("S", &[])));
        assert_eq!(a.actions(), None);
    }

    #[test]
    fn announcements_add_up_and_one_without_names_makes_them_unknown() {
        let mut a = Announced::of("Calc", &names("Calc", &["add"]), &names("Calc", &["Added"]));
        a.merge(Announced::of(
            "Calc",
            &names("Calc", &["sub"]),
            &names("Calc", &[]),
        ));
        assert_eq!(a.actions(), Some(vec!["add".to_owned(), "sub".to_owned()]));
        assert_eq!(a.declares_event("ADDED"), Some(true));
        assert_eq!(a.declares_event("Removed"), Some(false));
        a.merge(Announced::of("Calc", &BTreeMap::new(), &BTreeMap::new()));
        assert_eq!((a.actions(), a.declares_event("added")), (None, None));
    }
}
