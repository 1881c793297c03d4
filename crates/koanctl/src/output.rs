//! Turning the API's JSON into aligned tables and short lines, and keeping the
//! server's text from steering the terminal.

use std::borrow::Cow;

use serde_json::Value;

/// `s` fit for one line of a terminal: every control character (C0, DEL and C1, which
/// a terminal may obey: ESC starts a sequence that clears the screen or sets the title)
/// shown as an escape, the way Rust's `escape_debug` writes it: ESC as `\u{1b}`, a
/// newline as `\n`.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    escape_controls(s, false)
}

/// [`printable`] for a block of text: line breaks and tabs stay as they are.
pub(crate) fn printable_block(s: &str) -> Cow<'_, str> {
    escape_controls(s, true)
}

/// Unicode's bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E,
/// U+200F): shown raw, `\u{202e}RTL\u{202c}` read as "LTR" — what a host sent could be made
/// to read as something else (seen in a probe).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn escape_controls(s: &str, block: bool) -> Cow<'_, str> {
    let escaped =
        |c: char| (c.is_control() && !(block && matches!(c, '\n' | '\t'))) || is_bidi_control(c);
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The widest a padded column gets: a longer cell is cut, ending in `…` (`--json`
/// has it whole). Rows were padded to the widest cell: one name of 65,536
/// characters panicked the formatter, and 85,000 rows under one of 65,535 made a
/// table of 5.6 GB out of a 14.5 MB answer (found by a probe).
pub(crate) const MAX_CELL: usize = 100;

/// Lays out `rows` under `headers` in columns two spaces apart; the last column is
/// not padded, the others at most [`MAX_CELL`] wide.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| {
            let last = row.len().saturating_sub(1);
            row.iter()
                .enumerate()
                .map(|(i, c)| {
                    let c = printable(c);
                    if i == last || c.chars().count() <= MAX_CELL {
                        return c;
                    }
                    let mut cut: String = c.chars().take(MAX_CELL - 1).collect();
                    cut.push('…');
                    Cow::Owned(cut)
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cow<'_, str>> = headers.iter().map(|h| Cow::Borrowed(*h)).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(cell);
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines, the values aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let v = printable(v);
        out.push_str(format!("{key:<w$} {v}").trim_end());
        out.push('\n');
    }
    out
}

/// A value for a cell: strings bare, `null` as `-`, other values as compact JSON;
/// [`printable`] either way.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => printable(s).into_owned(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        other => printable(&other.to_string()).into_owned(),
    }
}

/// The field `key` of `v`, as a cell.
pub(crate) fn field(v: &Value, key: &str) -> String {
    cell(v.get(key).unwrap_or(&Value::Null))
}

/// An RFC 3339 time cut to `digits` fractional digits: `2025-01-02T03:04:05.123Z`.
/// Anything that does not look like one is returned unchanged; `null` is `-`.
pub(crate) fn time(v: &Value, digits: usize) -> String {
    let Some(s) = v.as_str() else {
        return cell(v);
    };
    let Some(dot) = s.find('.') else {
        return printable(s).into_owned();
    };
    let frac_len = s[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(s.len() - dot - 1);
    let frac = &s[dot + 1..dot + 1 + frac_len];
    let rest = &s[dot + 1 + frac_len..];
    let kept: String = frac.chars().take(digits).collect();
    let shown = if kept.is_empty() {
        format!("{}{rest}", &s[..dot])
    } else {
        format!("{}.{kept}{rest}", &s[..dot])
    };
    printable(&shown).into_owned()
}

/// An action's result for people: text as it is, `null` as nothing, other values
/// as pretty JSON; a [`printable_block`] either way.
pub(crate) fn result(v: &Value) -> Option<String> {
    let text = match v {
        Value::Null => return None,
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => {
            Cow::Owned(serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()))
        }
    };
    Some(printable_block(&text).into_owned())
}

