//! Talking to the control plane over HTTP, and what can go wrong doing so.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};

use crate::answers::{require, require_list};
use crate::deadline;
use crate::output::printable;

/// The largest answer koanctl reads: 16 MiB (a page of jobs is far smaller).
pub(crate) const MAX_BODY: usize = 16 << 20;

/// What a request that outlived `--request-timeout` says to do.
pub(crate) const DEADLINE_HINT: &str = "the host took the request but did not answer; \
                             allow longer with --request-timeout or KOAN_REQUEST_TIMEOUT";

/// Why a command failed, which also decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad local input: an invalid `--params`, an unreadable file, a malformed URL.
    Input(String),
    /// The server answered with an error status.
    Api {
        /// The error kind from the body (`unknown_service`, …).
        kind: String,
        /// The message from the body.
        message: String,
        /// The error document `--json` prints on stdout: the server's when it names
        /// an `error` kind, else `{"error": kind, "message": message}`; `None` when
        /// the answer is printed already (an unhealthy host's health document).
        document: Option<Value>,
    },
    /// The server could not be reached, or the connection broke.
    Connect {
        /// The URL that was tried.
        url: String,
        /// The underlying cause.
        detail: String,
    },
    /// The server was reached but let koanctl down: no answer within the deadline, an
    /// event stream gone quiet or closed. The whole message.
    Stalled(String),
    /// Anything else: an answer that is not what the API promises.
    Other(String),
}

impl Failure {
    /// The process exit code of this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) => 2,
            Failure::Api { .. } => 3,
            Failure::Connect { .. } | Failure::Stalled(_) => 4,
            Failure::Other(_) => 1,
        }
    }
}

/// The most characters of a server's error message printed as text.
pub(crate) const MAX_MESSAGE: usize = 2_000;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Input(m) | Failure::Stalled(m) | Failure::Other(m) => f.write_str(m),
            // The server's words, kept to one line of plain text and cut at
            // `MAX_MESSAGE` characters (`--json` has them whole): a 15 MB message
            // went to the terminal whole (found by a probe).
            Failure::Api { kind, message, .. } => {
                let shown = printable(message);
                let n = shown.chars().count();
                if n <= MAX_MESSAGE {
                    return write!(f, "{}: {shown}", printable(kind));
                }
                let cut: String = shown.chars().take(MAX_MESSAGE).collect();
                write!(
                    f,
                    "{}: {cut}… ({n} characters; --json has them all)",
                    printable(kind)
                )
            }
            Failure::Connect { url, detail } => write!(
                f,
                "cannot reach the koan control plane at {url}: {detail}\n\
                 hint: is the host running? point koanctl at it with --url or KOAN_URL"
            ),
        }
    }
}

impl std::error::Error for Failure {}

/// A client of one control plane.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    /// The URL as the user wrote it, for messages.
    shown: String,
    token: Option<String>,
    /// How long a request may take, answer read included (`--request-timeout`).
    deadline: Duration,
}

