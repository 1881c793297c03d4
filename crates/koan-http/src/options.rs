//! Settings of the HTTP control plane (`koan.http` in configuration).

use std::net::SocketAddr;
use std::time::Duration;

use koan::{Error, config::Config, error::ErrorKind};
use serde::Deserialize;

/// Options of the HTTP control plane.
///
/// Its `Debug` form never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Bearer token required by mutating routes, `/api` reads and event streams. `None` leaves the
    /// API open, which is allowed on loopback only.
    pub token: Option<String>,
    /// Largest accepted request body, in bytes (default 64 KiB).
    pub body_limit: usize,
    /// Origins allowed by CORS; empty (the default) sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Most event streams open at once (default 64).
    pub max_sse_connections: usize,
    /// How long a connection may take to send a complete request head — from when
    /// it opens, or from the end of its previous answer — before it is closed
    /// (default 10 s; `None` waits forever, which lets idle clients hold slots).
    pub header_read_timeout: Option<Duration>,
    /// Most connections served at once (default 1024). The listen backlog is as
    /// long; a connection beyond the cap is answered with a 503 as soon as its
    /// request head is in, and closed (up to 1024 such answers at once; past that a
    /// connection is closed without one). With a `token`, a request past the cap that
    /// carries it is served all the same, in a reserve of 32 more connections: the
    /// operator is not locked out by clients holding every slot without it.
    pub max_connections: usize,
    /// How long a client may take to send a request body, from the end of its head
    /// (default 10 s; `None` waits forever). A late body is answered with a 408.
    pub body_read_timeout: Option<Duration>,
    /// How long writing an answer may make no progress — a client that does not
    /// read what it asked for — before the connection is closed (default 30 s;
    /// `None` waits forever, which lets such clients hold slots).
    pub write_timeout: Option<Duration>,
    /// Set by [`load`](Self::load) and [`from_config`](Self::from_config): these
    /// options are what the configuration says. Without it, [`crate::bind`]
    /// refuses options that carry no token while one is configured
    /// (`KOAN_HTTP_TOKEN`, or `koan.http.token` in the configuration
    /// `Config::load` reads): they would serve an open control plane its operator
    /// believes closed. Set it on options built by hand to say they are meant as
    /// they are.
    pub from_configuration: bool,
}

/// The most connections `max_connections` or `max_sse_connections` may allow.
pub(crate) const MAX_CONNECTIONS: usize = 1_000_000;

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit", &self.body_limit)
            .field("cors_origins", &self.cors_origins)
            .field("max_sse_connections", &self.max_sse_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("from_configuration", &self.from_configuration)
            .finish()
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            body_limit: 64 * 1024,
            cors_origins: Vec::new(),
            max_sse_connections: 64,
            header_read_timeout: Some(Duration::from_secs(10)),
            max_connections: 1024,
            body_read_timeout: Some(Duration::from_secs(10)),
            write_timeout: Some(Duration::from_secs(30)),
            from_configuration: false,
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
    header_read_timeout: Option<String>,
    max_connections: Option<usize>,
    body_read_timeout: Option<String>,
    write_timeout: Option<String>,
}

impl HttpOptions {
    /// [`from_config`](Self::from_config) of the configuration
    /// [`Config::load`] reads (`koan.toml`, `appsettings.json`, `KOAN__…`), as
    /// `HostBuilder::load_config` reads it for the host.
    pub fn load() -> Result<Self, Error> {
        Self::from_config(&Config::load()?)
    }

