//! A service's settings read as they were written: a struct's fields are found
//! whatever the case and separators of their keys (`RetentionDays`,
//! `retention-days` → `retention_days`, or `RetentionDays` for a struct renamed
//! so), while a map's keys are data and kept as written. Before, every key was
//! made snake_case first: `"pt-BR"` in a map of rates arrived as `pt_br`, `"EN"`
//! as `en`, and a struct of `rename_all = "PascalCase"` read none of its fields
//! (a probe).
//!
//! A serde `Deserializer` over a JSON value, so that the struct's own field list
//! (`deserialize_struct`'s `fields`) decides; a value read without a type's
//! guidance (`deserialize_any`: a `serde_json::Value` field, a flattened or
//! untagged type) has its keys made snake_case as before.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{Deserializer, Visitor};
use serde_json::Value;

use super::tree::{norm, snake};
use crate::error::{Error, ErrorKind, Result};

type E = serde_json::Error;

/// A JSON value whose structs' keys are matched to their fields (see the module).
pub(crate) struct Folded(pub(crate) Value);

/// `value` (a service's settings, keys as written) read as an `S`; a mismatch is
/// a `Config` error naming the field and `what` (where the settings came from).
pub(crate) fn settings<S: DeserializeOwned>(value: &Value, what: &dyn Fn() -> String) -> Result<S> {
    if let Ok(s) = S::deserialize(Folded(value.clone())) {
        return Ok(s);
    }
    // Whole numbers written `7.0` read as integers, as for parameters.
    let mut json = value.clone();
    crate::payload::whole_numbers_as_integers(&mut json);
    serde_path_to_error::deserialize::<_, S>(Folded(json)).map_err(|e| {
        let path = written_path(value, e.path());
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        Error::new(
            ErrorKind::Config,
            format!(
                "{}: invalid value{at}: {}; expected `{}`",
                what(),
                e.into_inner(),
                crate::util::short_type_name::<S>()
            ),
        )
    })
}

/// `path` (of the fields read) as the keys of `value` were written: a value
/// under `RetentionDays` was said to be at `retention_days`, a key the
/// operator's file does not have (a re-probe).
fn written_path(value: &Value, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut at = Some(value);
    let mut out = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Seq { index } => {
                at = at.and_then(|v| v.get(index));
                format!("[{index}]")
            }
            Segment::Map { key } => {
                let object = at.and_then(Value::as_object);
                // The key as written: the same, else the one that names the same
                // field (case and separators aside).
                let found = object.and_then(|m| {
                    m.get_key_value(key.as_str()).or_else(|| {
                        let n = norm(key);
                        m.iter().find(|(k, _)| norm(k) == n)
                    })
                });
                at = found.map(|(_, v)| v);
                let name = found.map_or(key.as_str(), |(k, _)| k.as_str());
                if out.is_empty() {
                    name.to_owned()
                } else {
                    format!(".{name}")
                }
            }
            Segment::Enum { variant } => {
                at = None;
                format!("{}{variant}", if out.is_empty() { "" } else { "." })
            }
            Segment::Unknown => {
                at = None;
                format!("{}?", if out.is_empty() { "" } else { "." })
            }
        };
        out.push_str(&part);
    }
    out
}

/// The keys of `value` (settings, keys as written) that `S` does not read, as
/// dotted paths; none when it does not read as an `S` at all (refused elsewhere).
pub(crate) fn ignored_keys<S: DeserializeOwned>(value: &Value) -> Vec<String> {
    let mut ignored = Vec::new();
    let read: std::result::Result<S, E> =
        serde_ignored::deserialize(Folded(value.clone()), |path| ignored.push(path.to_string()));
    if read.is_err() {
        return Vec::new();
    }
    ignored
}

/// The field of `fields` that `key` names (case and separators aside), or `key`
/// as written.
fn field_for(key: String, fields: &[&str]) -> String {
    let n = norm(&key);
    match fields.iter().find(|f| norm(f) == n) {
        Some(f) => (*f).to_owned(),
        None => key,
    }
}

