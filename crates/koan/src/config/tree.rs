//! Layered configuration trees: keys matched without regard to case or separators
//! (`StartupTimeoutSeconds`, `startup_timeout_seconds` and `STARTUP_TIMEOUT_SECONDS` are
//! one key), and every leaf remembers the layer and the spelling it came from.

use std::collections::BTreeMap;

use serde_json::Value;

/// The identity of a key: lowercase, without `_`, `-`, `.` or spaces.
pub(crate) fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `RetentionDays`, `retentionDays`, `RETENTION_DAYS`, `CPUPercent` → `retention_days`,
/// `retention_days`, `retention_days`, `cpu_percent`.
pub(crate) fn snake(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if matches!(c, '-' | ' ' | '.') {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            continue;
        }
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a leaf came from: the layer (a file or "environment") and the key as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) source: String,
    pub(crate) key: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` in {}", self.key, self.source)
    }
}

/// A node of the merged tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Map(BTreeMap<String, (String, Node)>),
    Leaf(Value, Origin),
}

impl Node {
    pub(crate) fn empty() -> Node {
        Node::Map(BTreeMap::new())
    }

    /// Builds a node from a JSON value of one layer; `path` is the key path as written,
    /// `sep` joins it for display (`:` for JSON, as `appsettings.json` paths are
    /// usually written, `.` for TOML).
    /// Two keys of one map that name the same key (`interval_seconds` and
    /// `IntervalSeconds`) are a conflict, recorded in `conflicts`.
    pub(crate) fn from_value(
        value: Value,
        source: &str,
        path: &mut Vec<String>,
        (sep, conflicts): (&str, &mut Vec<String>),
    ) -> Node {
        match value {
            Value::Object(map) => {
                let mut out: BTreeMap<String, (String, Node)> = BTreeMap::new();
                for (k, v) in map {
                    path.push(k.clone());
                    let child = Node::from_value(v, source, path, (sep, &mut *conflicts));
                    path.pop();
                    let key = norm(&k);
                    if let Some((first, _)) = out.get(&key) {
                        let at = |name: &str| {
                            let mut p = path.clone();
                            p.push(name.to_owned());
                            p.join(sep)
                        };
                        conflicts.push(format!(
                            "`{}` and `{}` in {source} name the same key (keys match regardless of case, `_` and `-`): keep one",
                            at(first),
                            at(&k)
                        ));
                    }
                    merge_into(&mut out, key, k, child, conflicts);
                }
                Node::Map(out)
            }
            leaf => Node::Leaf(
                leaf,
                Origin {
                    source: source.to_owned(),
                    key: path.join(sep),
                },
            ),
        }
    }

    /// Lays `upper` over `self`: maps merge key by key, a value replaces a value. A
    /// value where a section is (`KOAN__BACKGROUND_SERVICES=5` over the file's
    /// section, which it wiped without a word), or a section where a value is, is a
    /// conflict, recorded in `conflicts`.
    pub(crate) fn overlay(&mut self, upper: Node, conflicts: &mut Vec<String>) {
        match (self, upper) {
            (Node::Map(lower), Node::Map(upper)) => {
                for (k, (spelling, node)) in upper {
                    merge_into(lower, k, spelling, node, conflicts);
                }
            }
            (slot @ Node::Leaf(..), upper @ Node::Leaf(..)) => *slot = upper,
            (slot, upper) => {
                conflicts.push(format!(
                    "{} is laid over {}: a value cannot replace a section, nor a section a value; set the section's keys one by one (e.g. `KOAN__BACKGROUND_SERVICES__ENABLED`)",
                    upper.describe(),
                    slot.describe()
                ));
                *slot = upper;
            }
        }
    }

    /// A value with where it came from, or a section with its sources.
    fn describe(&self) -> String {
        match self {
            Node::Leaf(v, o) => format!("the value `{v}` of {o}"),
            Node::Map(_) => {
                let mut sources = Vec::new();
                self.sources(&mut sources);
                format!("a section (from {})", sources.join(", "))
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m.get(&norm(key)).map(|(_, n)| n),
            Node::Leaf(..) => None,
        }
    }

    pub(crate) fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, k| node.get(k))
    }

    /// The entries of a map node: (normalized key, spelling, node).
    pub(crate) fn entries(&self) -> Vec<(&str, &str, &Node)> {
        match self {
            Node::Map(m) => m
                .iter()
                .map(|(k, (s, n))| (k.as_str(), s.as_str(), n))
                .collect(),
            Node::Leaf(..) => Vec::new(),
        }
    }

    /// The subtree as JSON with snake_case keys (for typed settings), and the first
    /// origin found in it (to name in errors).
    pub(crate) fn to_json(&self) -> (Value, Option<Origin>) {
        match self {
            Node::Leaf(v, o) => (v.clone(), Some(o.clone())),
            Node::Map(m) => {
                let mut origin = None;
                let mut obj = serde_json::Map::new();
                for (spelling, node) in m.values() {
                    let (v, o) = node.to_json();
                    origin = origin.or(o);
                    obj.insert(snake(spelling), v);
                }
                (Value::Object(obj), origin)
            }
        }
    }

    /// The subtree as JSON with its keys as written (for a service's settings,
    /// read through [`Folded`](super::folded::Folded)).
    pub(crate) fn to_json_as_written(&self) -> Value {
        match self {
            Node::Leaf(v, _) => v.clone(),
            Node::Map(m) => Value::Object(
                m.values()
                    .map(|(spelling, node)| (spelling.clone(), node.to_json_as_written()))
                    .collect(),
            ),
        }
    }

    /// Every source that contributed to this subtree.
    pub(crate) fn sources(&self, out: &mut Vec<String>) {
        match self {
            Node::Leaf(_, o) => {
                if !out.contains(&o.source) {
                    out.push(o.source.clone());
                }
            }
            Node::Map(m) => m.values().for_each(|(_, n)| n.sources(out)),
        }
    }
}

fn merge_into(
    map: &mut BTreeMap<String, (String, Node)>,
    key: String,
    spelling: String,
    node: Node,
    conflicts: &mut Vec<String>,
) {
    match map.get_mut(&key) {
        Some((_, existing)) => existing.overlay(node, conflicts),
        None => {
            map.insert(key, (spelling, node));
        }
    }
}

/// Reads an environment value: JSON when it parses (`false`, `7200`, `["en","fr"]`),
/// a plain string otherwise.
pub(crate) fn env_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_of_common_spellings() {
        assert_eq!(snake("RetentionDays"), "retention_days");
        assert_eq!(snake("retentionDays"), "retention_days");
        assert_eq!(snake("RETENTION_DAYS"), "retention_days");
        assert_eq!(snake("CPUPercent"), "cpu_percent");
        assert_eq!(snake("batch-size"), "batch_size");
        assert_eq!(
            norm("StartupTimeoutSeconds"),
            norm("STARTUP_TIMEOUT_SECONDS")
        );
    }
}
