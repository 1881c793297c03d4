//! Values crossing the action and event boundaries: passed through untouched when the
//! receiver wants the sender's own type, converted through serde otherwise.

use std::any::{Any, TypeId};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind, Result};

mod inline;
mod scalar;
mod text;

pub(crate) use inline::{Inline, Params};
use scalar::{Scalar, cast};
pub use text::JsonText;

/// A sendable value that can also show itself as JSON.
pub(crate) trait AnyValue: Any + Send {
    fn to_json(&self) -> std::result::Result<Value, serde_json::Error>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    fn value_type_id(&self) -> TypeId;
}

impl<T: Serialize + Send + 'static> AnyValue for T {
    fn to_json(&self) -> std::result::Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
    fn value_type_id(&self) -> TypeId {
        TypeId::of::<T>()
    }
}

/// Parameters or a result: nothing, a typed value (inline when it is a number, a
/// boolean or a string, boxed otherwise), JSON, or JSON's text.
pub(crate) enum Payload {
    Unit,
    Scalar(Scalar),
    /// A small value of another type, in place (see `inline`).
    Inline(Inline),
    Value(Box<dyn AnyValue>),
    Json(Value),
    /// JSON's text as it came over a wire (not parsed, nor checked, on the way):
    /// read once, straight into the receiver's type, without a `Value` built and
    /// dropped on the way (B8's serving side: a call's parameters as a `Value` cost
    /// a map, its keys and its entries; checked first, a read of the whole text).
    Text(JsonText),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Unit => f.write_str("Unit"),
            Payload::Scalar(s) => write!(f, "Scalar({s:?})"),
            Payload::Inline(_) => f.write_str("Inline(..)"),
            Payload::Value(_) => f.write_str("Value(..)"),
            Payload::Json(v) => write!(f, "Json({v})"),
            Payload::Text(t) => write!(f, "{t:?}"),
        }
    }
}

impl Payload {
    pub(crate) fn of<T: Serialize + Send + 'static>(value: T) -> Self {
        // Each check is decided at compile time for `T`.
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return Payload::Unit;
        }
        let value = match cast::<T, Value>(value) {
            Ok(json) => return Payload::Json(json),
            Err(value) => value,
        };
        let value = match cast::<T, JsonText>(value) {
            Ok(text) => return Payload::text(text),
            Err(value) => value,
        };
        let value = match cast::<T, Box<RawValue>>(value) {
            Ok(raw) => return Payload::text(raw),
            Err(value) => value,
        };
        match Scalar::of(value) {
            Ok(s) => Payload::Scalar(s),
            Err(value) => match Inline::shown(value) {
                Ok(inline) => Payload::Inline(inline),
                Err(value) => Payload::Value(Box::new(value)),
            },
        }
    }

    /// JSON's text; blank or `null` is no parameters, as a `Value`'s `null` is (see
    /// `Table::resolve`).
    fn text(text: impl Into<JsonText>) -> Self {
        let text = text.into();
        if text.is_none() {
            Payload::Json(Value::Null)
        } else {
            Payload::Text(text)
        }
    }

    /// Whether this is JSON (a value, or its text) that is an array.
    pub(crate) fn is_json_array(&self) -> bool {
        match self {
            Payload::Json(v) => v.is_array(),
            Payload::Text(t) => t.as_bytes().trim_ascii_start().first() == Some(&b'['),
            _ => false,
        }
    }

    pub(crate) fn to_json(&self) -> Result<Value> {
        match self {
            Payload::Unit => Ok(Value::Null),
            Payload::Scalar(s) => Ok(s.to_json()),
            Payload::Json(v) => Ok(v.clone()),
            Payload::Text(t) => parse(t.as_bytes(), &|| "value".to_owned()),
            Payload::Inline(i) => unserializable(i.json(), &|| "value".to_owned()),
            Payload::Value(b) => unserializable(Some(b.to_json()), &|| "value".to_owned()),
        }
    }

    pub(crate) fn into_json(self) -> Result<Value> {
        match self {
            Payload::Json(v) => Ok(v),
            other => other.to_json(),
        }
    }

    /// Converts into a job's parameters, a `P`, kept where they are (in place, or in
    /// the caller's box) when they already are a `P`.
    pub(crate) fn decode_params<P: DeserializeOwned + Send + 'static>(
        self,
        what: &dyn Fn() -> String,
    ) -> Result<Params> {
        match self {
            Payload::Inline(i) if i.type_of() == TypeId::of::<P>() => Ok(Params::kept(i)),
            Payload::Value(b) if b.value_type_id() == TypeId::of::<P>() => {
                Ok(Params::boxed(b.into_any()))
            }
            other => other.decode::<P>(what).map(Params::of),
        }
    }

    /// Converts into `P`: by downcast when it is a `P`, through serde otherwise.
    /// `what` names the receiver for the error message.
    pub(crate) fn decode<P: DeserializeOwned + 'static>(
        self,
        what: &dyn Fn() -> String,
    ) -> Result<P> {
        let json = match self {
            Payload::Inline(mut i) if i.type_of() == TypeId::of::<P>() => {
                return i.take::<P>().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidParameters,
                        format!("{}: type confusion", what()),
                    )
                });
            }
            Payload::Inline(i) => {
                unserializable(i.json(), &|| format!("{}: the value given", what()))?
            }
            Payload::Value(b) if b.value_type_id() == TypeId::of::<P>() => {
                return b.into_any().downcast::<P>().map(|b| *b).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidParameters,
                        format!("{}: type confusion", what()),
                    )
                });
            }
            Payload::Value(b) => unserializable(Some(b.to_json()), &|| {
                format!("{}: the value given", what())
            })?,
            Payload::Scalar(s) => match s.take::<P>() {
                Ok(p) => return Ok(p),
                Err(s) => s.to_json(),
            },
            Payload::Json(v) => v,
            Payload::Text(t) => {
                // The common case, straight from the text. Anything it refuses goes
                // the way of a `Value` (the same leniencies, the same message), so
                // what is accepted, and how a refusal reads, do not change.
                if let Ok(p) = serde_json::from_slice::<P>(t.as_bytes()) {
                    return Ok(p);
                }
                parse(t.as_bytes(), what)?
            }
            Payload::Unit => Value::Null,
        };
        from_json::<P>(json, what)
    }
}