impl<'de> Deserializer<'de> for Folded {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
        match self.0 {
            // Read without a type's guidance: snake_case, as settings always were.
            Value::Object(m) => v.visit_map(Entries::new(
                m.into_iter().map(|(k, x)| (snake(&k), x)).collect(),
            )),
            Value::Array(a) => v.visit_seq(Items(a.into_iter())),
            other => other.deserialize_any(v),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
        match self.0 {
            // A map's keys are data: as written.
            Value::Object(m) => v.visit_map(Entries::new(m.into_iter().collect())),
            other => other.deserialize_map(v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, E> {
        match self.0 {
            Value::Object(m) => v.visit_map(Entries::new(
                m.into_iter()
                    .map(|(k, x)| (field_for(k, fields), x))
                    .collect(),
            )),
            Value::Array(a) => v.visit_seq(Items(a.into_iter())),
            other => other.deserialize_struct(name, fields, v),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
        match self.0 {
            Value::Array(a) => v.visit_seq(Items(a.into_iter())),
            other => other.deserialize_seq(v),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> std::result::Result<V::Value, E> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> std::result::Result<V::Value, E> {
        self.deserialize_seq(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
        match self.0 {
            Value::Null => v.visit_none(),
            other => v.visit_some(Folded(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> std::result::Result<V::Value, E> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, E> {
        // An enum's variant names its case as written, as it always did.
        self.0.deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct identifier ignored_any
    }
}

/// A JSON object's entries, each value read as [`Folded`].
struct Entries {
    entries: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl Entries {
    fn new(entries: Vec<(String, Value)>) -> Self {
        Entries {
            entries: entries.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = E;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, E> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, E> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <E as de::Error>::custom("a map's value asked for before its key"))?;
        seed.deserialize(Folded(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A JSON array's items, each read as [`Folded`].
struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = E;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> std::result::Result<Option<T::Value>, E> {
        self.0
            .next()
            .map(|v| seed.deserialize(Folded(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// A map's key: a string, read as a number or a bool where the key's type is one
/// (a map of `u16` to names), as serde_json reads keys.
struct Key(String);

macro_rules! parsed_key {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
            match self.0.parse::<$ty>() {
                Ok(n) => v.$visit(n),
                Err(_) => self.0.into_deserializer().deserialize_any(v),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Key {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, E> {
        v.visit_string(self.0)
    }

    parsed_key! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> std::result::Result<V::Value, E> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, E> {
        Value::String(self.0).deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Rates {
        retention_days: u32,
        rates: BTreeMap<String, f64>,
        #[serde(default)]
        ports: BTreeMap<u16, String>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        max_totl: u32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Pascal {
        retention_days: u32,
    }

    fn what() -> String {
        "test".to_owned()
    }

    #[test]
    fn fields_are_found_in_any_spelling_and_map_keys_are_kept_as_written() {
        let written = json!({
            "RetentionDays": 30,
            "Rates": { "pt-BR": 1.5, "EN": 2.0, "Foo_Bar": 3.0 },
            "ports": { "8080": "http" },
            "Inner": { "MAX-TOTL": 7 },
        });
        let got: Rates = settings(&written, &what).expect("reads");
        assert_eq!(got.retention_days, 30);
        let keys: Vec<&str> = got.rates.keys().map(String::as_str).collect();
        assert_eq!(keys, ["EN", "Foo_Bar", "pt-BR"]);
        assert_eq!(got.ports.get(&8080).map(String::as_str), Some("http"));
        assert_eq!(got.inner, Some(Inner { max_totl: 7 }));
        let pascal: Pascal = settings(&json!({ "retention_days": 9 }), &what).expect("reads");
        assert_eq!(pascal.retention_days, 9);
    }

    #[test]
    fn keys_no_field_reads_are_named_as_written() {
        let written = json!({ "RetentionDays": 1, "Rates": {}, "RetentionDayz": 2 });
        assert_eq!(ignored_keys::<Rates>(&written), ["RetentionDayz"]);
        let e = settings::<Rates>(&json!({ "RetentionDays": "thirty", "Rates": {} }), &what)
            .expect_err("not a number");
        assert!(e.message().contains("at `RetentionDays`"), "{e}");
        // Deeper: each key as written.
        let e = settings::<Rates>(
            &json!({ "Inner": { "Max-Totl": "x" }, "Rates": {}, "RetentionDays": 1 }),
            &what,
        )
        .expect_err("not a number");
        assert!(e.message().contains("at `Inner.Max-Totl`"), "{e}");
    }
}