/// The deepest cause of an error: for a refused connection, "Connection refused"
/// rather than "error sending request".
/// Whether an error's root cause is the HTTP client's word for an answer it could
/// not parse.
fn not_http(detail: &str) -> bool {
    [
        "invalid HTTP",
        "message head is too large",
        "invalid header",
        "invalid status",
    ]
    .iter()
    .any(|p| detail.contains(p))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Client {
    /// A client of the control plane at `url`, sending `token` when there is one, and
    /// giving up on an answer after `deadline`.
    pub(crate) fn new(
        url: &str,
        token: Option<String>,
        deadline: Duration,
    ) -> Result<Client, Failure> {
        let base = Url::parse(url).map_err(|e| {
            Failure::Input(format!(
                "`{url}` is not a URL ({e}); write e.g. `http://127.0.0.1:8080` in --url or KOAN_URL"
            ))
        })?;
        if base.scheme() != "http" {
            return Err(Failure::Input(format!(
                "`{url}`: koanctl speaks plain `http://` only (put a TLS proxy's local end in --url)"
            )));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(Failure::Input(format!("`{url}` has no host")));
        }
        refuse_extras(&base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A redirect is refused, never followed: following one would turn a POST
            // into a GET and show another host's answer as this one's.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("koanctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            shown: url.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            deadline,
        })
    }

    /// How long a request may take (`--request-timeout`).
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The URL of `segments` under the base, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to `segments`, for messages: `GET http://host/api/services`.
    pub(crate) fn what(&self, method: &str, segments: &[&str]) -> String {
        format!("{method} {}", self.url(segments))
    }

    /// A request to `url`, with the token.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Maps a transport error to a [`Failure`].
    fn transport(&self, url: &Url, e: &reqwest::Error) -> Failure {
        if e.is_builder() {
            return Failure::Input(format!(
                "cannot build a request to {url}: {}",
                root_cause(e)
            ));
        }
        let detail = root_cause(e);
        // Reached, but what came back is not HTTP (another server on the port, a
        // proxy's garbage): not "cannot reach … is the host running?", exit 4,
        // which sent an operator looking for a stopped host (found by a probe).
        if !e.is_connect() && !e.is_timeout() && not_http(&detail) {
            return Failure::Other(format!(
                "{} answered with something that is not HTTP ({detail}): does --url point at a koan host?",
                self.shown
            ));
        }
        Failure::Connect {
            url: self.shown.clone(),
            detail,
        }
    }

    /// Sends `req` (to `url`) and answers with the response, its body still to read;
    /// a redirect is a [`Failure::Other`].
    async fn open(&self, url: &Url, req: RequestBuilder) -> Result<Response, Failure> {
        let resp = req.send().await.map_err(|e| self.transport(url, &e))?;
        if resp.status().is_redirection() {
            return Err(redirected(url, &resp));
        }
        Ok(resp)
    }

    /// The body of `resp` (from `url`), refused past [`MAX_BODY`].
    async fn read_body(&self, url: &Url, mut resp: Response) -> Result<Vec<u8>, Failure> {
        let too_large = || {
            Failure::Other(format!(
                "the answer from {url} is larger than {} MiB, the most koanctl reads",
                MAX_BODY >> 20
            ))
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(url, &e))? {
            if chunk.len() > MAX_BODY - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Runs `work` (a request to `url`), or gives up after `limit` with a
    /// [`Failure::Stalled`] saying so, and `hint`.
    async fn within<T>(
        url: &Url,
        limit: Duration,
        hint: &str,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(Failure::Stalled(format!(
                "no answer from {url} within {}\nhint: {hint}",
                deadline::show(limit)
            )))
        })
    }

    /// Sends `req` and returns the status and the JSON body (`null` when empty), within
    /// the deadline. A body that is not JSON is an error on success statuses, and
    /// becomes `{"error": "http_<status>", "message": <text>}` on error statuses.
    pub(crate) async fn send(
        &self,
        url: &Url,
        req: RequestBuilder,
    ) -> Result<(StatusCode, Value), Failure> {
        self.send_within(url, req, self.deadline, DEADLINE_HINT)
            .await
    }

    /// [`send`](Self::send) giving up after `limit`, with `hint`.
    pub(crate) async fn send_within(
        &self,
        url: &Url,
        req: RequestBuilder,
        limit: Duration,
        hint: &str,
    ) -> Result<(StatusCode, Value), Failure> {
        let (status, bytes) = Self::within(url, limit, hint, async {
            let resp = self.open(url, req).await?;
            let status = resp.status();
            Ok((status, self.read_body(url, resp).await?))
        })
        .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok((status, v)),
            Err(_) if !status.is_success() => Ok((status, text_error(status, &bytes))),
            Err(e) => Err(Failure::Other(format!(
                "{url} answered {status} with a body that is not JSON ({e})"
            ))),
        }
    }

    /// GETs `segments` and returns the JSON body of a success, an object with every
    /// field of `fields` ([`require`]).
    pub(crate) async fn get(&self, segments: &[&str], fields: &[&str]) -> Result<Value, Failure> {
        let url = self.url(segments);
        let req = self.request(Method::GET, url.clone());
        let (status, body) = self.send(&url, req).await?;
        let body = check(status, body)?;
        require(&body, fields, &format!("GET {url}"))?;
        Ok(body)
    }

    /// GETs `segments` and returns the JSON body of a success, a list whose items
    /// each have `fields` ([`require_list`]).
    pub(crate) async fn get_list(
        &self,
        segments: &[&str],
        fields: &[&str],
    ) -> Result<Value, Failure> {
        let url = self.url(segments);
        let req = self.request(Method::GET, url.clone());
        let (status, body) = self.send(&url, req).await?;
        let body = check(status, body)?;
        require_list(&body, None, fields, &format!("GET {url}"))?;
        Ok(body)
    }

    /// Opens the event stream at `url`: its answer's head comes within the deadline.
    pub(crate) async fn stream(&self, url: &Url) -> Result<Response, Failure> {
        let req = self
            .request(Method::GET, url.clone())
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let hint = DEADLINE_HINT;
        let resp = Self::within(url, self.deadline, hint, self.open(url, req)).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = Self::within(url, self.deadline, hint, self.read_body(url, resp)).await?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| text_error(status, &bytes));
        Err(api_error(status, &body))
    }

    /// Maps an error while reading a body to a [`Failure`].
    pub(crate) fn broken(&self, url: &Url, e: &reqwest::Error) -> Failure {
        self.transport(url, e)
    }
}

