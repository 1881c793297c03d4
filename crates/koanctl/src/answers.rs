//! What an answer must hold before a command shows it: the fields the koan API
//! promises (an answer without them — another program behind `--url`, a proxy's
//! page — was printed as "status: -" and exit 0, which a monitoring script reads
//! as healthy), and how a message shows what came back instead.

use reqwest::StatusCode;
use serde_json::Value;

use crate::client::{Answer, Failure};
use crate::output::printable;

/// How much of an answer a message shows: 200 characters.
const EXCERPT: usize = 200;

/// The start of `body`, for a message: compact JSON cut to [`EXCERPT`] characters,
/// `…` marking the cut.
fn excerpt(body: &Value) -> String {
    if body.is_null() {
        return "nothing (or `null`)".to_owned();
    }
    let text = body.to_string();
    let mut cut: String = text.chars().take(EXCERPT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    printable(&cut).into_owned()
}

/// What `v` is, for a message: `an object`, `a list`, ….
fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The failure of an answer that is not what the koan API promises: `subject` (`the
/// answer to GET http://…/health`) `detail` (`lacks the field(s) `status``); `body`,
/// what came back, is shown in part.
fn unpromised(subject: &str, detail: &str, body: &Value) -> Failure {
    Failure::Other(format!(
        "{subject} {detail}, which a koan host always sends\n\
         hint: does --url (or KOAN_URL) point at a koan host? it answered: {}",
        excerpt(body)
    ))
}

/// The field(s) `fields`, for a message: `` the field(s) `a`, `b` ``.
fn listed(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    format!("the field(s) {}", quoted.join(", "))
}

/// [`require`] of `subject`.
fn require_in(subject: &str, body: &Value, fields: &[&str]) -> Result<(), Failure> {
    let Some(map) = body.as_object() else {
        let detail = format!("is {}, not an object with {}", shape(body), listed(fields));
        return Err(unpromised(subject, &detail, body));
    };
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !map.contains_key(*f))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let detail = format!("lacks {}", listed(&missing));
    Err(unpromised(subject, &detail, body))
}

/// Checks that `body`, the answer to `what` (`GET http://…/health`), is an object
/// with every field of `fields` (`null` counts: the API says "none" so); otherwise a
/// [`Failure::Other`] naming the missing fields, pointing at `--url`, and showing the
/// start of what came back. Every command checks its answer so before it prints
/// anything, `--json` included: an answer without the fields a command shows is
/// never shown as a result.
pub(crate) fn require(body: &Value, fields: &[&str], what: &str) -> Result<(), Failure> {
    require_in(&format!("the answer to {what}"), body, fields)
}

/// The header a koan host's `204` to a job delete carries, naming the job deleted.
pub(crate) const DELETED_JOB: &str = "Koan-Job-Id";

/// Checks that `answer`, the answer to `what` (`DELETE http://…/api/jobs/J`) of the
/// server at `server` (`--url`), is `204 No Content` without a body and with
/// [`DELETED_JOB`] naming `job`, as the API promises; otherwise a
/// [`Failure::Other`] as [`require`]'s. A bare 204 is no koan host's: a server
/// answering one to everything was reported as having deleted the job (a probe).
pub(crate) fn require_deleted(
    answer: &Answer,
    job: &str,
    what: &str,
    server: &str,
) -> Result<(), Failure> {
    let subject = format!("the answer to {what}");
    if answer.status != StatusCode::NO_CONTENT {
        let detail = format!("is {}, not 204 No Content", answer.status);
        return Err(unpromised(&subject, &detail, &answer.body));
    }
    if !answer.body.is_null() {
        let detail = "is 204 No Content with a body, not without one";
        return Err(unpromised(&subject, detail, &answer.body));
    }
    let Some(named) = answer.head.get(DELETED_JOB) else {
        return Err(Failure::Other(format!(
            "{subject} is 204 No Content without the header `{DELETED_JOB}` naming the job \
             deleted, which a koan host always sends: `{}` may not have been deleted\n\
             hint: the server at {} answered 204 but is not a koan host? check --url (or \
             KOAN_URL); a koan host older than this koanctl sends no such header either \
             (see whether the job is gone with `koanctl jobs show`)",
            printable(job),
            printable(server)
        )));
    };
    // The host escapes an id holding a control character, which no header carries.
    let named = String::from_utf8_lossy(named.as_bytes());
    if named == job || named == job.escape_debug().to_string() {
        return Ok(());
    }
    Err(Failure::Other(format!(
        "{subject} is 204 No Content naming the job `{}` deleted, not `{}`\n\
         hint: does --url (or KOAN_URL) point at a koan host, or did a proxy in front of it answer?",
        printable(&named),
        printable(job)
    )))
}

