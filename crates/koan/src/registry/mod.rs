//! The host's table of services: one [`ServiceCell`] per registered service, found by
//! name (case-insensitive) or by type.

mod activity;
mod board;
mod cell;
mod history;
mod lifetime;
mod spec;
mod stall;
mod status;
mod throughput;

use crate::util::FxHashMap as HashMap;
use std::any::TypeId;
use std::sync::Arc;

pub(crate) use activity::Activity;
pub use activity::{DEFAULT_HISTORY_SIZE, ServiceHistory};
pub(crate) use board::NextRun;
pub(crate) use cell::ServiceCell;
pub(crate) use spec::ServiceSpec;
pub use status::{RunOutcome, RunRecord, ServiceState, ServiceStatus};
pub(crate) use throughput::Throughput;
pub use throughput::{ThroughputBucket, ThroughputSnapshot};

use crate::error::{Error, ErrorKind, Result};

/// Up to this many services, look-ups compare with each one before hashing.
const FEW: usize = 8;

/// Longest name [`lowered_ascii`] lowercases on the stack.
const SHORT: usize = 64;

/// A short ASCII `name` lowercased on the stack (for ASCII, `to_lowercase` is
/// exactly this), `None` for any other. A service that runs elsewhere is not in the
/// registry under any spelling, so every call to it missed here and lowercased its
/// name into a new `String`: three allocations of B8's round trip.
fn lowered_ascii(name: &str) -> Option<([u8; SHORT], usize)> {
    if !name.is_ascii() || name.len() > SHORT {
        return None;
    }
    let mut buf = [0u8; SHORT];
    buf[..name.len()].copy_from_slice(name.as_bytes());
    buf[..name.len()].make_ascii_lowercase();
    Some((buf, name.len()))
}

#[derive(Default)]
pub(crate) struct Registry {
    cells: Vec<Arc<ServiceCell>>,
    by_name: HashMap<String, usize>,
    by_type: HashMap<TypeId, usize>,
}

impl Registry {
    pub(crate) fn insert(&mut self, cell: ServiceCell) -> Result<()> {
        let key = cell.spec.name.to_lowercase();
        if self.by_name.contains_key(&key) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "two services are named `{}`; give one another name with `ServiceOptions::name`",
                    cell.spec.name
                ),
            ));
        }
        let idx = self.cells.len();
        // The name as declared (found without allocating) and lowercased.
        self.by_name.insert(cell.spec.name.to_string(), idx);
        self.by_name.insert(key, idx);
        self.by_type.insert(cell.spec.type_id, idx);
        self.cells.push(Arc::new(cell));
        Ok(())
    }

    pub(crate) fn all(&self) -> &[Arc<ServiceCell>] {
        &self.cells
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.cells.iter().map(|c| &*c.spec.name).collect()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<ServiceCell>> {
        self.by_name_at(name).map(|(_, cell)| cell)
    }

    /// The service named `name` and its index in [`Registry::all`].
    pub(crate) fn by_name_at(&self, name: &str) -> Option<(usize, &Arc<ServiceCell>)> {
        // No local service (a host that only calls others): nothing to lowercase or
        // hash. A remote call asks three times; with the ASCII case below, B8's round
        // trip is about 480 instructions shorter (callgrind).
        if self.cells.is_empty() {
            return None;
        }
        // A name among a few services, in any ASCII case: compared directly, cheaper
        // than hashing it. Names are unique even lowercased, and two names equal but
        // for ASCII case lowercase alike, so this finds what the map would. Other
        // differences of case (`É` and `é`) are the map's.
        if self.cells.len() <= FEW
            && let Some(found) = self
                .cells
                .iter()
                .enumerate()
                .find(|(_, c)| c.spec.name.eq_ignore_ascii_case(name))
        {
            return Some(found);
        }
        let idx = match self.by_name.get(name) {
            Some(i) => *i,
            None if name.chars().any(char::is_uppercase) => match lowered_ascii(name) {
                Some((buf, len)) => *self.by_name.get(std::str::from_utf8(&buf[..len]).ok()?)?,
                None => *self.by_name.get(&name.to_lowercase())?,
            },
            None => return None,
        };
        Some((idx, self.cells.get(idx)?))
    }

    pub(crate) fn by_type(&self, id: TypeId) -> Option<&Arc<ServiceCell>> {
        self.by_type_at(id).map(|(_, cell)| cell)
    }

    /// The service of type `id` and its index in [`Registry::all`].
    pub(crate) fn by_type_at(&self, id: TypeId) -> Option<(usize, &Arc<ServiceCell>)> {
        if self.cells.len() <= FEW {
            // The last registered of that type, as the map keeps it.
            return self
                .cells
                .iter()
                .enumerate()
                .rev()
                .find(|(_, c)| c.spec.type_id == id);
        }
        let i = *self.by_type.get(&id)?;
        Some((i, self.cells.get(i)?))
    }

    pub(crate) fn unknown(&self, name: &str) -> Error {
        let names = self.names();
        Error::new(
            ErrorKind::UnknownService,
            format!(
                "no service named `{name}`; services: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        )
    }

    pub(crate) fn find(&self, name: &str) -> Result<&Arc<ServiceCell>> {
        self.by_name(name).ok_or_else(|| self.unknown(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_ascii_name_is_lowercased_on_the_stack_as_to_lowercase_would() {
        let long = "N".repeat(SHORT);
        for name in ["Calc", "MAILER", "order-Intake_2", "", long.as_str()] {
            let (buf, len) = lowered_ascii(name).expect("short ASCII");
            assert_eq!(
                std::str::from_utf8(&buf[..len]),
                Ok(name.to_lowercase().as_str())
            );
        }
        // Longer, or not ASCII: left to `to_lowercase`.
        assert!(lowered_ascii(&"N".repeat(SHORT + 1)).is_none());
        assert!(lowered_ascii("Übersetzer").is_none());
    }
}
