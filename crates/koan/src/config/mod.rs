//! Layered configuration: built-in defaults < `koan.toml` (path from `KOAN_CONFIG`) <
//! `appsettings.json` < environment variables (`KOAN__A__B=value`).
//!
//! Keys match without regard to case or separators, so an `appsettings.json` in
//! PascalCase (`"Koan": { "BackgroundServices": { "StartupTimeoutSeconds": 120 } }`),
//! a TOML file (`[background_services] startup_timeout_seconds = 120`) and the environment
//! (`KOAN__BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS=120`) all set the same value.
//! Every value remembers where it came from, so a bad one is reported with its key
//! and its file or variable.
//!
//! # Why not `figment`
//!
//! The layering is ours (`tree.rs` merges, `services.rs` checks each key) because
//! figment cannot keep our error messages, which name the key as it was written, the
//! file or variable it came from, and what would be right. Tried with figment 0.10.19
//! (`toml`, `json`, `env`) and a provider folding PascalCase keys to snake_case, the same
//! bad `appsettings.json` value reads:
//!
//! ```text
//! ours:    configuration value `Koan:BackgroundServices:Services:DataCleanupService:IntervalSeconds`
//!          in appsettings.json is "soon", but it must be a whole number of seconds
//! figment: invalid type: found string "soon", expected u64 for key
//!          "default.koan.background_services.services.data_cleanup_service.interval_seconds"
//!          in appsettings.json JSON file
//! ```
//!
//! and `KOAN__BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS=-3` reads, from figment,
//! ``invalid value signed int `-3`, expected u64 for key
//! "KOAN.BACKGROUND_SERVICES.STARTUP_TIMEOUT_SECONDS" in `KOAN__` environment variable(s)``.
//! Folding must rename keys before figment merges them, and figment tags values by
//! provider, not by spelling, so the written key is gone; its `Env` provider does not
//! name the variable; and the checks with our wording (units, ranges, cron, known keys)
//! would stay hand-written anyway, so only the merge tree would go, for a second `toml`
//! (figment needs 0.8, we use 1) and five more crates. The full comparison is in
//! `docs/configuration.md`.

pub(crate) mod folded;
mod services;
mod tree;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) use services::{BackgroundServicesConfig, ServiceOverrides};
pub(crate) use tree::Origin;
use tree::{Node, env_value, norm};

use crate::error::{Error, ErrorKind, Result};

/// Merged configuration, ready for [`HostBuilder::config`](crate::host::HostBuilder::config).
#[derive(Debug, Clone)]
pub struct Config {
    root: Node,
    sources: Vec<String>,
    /// Where the layers contradict themselves or one another
    /// ([`check_conflicts`](Self::check_conflicts)).
    conflicts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: Node::empty(),
            sources: vec!["defaults".to_owned()],
            conflicts: Vec::new(),
        }
    }
}

impl Config {
    /// The usual layers: `koan.toml` (or the file `KOAN_CONFIG` names, which must
    /// exist), `appsettings.json` in the working directory when present, and the
    /// `KOAN__…` environment variables.
    pub fn load() -> Result<Config> {
        let mut b = Config::builder();
        match std::env::var_os("KOAN_CONFIG") {
            Some(path) => b = b.file(PathBuf::from(path))?,
            None if Path::new("koan.toml").exists() => b = b.file("koan.toml")?,
            None => {}
        }
        if Path::new("appsettings.json").exists() {
            b = b.file("appsettings.json")?;
        }
        Ok(b.env().build())
    }

    /// A builder to lay layers by hand (tests, embedded defaults).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The layers that were applied, lowest first.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The value at a dotted path (`koan.background_services.enabled`), as JSON with
    /// snake_case keys.
    pub fn get(&self, path: &str) -> Option<Value> {
        let keys: Vec<&str> = path.split('.').collect();
        self.root.path(&keys).map(|n| n.to_json().0)
    }

    /// Where the value at a dotted path was set, for a message about it: the key
    /// as written and the file or variable it came from (``` `KOAN__NATS__X` in
    /// environment variable KOAN__NATS__X ```); `None` when nothing sets it.
    pub fn origin(&self, path: &str) -> Option<String> {
        let keys: Vec<&str> = path.split('.').collect();
        let (_, origin) = self.root.path(&keys)?.to_json();
        origin.map(|o| o.to_string())
    }