/// A value's JSON, or an error naming `what` (written out only then) that says why
/// not (`None`: the value is gone, taken).
fn unserializable(
    json: Option<std::result::Result<Value, serde_json::Error>>,
    what: &dyn Fn() -> String,
) -> Result<Value> {
    let why = match json {
        Some(Ok(v)) => return Ok(v),
        Some(Err(e)) => e.to_string(),
        None => "it was taken".to_owned(),
    };
    Err(Error::new(
        ErrorKind::InvalidParameters,
        format!("{} cannot be serialized: {why}", what()),
    ))
}

/// The `Value` that `text` holds.
fn parse(text: &[u8], what: &dyn Fn() -> String) -> Result<Value> {
    serde_json::from_slice(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidParameters,
            format!("{}: not valid JSON: {e}", what()),
        )
    })
}

/// `serde_json::from_value` whose error names the failing field path.
pub(crate) fn from_json<P: DeserializeOwned>(json: Value, what: &dyn Fn() -> String) -> Result<P> {
    // `()` handlers accept no parameters, an empty object, or null.
    let json = match json {
        Value::Object(m) if m.is_empty() && is_unit::<P>() => Value::Null,
        other => other,
    };
    // The common case, straight from the value; only a failure is decoded again
    // with path tracking, to name the field in the message.
    if let Ok(p) = P::deserialize(&json) {
        return Ok(p);
    }
    // JSON Schema counts `7.0` as an integer, and some clients write whole numbers
    // so: read them as integers before giving up (a float field takes either).
    let mut json = json;
    if whole_numbers_as_integers(&mut json)
        && let Ok(p) = P::deserialize(&json)
    {
        return Ok(p);
    }
    serde_path_to_error::deserialize::<_, P>(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        Error::new(
            ErrorKind::InvalidParameters,
            format!(
                "{}: invalid parameters{at}: {inner}; expected `{}`",
                what(),
                crate::util::short_type_name::<P>()
            ),
        )
    })
}

/// Rewrites every number with no fractional part (`7.0`) as an integer; whether
/// anything changed.
pub(crate) fn whole_numbers_as_integers(v: &mut Value) -> bool {
    match v {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else {
                return false;
            };
            // 2^63: the bound of both casts below.
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            let whole = if f.fract() != 0.0 {
                None
            } else if (-TWO_63..TWO_63).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else if (0.0..2.0 * TWO_63).contains(&f) {
                Some(serde_json::Number::from(f as u64))
            } else {
                None
            };
            whole.map(|w| *n = w).is_some()
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| whole_numbers_as_integers(v) | changed),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |changed, v| whole_numbers_as_integers(v) | changed),
        _ => false,
    }
}

fn is_unit<P>() -> bool {
    std::any::type_name::<P>() == "()"
}
