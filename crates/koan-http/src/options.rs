//! Settings of the HTTP control plane (`koan.http` in configuration).

use std::net::SocketAddr;

use koan::{Config, Error, ErrorKind};
use serde::Deserialize;

/// Options of the HTTP control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Bearer token required by mutating routes and event streams. `None` leaves the
    /// API open, which is allowed on loopback only.
    pub token: Option<String>,
    /// Largest accepted request body, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Origins allowed by CORS; empty (the default) sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Most event streams open at once (default 64).
    pub max_sse_connections: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            body_limit: 64 * 1024,
            cors_origins: Vec::new(),
            max_sse_connections: 64,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    bind: Option<String>,
    token: Option<String>,
    body_limit_bytes: Option<usize>,
    cors_origins: Option<Vec<String>>,
    max_sse_connections: Option<usize>,
}

impl HttpOptions {
    /// Reads `koan.http` (`bind`, `token`, `body_limit_bytes`, `cors_origins`,
    /// `max_sse_connections`) and the `KOAN_HTTP_TOKEN` variable, which wins.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let s: Section = config.section("koan.http")?;
        let mut o = HttpOptions::default();
        if let Some(bind) = s.bind {
            o.bind = bind.parse().map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("`koan.http.bind` = `{bind}` is not an address ({e}); write e.g. `127.0.0.1:8080`"),
                )
            })?;
        }
        o.token = s.token.filter(|t| !t.is_empty());
        if let Ok(t) = std::env::var("KOAN_HTTP_TOKEN")
            && !t.is_empty()
        {
            o.token = Some(t);
        }
        if let Some(b) = s.body_limit_bytes {
            o.body_limit = b;
        }
        if let Some(c) = s.cors_origins {
            o.cors_origins = c;
        }
        if let Some(m) = s.max_sse_connections {
            o.max_sse_connections = m;
        }
        Ok(o)
    }

    /// Sets the token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the listen address.
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }
}
