//! A request body read as JSON, refusing an object that names a key twice. Read
//! as a `serde_json::Value`, `{"amount": 1, "amount": 1000}` was the call with
//! 1000 — the last key wins — while a proxy or a log that reads the first saw
//! another call (seen in a probe). The same tree as `serde_json`'s own, and as
//! cheap: each key is placed once, through the map's entry.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// `bytes` as one JSON value (whitespace around it allowed), an object with a
/// repeated key refused as a syntax error is, naming the key and where.
pub(crate) fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// One JSON value, its objects without repeated keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                Entry::Occupied(first) => {
                    return Err(A::Error::custom(format_args!(
                        "key `{}` appears twice in one object",
                        first.key().escape_debug()
                    )));
                }
                Entry::Vacant(place) => {
                    place.insert(map.next_value_seed(Strict)?);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::from_slice;

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"a": [1, -2, 3.5, 18446744073709551615, true, null, "x\u00e9"], "b": {}}"#,
            "  [] ",
            "\"s\"",
            "0",
        ] {
            let ours = from_slice(text.as_bytes()).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn refuses_a_key_twice_in_one_object_at_any_depth() {
        for (text, key) in [
            (r#"{"amount": 1, "amount": 1000}"#, "amount"),
            (r#"{"a": {"b": 1, "c": 2, "b": 3}}"#, "b"),
            (r#"[{"x": 1}, {"y\n": 1, "y\n": 2}]"#, "y\\n"),
        ] {
            let e = from_slice(text.as_bytes()).expect_err(text).to_string();
            assert!(
                e.starts_with(&format!(
                    "key `{key}` appears twice in one object at line 1"
                )),
                "{e}"
            );
        }
        // The same key in two objects is no repeat.
        assert_eq!(
            from_slice(br#"[{"a": 1}, {"a": 2}]"#).ok(),
            Some(json!([{"a": 1}, {"a": 2}]))
        );
        assert!(from_slice(b"{} {}").is_err(), "one value only");
    }
}
