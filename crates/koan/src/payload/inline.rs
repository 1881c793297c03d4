//! A small value of any type kept in place, in four words, rather than in a box of
//! its own: a call's parameters (an `AddReq { a, b }`), a result that is not one of
//! the [`Scalar`](super::scalar::Scalar) types.
//!
//! B3's profile: a typed call's parameters were the one allocation that crossed the
//! cores on every queued call (made by the caller, freed by the worker). Kept in
//! place, koan ÷ ractor went from 0.895× to 1.015× (medians of 8 alternated pairs,
//! every pair ahead; a throw-away build with parameters of no size, so no box,
//! measured the same). Any value of up to 16 bytes fits (24 when its type leaves
//! `Option` a niche, as a `String` does).
//!
//! Held as `Option<T>` behind `dyn Slot` ([`stack_dst::Value`], whose safe
//! constructor checks the size; its alignment is checked here first, since
//! `stack_dst` would panic on a value aligned beyond a word): the value is taken
//! out through a downcast of the `Option`, which leaves `None` for the drop.

use std::any::{Any, TypeId};
use std::mem::{MaybeUninit, align_of, size_of};

use serde::Serialize;
use serde_json::Value;

/// The words a held value and its vtable share.
const WORDS: usize = 4;

type Buf = [MaybeUninit<usize>; WORDS];

/// A held value, seen through its `Option`.
trait Slot: Send {
    fn option(&mut self) -> &mut dyn Any;
    fn type_of(&self) -> TypeId;
    /// The value as JSON; `None` for a type that was not kept as serializable.
    fn json(&self) -> Option<Result<Value, serde_json::Error>>;
}

/// Any value (a job's parameters).
struct Held<T>(Option<T>);

/// A value that can show itself as JSON (a payload).
struct Shown<T>(Option<T>);

impl<T: Send + 'static> Slot for Held<T> {
    fn option(&mut self) -> &mut dyn Any {
        &mut self.0
    }
    fn type_of(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn json(&self) -> Option<Result<Value, serde_json::Error>> {
        None
    }
}

impl<T: Serialize + Send + 'static> Slot for Shown<T> {
    fn option(&mut self) -> &mut dyn Any {
        &mut self.0
    }
    fn type_of(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn json(&self) -> Option<Result<Value, serde_json::Error>> {
        self.0.as_ref().map(serde_json::to_value)
    }
}

/// A value kept in place (see the module's notes).
pub(crate) struct Inline(stack_dst::Value<dyn Slot, Buf>);

// Never pinned through: its value is moved out whole, by `take`.
impl Unpin for Inline {}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inline(..)")
    }
}

/// `slot` (a `Held` or `Shown` holding its value) kept in place, or given back when
/// it does not fit beside its vtable's word, aligned as a word.
fn keep<S: Slot + 'static>(slot: S) -> Result<Inline, S> {
    if align_of::<S>() > align_of::<usize>() || size_of::<S>() + size_of::<usize>() > WORDS * 8 {
        return Err(slot);
    }
    let buf = [MaybeUninit::new(0); WORDS];
    stack_dst::Value::in_buffer_stable(buf, slot, |s| s as &dyn Slot).map(Inline)
}

impl Inline {
    /// `value` kept in place, or given back when it does not fit.
    pub(crate) fn any<T: Send + 'static>(value: T) -> Result<Self, T> {
        keep(Held(Some(value))).map_err(|Held(v)| v.unwrap_or_else(|| unreachable!("held")))
    }

    /// `value` kept in place with its JSON form at hand, or given back.
    pub(crate) fn shown<T: Serialize + Send + 'static>(value: T) -> Result<Self, T> {
        keep(Shown(Some(value))).map_err(|Shown(v)| v.unwrap_or_else(|| unreachable!("held")))
    }

    /// The type of the value it was made with.
    pub(crate) fn type_of(&self) -> TypeId {
        self.0.type_of()
    }

    /// The value, when it is a `T` still held.
    pub(crate) fn take<T: 'static>(&mut self) -> Option<T> {
        self.0.option().downcast_mut::<Option<T>>()?.take()
    }

    /// The value as JSON: `None` when it was not kept as serializable, or taken.
    pub(crate) fn json(&self) -> Option<Result<Value, serde_json::Error>> {
        self.0.json()
    }
}

/// A job's parameters: in place when they fit, in a box otherwise (the box itself
/// in place).
pub(crate) struct Params(Inline);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Params(..)")
    }
}

impl Params {
    pub(crate) fn of<P: Send + 'static>(params: P) -> Self {
        match Inline::any(params) {
            Ok(i) => Params(i),
            Err(params) => Params::boxed(Box::new(params)),
        }
    }

    /// Parameters already in a box of their own (kept: not moved again).
    pub(crate) fn boxed(params: Box<dyn Any + Send>) -> Self {
        match Inline::any(params) {
            Ok(i) => Params(i),
            Err(_) => unreachable!("a box fits in place"),
        }
    }

    /// Parameters a payload kept in place.
    pub(crate) fn kept(params: Inline) -> Self {
        Params(params)
    }

    /// The parameters as a `P` when they are one, once.
    pub(crate) fn take<P: 'static>(&mut self) -> Option<P> {
        if let Some(p) = self.0.take::<P>() {
            return Some(p);
        }
        let boxed = self.0.take::<Box<dyn Any + Send>>()?;
        boxed.downcast::<P>().ok().map(|p| *p)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Debug, PartialEq, Serialize)]
    struct Add {
        a: u64,
        b: u64,
    }

    #[test]
    fn a_small_value_is_kept_in_place_and_taken_once_as_its_type() {
        let mut i = Inline::shown(Add { a: 2, b: 3 }).ok();
        assert!(i.is_some(), "16 bytes fit");
        let i = i.as_mut().map(|i| {
            assert_eq!(i.type_of(), TypeId::of::<Add>());
            assert_eq!(
                i.json().and_then(Result::ok),
                Some(serde_json::json!({"a": 2, "b": 3}))
            );
            assert_eq!(i.take::<u64>(), None, "not a u64");
            assert_eq!(i.take::<Add>(), Some(Add { a: 2, b: 3 }));
            assert_eq!(i.take::<Add>(), None, "taken");
            i.json().is_none()
        });
        assert_eq!(i, Some(true));
    }

    #[test]
    fn a_value_too_big_or_too_aligned_is_given_back() {
        assert_eq!(
            Inline::any([7u64; 3]).err(),
            Some([7u64; 3]),
            "24 bytes + the Option's word"
        );
        assert_eq!(
            Inline::any(9u128).err(),
            Some(9u128),
            "aligned beyond a word"
        );
        assert!(Inline::any([7u64; 2]).is_ok());
        assert!(Inline::any(()).is_ok());
    }

    #[test]
    fn a_value_still_held_is_dropped_with_it_and_a_taken_one_is_not_dropped_twice() {
        let counted = Arc::new(());
        let held = Inline::any(Arc::clone(&counted));
        assert_eq!(Arc::strong_count(&counted), 2);
        drop(held);
        assert_eq!(Arc::strong_count(&counted), 1, "dropped with it");
        let mut held = Inline::any(Arc::clone(&counted)).ok();
        let taken = held.as_mut().and_then(Inline::take::<Arc<()>>);
        drop(held);
        assert_eq!(Arc::strong_count(&counted), 2, "the taken value lives on");
        drop(taken);
        assert_eq!(Arc::strong_count(&counted), 1);
    }
}