/// The failure a redirect (a 3xx answer from `url`) stands for: koanctl follows none.
fn redirected(url: &Url, resp: &Response) -> Failure {
    let to = match resp.headers().get(LOCATION) {
        Some(loc) => format!(
            "to `{}`",
            printable(&String::from_utf8_lossy(loc.as_bytes()))
        ),
        None => "without a Location".to_owned(),
    };
    Failure::Other(format!(
        "{url} answered {} {to}; koanctl does not follow redirects\n\
         hint: pass the host that serves the koan API in --url (or KOAN_URL)",
        resp.status()
    ))
}

/// Refuses what a base URL may carry but koanctl must not send: a user name or
/// password (reqwest would send Basic authentication, not the token) and a query or
/// fragment (which every request would carry).
fn refuse_extras(base: &Url) -> Result<(), Failure> {
    let mut plain = base.clone();
    plain.set_query(None);
    plain.set_fragment(None);
    // Cannot fail on an `http` URL with a host.
    let _ = plain.set_username("");
    let _ = plain.set_password(None);
    if !base.username().is_empty() || base.password().is_some() {
        return Err(Failure::Input(format!(
            "the URL (--url or KOAN_URL) carries a user name or password, which koanctl \
             would send as Basic authentication; the control plane takes a bearer token: \
             give `{plain}` as the URL and the token in --token or KOAN_TOKEN"
        )));
    }
    if let Some(q) = base.query() {
        return Err(Failure::Input(format!(
            "the URL `{base}` (--url or KOAN_URL) has a query (`?{q}`), which every \
             request would carry; give the base URL only, e.g. `{plain}`, and options \
             as koanctl's flags"
        )));
    }
    if base.fragment().is_some() {
        return Err(Failure::Input(format!(
            "the URL `{base}` (--url or KOAN_URL) has a fragment (`#…`), which means \
             nothing to the control plane; give the base URL only, e.g. `{plain}`"
        )));
    }
    Ok(())
}

/// The error body standing for an error answer that is not JSON: its text, cut.
fn text_error(status: StatusCode, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.trim().chars().take(500).collect();
    json!({ "error": format!("http_{}", status.as_u16()), "message": text })
}

/// The body of a success, or the [`Failure`] an error status stands for.
pub(crate) fn check(status: StatusCode, body: Value) -> Result<Value, Failure> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(api_error(status, &body))
    }
}

/// The [`Failure::Api`] of an error answer `{ "error": kind, "message": … }`.
pub(crate) fn api_error(status: StatusCode, body: &Value) -> Failure {
    let kind = body
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let reason = status.canonical_reason().unwrap_or("error");
            format!("the server answered {} {reason}", status.as_u16())
        });
    let document = if body.get("error").is_some_and(Value::is_string) {
        body.clone()
    } else {
        json!({ "error": kind, "message": message })
    };
    Failure::Api {
        kind,
        message,
        document: Some(document),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn segments_are_encoded_under_the_base_path() -> Result<(), Failure> {
        let c = Client::new("http://h:1/koan/", None, Duration::from_secs(1))?;
        assert_eq!(
            c.url(&["api", "services", "a b/c"]).as_str(),
            "http://h:1/koan/api/services/a%20b%2Fc"
        );
        let c = Client::new("http://h:1", None, Duration::from_secs(1))?;
        assert_eq!(c.url(&["health"]).as_str(), "http://h:1/health");
        Ok(())
    }

    #[test]
    fn bad_urls_are_input_errors() {
        for url in [
            "nope",
            "https://h",
            "ftp://h/",
            "http://u:pw@h/",
            "http://u@h/",
            "http://h/?x=1",
            "http://h/#top",
        ] {
            let made = Client::new(url, None, Duration::from_secs(1));
            assert!(matches!(made, Err(Failure::Input(_))), "{url}: {made:?}");
        }
    }

    #[test]
    fn error_bodies_become_api_failures() {
        let f = api_error(
            StatusCode::NOT_FOUND,
            &json!({ "error": "unknown_service", "message": "no service `x`" }),
        );
        assert_eq!(f.to_string(), "unknown_service: no service `x`");
        assert_eq!(f.exit_code(), 3);
        let f = api_error(StatusCode::BAD_GATEWAY, &json!(null));
        assert_eq!(
            f.to_string(),
            "http_502: the server answered 502 Bad Gateway"
        );
        // A long message is cut when shown as text; the document keeps it whole.
        let long = "m".repeat(1_000_000);
        let f = api_error(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "invalid_parameters", "message": long }),
        );
        let text = f.to_string();
        assert!(text.len() < MAX_MESSAGE + 200, "{}", text.len());
        assert!(text.ends_with("… (1000000 characters; --json has them all)"));
        let Failure::Api { document, .. } = f else {
            panic!("an API failure")
        };
        assert_eq!(
            document.map(|d| d["message"].as_str().map(str::len)),
            Some(Some(1_000_000))
        );
    }
}