/// The parameters a JSON Schema describes, for a table: `name*, times` (`*` when
/// required), `-` for none.
pub(crate) fn params(schema: &Value) -> String {
    if schema.is_null() {
        return "-".to_owned();
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match schema.get("properties").and_then(Value::as_object) {
        Some(props) if !props.is_empty() => props
            .keys()
            .map(|k| {
                if required.contains(&k.as_str()) {
                    format!("{k}*")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => match schema.get("type") {
            Some(Value::Array(types)) => types.iter().map(cell).collect::<Vec<_>>().join("|"),
            Some(t) => cell(t),
            None => "json".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A cell longer than `MAX_CELL` in a padded column is cut, so a table is
    /// never padded to a host's longest string (65,536 characters panicked; many
    /// rows under a long one grew a 14.5 MB answer to 5.6 GB; found by a probe).
    #[test]
    fn a_long_cell_is_cut_and_pads_nothing() {
        let long = "n".repeat(70_000);
        let mut rows = vec![vec![long, "idle".to_owned(), "x".repeat(5_000)]];
        rows.extend((0..1_000).map(|i| vec![format!("s{i}"), "idle".into(), "-".into()]));
        let out = table(&["NAME", "STATE", "LAST"], &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1_002);
        assert!(lines[1].starts_with(&format!("{}…  idle", "n".repeat(MAX_CELL - 1))));
        assert!(
            lines[1].ends_with(&"x".repeat(5_000)),
            "the last column whole"
        );
        assert!(
            lines
                .iter()
                .skip(2)
                .all(|l| l.chars().count() <= MAX_CELL + 10)
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["Greeter".into(), "running".into()],
                vec!["X".into(), "idle".into()],
            ],
        );
        assert_eq!(t, "NAME     STATE\nGreeter  running\nX        idle\n");
    }

    #[test]
    fn bidirectional_controls_are_shown_not_obeyed() {
        // "\u{202e}RTL\u{202c}" displays as "LTR" where it is obeyed.
        let spoof = "job \u{202e}LTR\u{202c} \u{2066}x\u{2069}\u{200f}";
        assert_eq!(
            printable(spoof),
            r"job \u{202e}LTR\u{202c} \u{2066}x\u{2069}\u{200f}"
        );
        assert_eq!(printable_block("a\n\u{202e}b"), "a\n\\u{202e}b");
        // Other non-ASCII text is left as it is.
        assert_eq!(printable("Café ✓ 日本"), "Café ✓ 日本");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let hostile = "a\u{1b}[2J\u{1b}]0;TITLE\u{7}\r\u{8}\u{7f}\u{9b}\nb\tc";
        assert_eq!(
            printable(hostile),
            r"a\u{1b}[2J\u{1b}]0;TITLE\u{7}\r\u{8}\u{7f}\u{9b}\nb\tc"
        );
        assert_eq!(
            printable_block(hostile),
            "a\\u{1b}[2J\\u{1b}]0;TITLE\\u{7}\\r\\u{8}\\u{7f}\\u{9b}\nb\tc"
        );
        // Escaping twice changes nothing; plain text is not copied.
        assert_eq!(printable(&printable(hostile)), printable(hostile));
        assert!(matches!(printable("plain ünïcode"), Cow::Borrowed(_)));
        // A table is aligned on what is shown.
        let t = table(&["A", "B"], &[vec!["\u{1b}".into(), "x".into()]]);
        assert_eq!(t, "A       B\n\\u{1b}  x\n");
        assert_eq!(cell(&json!("\u{1b}[2J")), r"\u{1b}[2J");
        assert_eq!(cell(&json!({ "k": "\u{9b}" })), r#"{"k":"\u{9b}"}"#);
    }

    #[test]
    fn times_are_shortened() {
        let t = json!("2025-01-02T03:04:05.123456789Z");
        assert_eq!(time(&t, 0), "2025-01-02T03:04:05Z");
        assert_eq!(time(&t, 3), "2025-01-02T03:04:05.123Z");
        assert_eq!(
            time(&json!("2025-01-02T03:04:05Z"), 3),
            "2025-01-02T03:04:05Z"
        );
        assert_eq!(time(&json!(null), 3), "-");
    }

    #[test]
    fn schemas_list_their_properties() {
        let s = json!({ "properties": { "name": {}, "times": {} }, "required": ["name"] });
        assert_eq!(params(&s), "name*, times");
        assert_eq!(params(&json!(null)), "-");
        assert_eq!(params(&json!({ "type": "integer" })), "integer");
        assert_eq!(
            params(&json!({ "type": ["integer", "null"] })),
            "integer|null"
        );
    }
}