    /// Reads `koan.http` (`bind`, `token`, `body_limit_bytes`, `cors_origins`,
    /// `max_sse_connections`, `header_read_timeout`, `body_read_timeout` and
    /// `write_timeout` — e.g.
    /// `"10s"`, `"0s"` for none —, `max_connections`) and the `KOAN_HTTP_TOKEN`
    /// variable, which wins.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let s: Section = config.section("koan.http")?;
        let mut o = HttpOptions {
            from_configuration: true,
            ..HttpOptions::default()
        };
        if let Some(bind) = s.bind {
            o.bind = bind.parse().map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("`koan.http.bind` = `{bind}` is not an address ({e}); write e.g. `127.0.0.1:8080`"),
                )
            })?;
        }
        let env_token = std::env::var("KOAN_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        if s.token.as_deref() == Some("") && env_token.is_none() {
            // `KOAN__HTTP__TOKEN=` laid over a file's token took it away: the plane
            // opened without a word (found by a probe). No token is no key at all.
            let from = config
                .origin("koan.http.token")
                .unwrap_or_else(|| "`koan.http.token`".to_owned());
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the HTTP token {from} is empty: remove the key (or the variable) to serve without a token, loopback only, or give it a value, e.g. the output of `openssl rand -hex 32`"
                ),
            ));
        }
        o.token = env_token.or(s.token);
        if let Some(b) = s.body_limit_bytes {
            o.body_limit = b;
        }
        if let Some(c) = s.cors_origins {
            o.cors_origins = c;
        }
        if let Some(m) = s.max_sse_connections {
            o.max_sse_connections = m;
        }
        if let Some(t) = s.header_read_timeout {
            o.header_read_timeout = optional_duration("header_read_timeout", &t)?;
        }
        if let Some(t) = s.body_read_timeout {
            o.body_read_timeout = optional_duration("body_read_timeout", &t)?;
        }
        if let Some(t) = s.write_timeout {
            o.write_timeout = optional_duration("write_timeout", &t)?;
        }
        if let Some(m) = s.max_connections {
            o.max_connections = m;
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks what the fields' types cannot: every CORS origin is one exact origin,
    /// and the token is one a client can send. [`serve`](crate::serve) calls it
    /// too, for options built in code.
    pub fn validate(&self) -> Result<(), Error> {
        // Each is a count of connections held at once: zero would refuse every one
        // (the event stream answered "0 event streams are open … close one"), and
        // past a million the semaphore that counts them panicked at start.
        for (key, n) in [
            ("max_connections", self.max_connections),
            ("max_sse_connections", self.max_sse_connections),
        ] {
            if !(1..=MAX_CONNECTIONS).contains(&n) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "`koan.http.{key}` = {n}: it must be 1 to {MAX_CONNECTIONS} (connections held at once)"
                    ),
                ));
            }
        }
        if self.token.as_deref() == Some("") {
            return Err(Error::new(
                ErrorKind::Config,
                "the HTTP token is empty: serve without one (`token: None`, loopback only) or give it a value, e.g. the output of `openssl rand -hex 32`",
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.starts_with('@')) {
            // koanctl reads `--token @file` from a file; the host reads its token as
            // text: `KOAN_HTTP_TOKEN=@/etc/koan/token` made the path the secret (a probe).
            return Err(Error::new(
                ErrorKind::Config,
                "the HTTP token (`koan.http.token` or KOAN_HTTP_TOKEN) starts with `@`: the host reads it as text, not as a file's name; give the token itself (e.g. `KOAN_HTTP_TOKEN=$(cat /etc/koan/token)`)",
            ));
        }
        if let Some(token) = &self.token
            && !token.bytes().all(|b| b.is_ascii_graphic())
        {
            // A client sends it in a header (`Authorization: Bearer <token>`), where
            // spaces around it are dropped and only visible ASCII is text: a token
            // with others would be refused to every client.
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the HTTP token (`koan.http.token` or KOAN_HTTP_TOKEN) has {}: no client could send it in `Authorization: Bearer <token>`; use visible ASCII only, e.g. the output of `openssl rand -hex 32`",
                    unsendable(token)
                ),
            ));
        }
        for origin in &self.cors_origins {
            if origin.trim() == "*" {
                return Err(Error::new(
                    ErrorKind::Config,
                    "`koan.http.cors_origins` contains `*`: a wildcard cannot be combined with the \
                     `Authorization` header the API needs; list each origin that may call it, \
                     e.g. `[\"https://ops.example.com\"]`",
                ));
            }
            if axum::http::HeaderValue::from_str(origin).is_err() || origin.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "`koan.http.cors_origins` entry {origin:?} is not an origin; write e.g. `https://ops.example.com`"
                    ),
                ));
            }
        }
        Ok(())
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

/// A duration setting where `"0s"` means none.
fn optional_duration(key: &str, text: &str) -> Result<Option<Duration>, Error> {
    let d = koan::schedule::parse_duration(text).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("`koan.http.{key}`: {}", e.message()),
        )
    })?;
    Ok((!d.is_zero()).then_some(d))
}

/// What in `token` no client could send, named without showing the token.
fn unsendable(token: &str) -> String {
    let Some((at, c)) = token.char_indices().find(|(_, c)| !c.is_ascii_graphic()) else {
        return "a character no client could send".to_owned();
    };
    let what = match c {
        '\r' => "a carriage return (`$(cat file)` of a file with CRLF line ends?)".to_owned(),
        '\n' => "a line break".to_owned(),
        ' ' | '\t' => "a space".to_owned(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        _ => "a non-ASCII character".to_owned(),
    };
    format!("{what} at byte {at}")
}

/// Where a token is configured that options without one would not apply: the
/// `KOAN_HTTP_TOKEN` variable, or `koan.http.token` in the configuration
/// [`Config::load`] reads. A program that serves `HttpOptions::default()` beside
/// such a token left the control plane open while its operator believed it closed
/// (found by a probe following the guide).
pub(crate) fn configured_token() -> Option<&'static str> {
    if std::env::var("KOAN_HTTP_TOKEN").is_ok_and(|t| !t.is_empty()) {
        return Some("KOAN_HTTP_TOKEN is set");
    }
    let config = Config::load().ok()?;
    let s: Section = config.section("koan.http").ok()?;
    s.token
        .is_some_and(|t| !t.is_empty())
        .then_some("`koan.http.token` is configured")
}
