use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The environment a host runs in; drives the `run_in_*` gates (`KOAN_ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local development (the default).
    #[default]
    Development,
    /// Production.
    Production,
    /// Automated tests.
    Testing,
}

impl Environment {
    /// Reads `KOAN_ENV`; unset means development, an unknown value is a `Config` error.
    pub fn from_env() -> Result<Self> {
        match std::env::var("KOAN_ENV") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Environment::Development),
        }
    }

    /// `development`, `production` or `testing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
            Environment::Testing => "testing",
        }
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
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Environment::Development),
            "production" | "prod" => Ok(Environment::Production),
            "testing" | "test" => Ok(Environment::Testing),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "KOAN_ENV=`{s}` is not an environment; use development, production or testing"
                ),
            )),
        }
    }
}
