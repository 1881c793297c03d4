//! Compile-time registration of `#[service]` types, through `inventory`: every crate
//! linked into the binary contributes, and [`HostBuilder::discover`] adds them all.

use std::any::TypeId;

use crate::action::Actions;
use crate::host::HostBuilder;

/// A service registered by `#[service]`. Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Discovered {
    pub(crate) name: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    pub(crate) register: fn(HostBuilder) -> HostBuilder,
}

impl Discovered {
    /// Used by `#[service]`.
    pub const fn new<T: 'static>(
        name: &'static str,
        register: fn(HostBuilder) -> HostBuilder,
    ) -> Self {
        Discovered {
            name,
            type_id: TypeId::of::<T>,
            register,
        }
    }
}

inventory::collect!(Discovered);

/// Every discovered service, sorted by name so start-up is deterministic.
pub(crate) fn all() -> Vec<&'static Discovered> {
    let mut all: Vec<&'static Discovered> = inventory::iter::<Discovered>.into_iter().collect();
    all.sort_by_key(|d| d.name);
    all
}

/// Implemented by `#[actions]` for the service's impl block. Not public API.
#[doc(hidden)]
pub trait DeclaredActions: Sized {
    /// Declares the actions found in the impl block.
    fn declare(actions: &mut Actions<Self>);
}

/// Lets `#[service]` call `DeclaredActions::declare` when `#[actions]` exists and do
/// nothing otherwise (autoref specialization on a concrete type). Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct ActionsProbe<T>(std::marker::PhantomData<fn() -> T>);

impl<T> ActionsProbe<T> {
    /// A probe.
    pub const fn new() -> Self {
        ActionsProbe(std::marker::PhantomData)
    }
}

impl<T> Default for ActionsProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Picked when the type has `#[actions]`. Not public API.
#[doc(hidden)]
pub trait ViaDeclared<T> {
    /// Declares the actions.
    fn declare(&self, actions: &mut Actions<T>);
}

impl<T: DeclaredActions> ViaDeclared<T> for ActionsProbe<T> {
    fn declare(&self, actions: &mut Actions<T>) {
        T::declare(actions)
    }
}

/// Picked when it has none. Not public API.
#[doc(hidden)]
pub trait ViaNone<T> {
    /// Declares nothing.
    fn declare(&self, actions: &mut Actions<T>);
}

impl<T> ViaNone<T> for &ActionsProbe<T> {
    fn declare(&self, _actions: &mut Actions<T>) {}
}
