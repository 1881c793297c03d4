use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The environment a host runs in (`KOAN_ENV`): it decides which services run
/// (`run_in_development`, `run_in_production`, `run_in_testing`, or a `run_in` list of
/// any names such as `staging`).
///
/// Unset means [`Environment::PRODUCTION`]: a service meant only for
/// development never runs in production by accident.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Environment(Cow<'static, str>);

impl Default for Environment {
    fn default() -> Self {
        Environment::PRODUCTION
    }
}

impl Environment {
    /// Local development.
    pub const DEVELOPMENT: Environment = Environment(Cow::Borrowed("development"));
    /// Production (the default).
    pub const PRODUCTION: Environment = Environment(Cow::Borrowed("production"));
    /// Automated tests.
    pub const TESTING: Environment = Environment(Cow::Borrowed("testing"));

    /// The environment called `name`: any name of 1 to 64 letters, digits, `-`, `_`
    /// or `.`, matched regardless of case; `dev`, `prod` and `test` are the three
    /// well-known ones.
    pub fn new(name: &str) -> Result<Self> {
        let trimmed = name.trim();
        let valid = !trimmed.is_empty()
            && trimmed.len() <= 64
            && trimmed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "KOAN_ENV=`{}` is not an environment name; use 1 to 64 letters, digits, `-`, `_` or `.` (e.g. development, staging, production)",
                    name.escape_debug()
                ),
            ));
        }
        let lower = trimmed.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "development" | "dev" => Environment::DEVELOPMENT,
            "production" | "prod" => Environment::PRODUCTION,
            "testing" | "test" => Environment::TESTING,
            _ => Environment(Cow::Owned(lower)),
        })
    }

    /// Reads `KOAN_ENV`, falling back to `DOTNET_ENVIRONMENT`, then
    /// `ASPNETCORE_ENVIRONMENT`, when it is unset or empty; all unset or empty means
    /// production.
    pub fn from_env() -> Result<Self> {
        for var in ["KOAN_ENV", "DOTNET_ENVIRONMENT", "ASPNETCORE_ENVIRONMENT"] {
            if let Ok(v) = std::env::var(var)
                && !v.trim().is_empty()
            {
                return Environment::new(&v);
            }
        }
        Ok(Environment::PRODUCTION)
    }

    /// Warns when this environment is none of the three well-known ones and no
    /// service's `run_in` (`lists`) names it, with the name meant when one is
    /// within two letters: `KOAN_ENV=prodution` disabled every production service
    /// with an info line alone (found by a probe).
    pub(crate) fn warn_if_unnamed<'a>(&self, lists: impl Iterator<Item = &'a [String]>) {
        if let Some(words) = self.unnamed(lists) {
            tracing::warn!(environment = %self.0, "{words}");
        }
    }

    /// What [`warn_if_unnamed`](Self::warn_if_unnamed) says, if anything.
    fn unnamed<'a>(&self, lists: impl Iterator<Item = &'a [String]>) -> Option<String> {
        let well_known = [Self::DEVELOPMENT, Self::PRODUCTION, Self::TESTING];
        if well_known.contains(self) {
            return None;
        }
        let mut named: Vec<String> = well_known.iter().map(|e| e.0.to_string()).collect();
        for name in lists.flatten() {
            let name = name.to_ascii_lowercase();
            if name == self.0 {
                return None;
            }
            if !named.contains(&name) {
                named.push(name);
            }
        }
        let meant = named
            .iter()
            .find(|n| strsim::levenshtein(n, &self.0) <= 2)
            .map_or_else(String::new, |n| format!("; did you mean `{n}`?"));
        Some(format!(
            "the environment `{}` (KOAN_ENV) is named by no service's `run_in` nor is one of development, production, testing: services gated to an environment do not run{meant} (named: {})",
            self.0,
            named.join(", ")
        ))
    }

    /// The name, lowercase: `development`, `production`, `testing`, `staging`, ….
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Environment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Environment::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_no_service_names_is_said_with_the_name_meant() -> Result<()> {
        let lists = [vec!["staging".to_owned()], vec!["Production".to_owned()]];
        let said = Environment::new("prodution")?
            .unnamed(lists.iter().map(Vec::as_slice))
            .expect("said");
        assert!(
            said.contains("`prodution` (KOAN_ENV)") && said.contains("did you mean `production`?"),
            "{said}"
        );
        let staging = Environment::new("Staging")?;
        assert_eq!(staging.unnamed(lists.iter().map(Vec::as_slice)), None);
        assert_eq!(Environment::DEVELOPMENT.unnamed(std::iter::empty()), None);
        let far = Environment::new("qa")?
            .unnamed(std::iter::empty())
            .expect("said");
        assert!(!far.contains("did you mean"), "{far}");
        Ok(())
    }
}