    /// Deserializes the section at a dotted path (`koan.http`) into `T`; a mismatch is
    /// a `Config` error naming the section and its sources. An absent section gives
    /// `T::default()`.
    pub fn section<T: serde::de::DeserializeOwned + Default>(&self, path: &str) -> Result<T> {
        self.check_conflicts()?;
        let keys: Vec<&str> = path.split('.').collect();
        let Some(node) = self.root.path(&keys) else {
            return Ok(T::default());
        };
        let (json, _) = node.to_json();
        let mut sources = Vec::new();
        node.sources(&mut sources);
        crate::payload::from_json::<T>(json, &|| {
            format!(
                "configuration section `{path}` (from {})",
                sources.join(", ")
            )
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                e.message().replace("invalid parameters", "invalid value"),
            )
        })
    }

    pub(crate) fn node(&self, keys: &[&str]) -> Option<&Node> {
        self.root.path(keys)
    }

    /// Refuses a section under `koan` that nothing reads (a typo such as
    /// `Koan:BackgroundService` would otherwise be ignored silently), naming it and
    /// where it came from.
    pub(crate) fn check_sections(&self, known: &[String]) -> Result<()> {
        let Some(root) = self.node(&["koan"]) else {
            return Ok(());
        };
        for (key, spelling, node) in root.entries() {
            if !known.iter().any(|k| tree::norm(k) == key) {
                let mut sources = Vec::new();
                node.sources(&mut sources);
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "unknown configuration section `koan.{spelling}` (from {}); known sections: {} (an application's own section is declared with `HostBuilder::config_section`)",
                        sources.join(", "),
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn overlay(&mut self, source: String, node: Node) {
        self.root.overlay(node, &mut self.conflicts);
        self.sources.push(source);
    }

    /// Refuses layers that contradict themselves or one another (the first such
    /// conflict): two spellings of one key in a file, a value laid over a section.
    /// The host's `build()` checks it, and so does [`section`](Self::section).
    pub(crate) fn check_conflicts(&self) -> Result<()> {
        match self.conflicts.first() {
            Some(c) => Err(Error::new(ErrorKind::Config, format!("configuration: {c}"))),
            None => Ok(()),
        }
    }
}

/// Lays configuration layers, lowest first.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

/// `KOAN_BACKGROUND_SERVICES__…`: a variable of one of koan's sections one
/// underscore short (`KOAN_ENV`, `KOAN_CONFIG` and `KOAN_HTTP_TOKEN` have no
/// `__`; another program's `KOAN_X__Y` is not koan's business).
fn misses_an_underscore(k: &str) -> bool {
    const SECTIONS: [&str; 3] = ["background_services", "http", "nats"];
    let Some(rest) = k
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("KOAN_"))
        .map(|_| &k[5..])
        .filter(|rest| !rest.starts_with('_'))
    else {
        return false;
    };
    rest.split_once("__")
        .is_some_and(|(section, _)| SECTIONS.iter().any(|s| norm(s) == norm(section)))
}

fn parse_error(source: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("cannot read configuration {source}: {e}"),
    )
}

/// A file's root is its `koan` section when it has one (`"Koan": {…}` in any case);
/// otherwise the whole file is that section (a `koan.toml`).
fn rooted(node: Node) -> Node {
    if node.get("koan").is_some() {
        return node;
    }
    let mut root = std::collections::BTreeMap::new();
    root.insert("koan".to_owned(), ("koan".to_owned(), node));
    Node::Map(root)
}

impl ConfigBuilder {
    /// Adds a `.toml` or `.json` file by extension. A missing file is an error.
    pub fn file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| parse_error(&path.display().to_string(), e))?;
        let name = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => self.json(&name, &text),
            Some("toml") => self.toml(&name, &text),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("configuration file {name}: unknown format; use a `.toml` or `.json` file"),
            )),
        }
    }

    /// Adds TOML text, named `source` in messages.
    pub fn toml(mut self, source: &str, text: &str) -> Result<Self> {
        let value: Value = toml::from_str(text).map_err(|e| parse_error(source, e))?;
        let node = Node::from_value(
            value,
            source,
            &mut Vec::new(),
            (".", &mut self.config.conflicts),
        );
        self.config.overlay(source.to_owned(), rooted(node));
        Ok(self)
    }

    /// Adds JSON text, named `source` in messages.
    pub fn json(mut self, source: &str, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| parse_error(source, e))?;
        let node = Node::from_value(
            value,
            source,
            &mut Vec::new(),
            (":", &mut self.config.conflicts),
        );
        self.config.overlay(source.to_owned(), rooted(node));
        Ok(self)
    }

    /// Adds the process's `KOAN__…` environment variables.
    pub fn env(self) -> Self {
        self.env_vars(std::env::vars())
    }

    /// Adds `KOAN__…` variables from `vars` (`__` separates levels).
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut layer = Node::empty();
        let mut any = false;
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            // `KOAN_BACKGROUND_SERVICES__…`: one underscore short, it was dropped
            // without a word (a probe); refused as a misspelt key is.
            if let Some(after) = k.get(5..).filter(|_| misses_an_underscore(k)) {
                self.config.conflicts.push(format!(
                    "environment variable {k} is not read: configuration variables begin with `KOAN__` (two underscores), e.g. `KOAN__{after}`"
                ));
                continue;
            }
            // `KOAN__…` in any case, so `Koan__…` (PascalCase sections) works too.
            let Some(rest) = k
                .get(..6)
                .filter(|p| p.eq_ignore_ascii_case("KOAN__"))
                .map(|_| &k[6..])
            else {
                continue;
            };
            let mut keys: Vec<&str> = vec!["koan"];
            keys.extend(rest.split("__").filter(|s| !s.is_empty()));
            let mut node = Node::Leaf(
                env_value(v),
                Origin {
                    source: format!("environment variable {k}"),
                    key: k.to_owned(),
                },
            );
            for key in keys.iter().rev() {
                let mut m = std::collections::BTreeMap::new();
                m.insert(norm(key), ((*key).to_owned(), node));
                node = Node::Map(m);
            }
            layer.overlay(node, &mut self.config.conflicts);
            any = true;
        }
        if any {
            self.config.overlay("environment".to_owned(), layer);
        }
        self
    }

    /// The merged configuration.
    pub fn build(self) -> Config {
        self.config
    }
}
