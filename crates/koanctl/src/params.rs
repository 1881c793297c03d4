//! `act --params`: JSON text, read from the flag, a file or standard input, checked
//! as the host checks a body, and sent as it was written.
//!
//! Parsed into a `serde_json::Value` and written out again, `{"amount": 1,
//! "amount": 1000}` became `{"amount": 1000}` (the last key wins): the call ran
//! with 1000, exit 0, where the host itself refuses such a body (`invalid_json`)
//! because a proxy or a log reading the first key sees another call (found by a
//! probe). The host's strict reader is private to `koan-http`, which koanctl does
//! not link, hence the small check here.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::client::Failure;

/// JSON text to send as a request body, checked to be one JSON value whose objects
/// name no key twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonText(String);

impl JsonText {
    /// `value` written out (a body koanctl makes itself: no key twice).
    pub(crate) fn of(value: &serde_json::Value) -> JsonText {
        JsonText(value.to_string())
    }

    /// The text, as it will be sent.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Reads `--params`: JSON text, `@file`, or `@-` for standard input; refused (a usage
/// error) when it is not JSON or when an object in it names a key twice.
pub(crate) fn read(arg: &str) -> Result<JsonText, Failure> {
    let (text, origin) = if let Some(path) = arg.strip_prefix('@') {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin())
                .map_err(|e| Failure::Input(format!("cannot read --params from stdin: {e}")))?
        } else {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Input(format!("cannot read --params file `{path}`: {e}")))?
        };
        let origin = if path == "-" {
            "standard input".to_owned()
        } else {
            format!("file `{path}`")
        };
        (text, origin)
    } else {
        (arg.to_owned(), "--params".to_owned())
    };
    check(&text).map_err(|e| {
        let mut message = format!("{origin} is not valid JSON: {e}");
        if e.is_data() {
            // A repeated key (the check's one error of its own): why it matters.
            message.push_str(
                "; the host refuses such a body (a reader taking the first and one taking \
                 the last would run different calls): give each key once",
            );
        }
        Failure::Input(message)
    })?;
    Ok(JsonText(text))
}

/// Checks that `text` is one JSON value (whitespace around it allowed) whose objects
/// name no key twice; the error names a repeated key and where it is.
fn check(text: &str) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    Unique::deserialize(&mut de)?;
    de.end()
}

/// Any JSON value whose objects, at any depth, name no key twice (keys compared
/// unescaped, as the host compares them: `"a"` and `"\u0061"` are one key).
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "key `{}` appears twice in one object",
                    key.escape_debug()
                )));
            }
            map.next_value::<Unique>()?;
            seen.insert(key);
        }
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_text_or_a_file() -> anyhow::Result<()> {
        let text = r#" {"a": 1, "b": [{"a": 2}]} "#;
        assert_eq!(read(text)?.into_string(), text, "sent as written");
        let bad = read("{nope");
        assert!(matches!(bad, Err(Failure::Input(_))), "{bad:?}");
        let missing = read("@/definitely/not/here.json");
        assert!(matches!(missing, Err(Failure::Input(_))), "{missing:?}");
        Ok(())
    }

    #[test]
    fn a_key_twice_in_one_object_is_refused_at_any_depth() {
        for (text, key) in [
            (r#"{"amount": 1, "amount": 1000}"#, "amount"),
            (r#"{"a": {"b": 1, "c": 2, "b": 3}}"#, "b"),
            (r#"[{"x": 1}, {"y\n": 1, "y\n": 2}]"#, "y\\n"),
            (r#"{"a": 1, "\u0061": 2}"#, "a"),
        ] {
            let got = read(text).map_err(|f| f.to_string());
            assert!(
                matches!(&got, Err(m) if m.starts_with(&format!(
                    "--params is not valid JSON: key `{key}` appears twice in one object at line 1"
                ))),
                "{text}: {got:?}"
            );
        }
        // The same key in two objects is no repeat; nor is one value after another.
        assert!(read(r#"[{"a": 1}, {"a": 2}]"#).is_ok());
        assert!(read("{} {}").is_err(), "one value only");
    }
}
