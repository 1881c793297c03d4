//! The body of a call on an instance's `lead` subject (docs/wire.md, "Calls"): the
//! call's correlation id on the first line, then its parameters as JSON,
//! `<id>\n<parameters>`. Its id travels without a header and without a subject
//! of its own per call (see [`crate::subjects::Direct::Lead`]).

use bytes::Bytes;
use koan::{Error, error::ErrorKind};
use serde_json::Value;

use crate::subjects;

/// `params` as JSON, after `id` and its newline when given: the body and where the
/// parameters start in it. The queue group's call, should it be sent there, takes
/// the parameters alone, from the same buffer ([`Bytes::slice`]).
pub(crate) fn body(id: Option<&str>, params: &Value) -> (Bytes, usize) {
    // As `serde_json::to_vec` starts.
    let mut out = Vec::with_capacity(128);
    if let Some(id) = id {
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    let start = out.len();
    // A `Value` always serializes (its map keys are strings).
    if serde_json::to_writer(&mut out, params).is_err() {
        out.truncate(start);
    }
    (out.into(), start)
}

/// The correlation id and the parameters of a `lead` call's body; a clear error
/// when its first line is not an id.
pub(crate) fn split(body: &[u8]) -> Result<(&str, &[u8]), Error> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::InvalidParameters,
            format!(
                "a call on a `lead` subject starts its body with its correlation id (one token of at most 64 characters of [A-Za-z0-9_-]) and a newline, then its parameters as JSON; {why}"
            ),
        )
    };
    let Some(nl) = body.iter().position(|&b| b == b'\n') else {
        return Err(refuse("this body has no newline".to_owned()));
    };
    let (id, params) = (&body[..nl], &body[nl + 1..]);
    match std::str::from_utf8(id) {
        Ok(id) if subjects::is_plain_id(id) => Ok((id, params)),
        _ => {
            let shown = String::from_utf8_lossy(&id[..id.len().min(80)]).into_owned();
            Err(refuse(format!("its first line is {shown:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_id_leads_the_parameters_and_is_read_back() {
        let (b, start) = body(Some("c-1"), &json!({"a": 2}));
        assert_eq!(&b[..], b"c-1\n{\"a\":2}");
        assert_eq!(&b[start..], b"{\"a\":2}");
        assert_eq!(split(&b).ok(), Some(("c-1", &b"{\"a\":2}"[..])));
        let (b, start) = body(None, &Value::Null);
        assert_eq!((&b[..], start), (&b"null"[..], 0));
        // Empty parameters are no parameters, as on every other subject.
        assert_eq!(split(b"c_2\n").ok(), Some(("c_2", &b""[..])));
    }

    #[test]
    fn a_body_without_an_id_line_is_refused_saying_what_was_expected() {
        for (bad, says) in [
            (&b"{\"a\":2}"[..], "no newline"),
            (b"\n{}", "first line is \"\""),
            (b"a b\n{}", "first line is \"a b\""),
            (b"{\"id\":\"c\n\"}", "first line is \"{\\\"id\\\":\\\"c\""),
        ] {
            let e = split(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("starts its body with its correlation id"), "{e}");
            assert!(e.contains(says), "{e} names {says}");
        }
        let long = format!("{}\n{{}}", "x".repeat(10_000));
        let e = split(long.as_bytes()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.len() < 400), "a long line is cut");
    }
}