/// [`require`] for `part`, the field `name` of the answer to `what` (`result.run`).
pub(crate) fn require_part(
    part: &Value,
    name: &str,
    fields: &[&str],
    what: &str,
) -> Result<(), Failure> {
    require_in(
        &format!("the `{name}` of the answer to {what}"),
        part,
        fields,
    )
}

/// [`require`] for a list: `list` (the answer to `what`, or its field `field`) must be
/// a list whose items each have `fields`.
pub(crate) fn require_list(
    list: &Value,
    field: Option<&str>,
    fields: &[&str],
    what: &str,
) -> Result<(), Failure> {
    let subject = match field {
        Some(f) => format!("the `{f}` of the answer to {what}"),
        None => format!("the answer to {what}"),
    };
    let Some(items) = list.as_array() else {
        let detail = format!(
            "is {}, not a list of objects with {}",
            shape(list),
            listed(fields)
        );
        return Err(unpromised(&subject, &detail, list));
    };
    let item = format!("an item of {subject}");
    items.iter().try_for_each(|i| require_in(&item, i, fields))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_are_checked_for_the_promised_fields() -> Result<(), Failure> {
        let what = "GET http://h/health";
        require(
            &json!({ "status": "pass", "checks": null }),
            &["status", "checks"],
            what,
        )?;
        let f = require(&json!({ "status": "pass" }), &["status", "checks"], what).err();
        assert!(matches!(f, Some(Failure::Other(_))), "{f:?}");
        assert_eq!(f.as_ref().map(Failure::exit_code), Some(1));
        let m = f.map(|f| f.to_string()).unwrap_or_default();
        assert!(
            m.starts_with("the answer to GET http://h/health lacks the field(s) `checks`,"),
            "{m}"
        );
        assert!(
            m.contains("--url") && m.ends_with(r#"it answered: {"status":"pass"}"#),
            "{m}"
        );

        let m = require(&json!([1]), &["a", "b"], what).map_err(|f| f.to_string());
        assert!(
            matches!(&m, Err(m) if m.contains("is a list, not an object with the field(s) `a`, `b`")),
            "{m:?}"
        );
        let m = require_list(&json!({ "rows": [] }), Some("rows"), &["a"], what)
            .map_err(|f| f.to_string());
        assert!(
            matches!(&m, Err(m) if m.contains("the `rows` of the answer to GET")),
            "{m:?}"
        );
        let m =
            require_list(&json!([{ "a": 1 }, {}]), None, &["a"], what).map_err(|f| f.to_string());
        assert!(
            matches!(&m, Err(m) if m.starts_with("an item of the answer to GET")),
            "{m:?}"
        );

        // What came back is shown short, and escaped.
        let long = json!({ "x": format!("\u{9b}{}", "y".repeat(1_000)) });
        let shown = excerpt(&long);
        assert!(shown.starts_with(r#"{"x":"\u{9b}yyy"#), "{shown}");
        assert!(
            shown.ends_with('…') && shown.chars().count() < 220,
            "{shown}"
        );
        Ok(())
    }
}
