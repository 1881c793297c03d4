//! Small values of common types (numbers, booleans, strings) carried in a
//! [`Payload`](super::Payload) without a box of their own: an action that returns a
//! `u64` allocates nothing for its result, and its caller frees nothing (B1's and
//! B3's profiles: the result's box was allocated on the worker's thread and freed on
//! the caller's, a round through the allocator's shared arena).

use std::any::{Any, TypeId};

use serde_json::Value;

/// `value` as a `U` when it is one (moved out through a downcast on the stack: no
/// allocation), `value` back otherwise.
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    // Decided at compile time for each pair of types.
    if TypeId::of::<T>() != TypeId::of::<U>() {
        return Err(value);
    }
    let mut slot = Some(value);
    let taken = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take);
    match (taken, slot) {
        (Some(u), _) => Ok(u),
        (None, Some(t)) => Err(t),
        (None, None) => unreachable!("a value is taken only as the type it is"),
    }
}

macro_rules! scalars {
    ($($variant:ident($t:ty)),* $(,)?) => {
        /// A value of one of the common types kept inline.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) enum Scalar {
            $($variant($t)),*
        }

        impl Scalar {
            /// `value` as a scalar when its type is one of them, back otherwise.
            pub(crate) fn of<T: 'static>(value: T) -> Result<Self, T> {
                $(
                    let value = match cast::<T, $t>(value) {
                        Ok(v) => return Ok(Scalar::$variant(v)),
                        Err(v) => v,
                    };
                )*
                Err(value)
            }

            /// The value as a `P` when it is one (no conversion), itself back
            /// otherwise.
            pub(crate) fn take<P: 'static>(self) -> Result<P, Self> {
                match self {
                    $(Scalar::$variant(v) => cast::<$t, P>(v).map_err(Scalar::$variant),)*
                }
            }

            /// The value as JSON, as `serde_json::to_value` writes it.
            pub(crate) fn to_json(&self) -> Value {
                match self {
                    $(Scalar::$variant(v) => Value::from(v.clone()),)*
                }
            }
        }
    };
}

scalars!(
    U64(u64),
    I64(i64),
    U32(u32),
    I32(i32),
    Usize(usize),
    F64(f64),
    Bool(bool),
    String(String),
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind round-trips as itself, and writes the JSON serde would.
    fn round_trip<T>(value: T)
    where
        T: serde::Serialize + Clone + PartialEq + std::fmt::Debug + 'static,
    {
        let json = serde_json::to_value(value.clone()).expect("serializable");
        let Ok(s) = Scalar::of(value.clone()) else {
            panic!("{} is a scalar", std::any::type_name::<T>());
        };
        assert_eq!(s.to_json(), json, "{}", std::any::type_name::<T>());
        assert_eq!(s.take::<T>().ok(), Some(value));
    }

    #[test]
    fn every_kind_round_trips_and_writes_the_json_serde_writes() {
        round_trip(u64::MAX);
        round_trip(i64::MIN);
        round_trip(7u32);
        round_trip(-7i32);
        round_trip(usize::MAX);
        round_trip(2.5f64);
        round_trip(f64::NAN.max(1.0));
        round_trip(true);
        round_trip("héllo".to_owned());
        let nan = Scalar::of(f64::NAN).expect("a scalar");
        assert_eq!(nan.to_json(), serde_json::to_value(f64::NAN).expect("null"));
    }

    #[test]
    fn other_types_are_given_back_and_a_scalar_is_not_taken_as_another() {
        assert_eq!(Scalar::of(vec![1u8]).err(), Some(vec![1u8]));
        assert_eq!(Scalar::of("static str").err(), Some("static str"));
        let s = Scalar::of(5u64).expect("a scalar");
        let back = s.take::<i64>().expect_err("a u64 is not an i64");
        assert_eq!(back, Scalar::U64(5));
    }
}
