//! Talking to the control plane over HTTP (what a command's failure is: `failure.rs`).

use std::future::Future;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use crate::answers::{require, require_list};
use crate::deadline;
use crate::failure::text_error;
pub(crate) use crate::failure::{Failure, api_error, check};
use crate::output::printable;

/// The largest answer koanctl reads: 16 MiB (a page of jobs is far smaller).
pub(crate) const MAX_BODY: usize = 16 << 20;

/// What a request that outlived `--request-timeout` says to do.
pub(crate) const DEADLINE_HINT: &str = "the host took the request but did not answer; \
                             allow longer with --request-timeout or KOAN_REQUEST_TIMEOUT";

/// An answer read whole: its status, headers and JSON body (`null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) head: HeaderMap,
    pub(crate) body: Value,
}

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

/// The deepest cause of an error: for a refused connection, "Connection refused"
/// rather than "error sending request".
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

    /// The URL as the user wrote it (`--url`), for messages.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
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
        let answer = self
            .send_within(url, req, self.deadline, DEADLINE_HINT)
            .await?;
        Ok((answer.status, answer.body))
    }

    /// [`send`](Self::send) giving up after `limit`, with `hint`, and keeping the
    /// answer's headers.
    pub(crate) async fn send_within(
        &self,
        url: &Url,
        req: RequestBuilder,
        limit: Duration,
        hint: &str,
    ) -> Result<Answer, Failure> {
        let (status, head, bytes) = Self::within(url, limit, hint, async {
            let resp = self.open(url, req).await?;
            let (status, head) = (resp.status(), resp.headers().clone());
            Ok((status, head, self.read_body(url, resp).await?))
        })
        .await?;
        let answer = |body| Answer { status, head, body };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(answer(Value::Null));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(answer(v)),
            Err(_) if !status.is_success() => Ok(answer(text_error(&bytes))),
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
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| text_error(&bytes));
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

#[cfg(test)]
mod tests {
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
}
