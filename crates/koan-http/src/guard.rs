//! The tokenless mode's shield against browsers: without a token the API is meant
//! for loopback clients only, so a request a web page made a browser send — a
//! cross-site request (CSRF) or one sent to a name the attacker re-pointed at
//! 127.0.0.1 (DNS rebinding) — is refused with a 403 before it reaches a handler.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::http::{Method, StatusCode, Uri};

use crate::AppState;
use crate::error::ApiError;
use crate::headers::Seen;

/// Refuses, when no token is configured, a `Host` that is not a loopback name and a
/// request from another origin: an `Origin` that is not the request's own (its
/// `Host`) nor listed in `cors_origins`, or `Sec-Fetch-Site` `cross-site` or
/// `same-site` (another port of the same host is another origin: a page of any
/// local dev server drove the API before; seen in a probe). A top-level navigation
/// (a link to the dashboard) is let through: it carries no body and reads nothing
/// for the page that linked it; a frame's is not (a foreign page held event
/// streams open in frames).
pub(crate) fn same_site_only(
    state: &AppState,
    method: &Method,
    seen: &Seen<'_>,
) -> Result<(), ApiError> {
    if state.options.token.is_some() {
        return Ok(());
    }
    check(method, seen, &state.options.cors_origins)
}

fn check(method: &Method, seen: &Seen<'_>, allowed: &[String]) -> Result<(), ApiError> {
    let host = seen.host.and_then(|h| h.to_str().ok());
    if seen.host.is_some() && !host.is_some_and(is_loopback_authority) {
        tracing::debug!(host = ?seen.host, "refused a Host that is not a loopback name");
        return Err(forbidden(
            "without a token the API answers only to loopback names in `Host` (localhost, 127.x.x.x, [::1]); \
             configure `koan.http.token` to serve it under another name",
        ));
    }
    let origin = seen.origin.and_then(|v| v.to_str().ok());
    if let Some(origin) = origin
        && allowed.iter().any(|a| a == origin)
    {
        return Ok(());
    }
    let navigation = matches!(*method, Method::GET | Method::HEAD)
        && seen
            .fetch_mode
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"navigate"))
        && seen
            .fetch_dest
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"document"));
    if navigation {
        return Ok(());
    }
    let foreign_origin = seen
        .origin
        .is_some_and(|_| !origin.is_some_and(|o| is_own_origin(o, host)));
    let other_site = seen.fetch_site.is_some_and(|v| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"cross-site") || v.eq_ignore_ascii_case(b"same-site")
    });
    if foreign_origin || other_site {
        tracing::debug!(origin = ?origin, "refused a request from another origin");
        return Err(forbidden(
            "without a token the API answers only its own origin (a page it served): a request from \
             another origin (a foreign `Origin`, another port of this host, or `Sec-Fetch-Site: \
             cross-site`/`same-site`) is refused; list the origin in `koan.http.cors_origins` \
             to call it from there",
        ));
    }
    Ok(())
}

/// Whether `origin` is the request's own: `http(s)://` and the request's `Host`
/// (a loopback name, checked before), or a loopback origin when the request gave
/// no `Host` (HTTP/1.0).
fn is_own_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    match host {
        Some(host) => rest.eq_ignore_ascii_case(host),
        None => is_loopback_origin(origin),
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// `localhost`, `127.x.x.x` or `[::1]`, with an optional port (1 to 5 digits).
/// Split by hand rather than parsed as an `http` `Authority`, which copies the text
/// into a new buffer on every request (B7's profile: ≈ 1,300 instructions a call);
/// anything else — user info, a path, a second colon outside brackets — is refused.
fn is_loopback_authority(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inner, port)) => (&text[..inner.len() + 2], port),
            None => return false,
        },
        None => match text.split_once(':') {
            Some((host, _)) => (host, &text[host.len()..]),
            None => (text, ""),
        },
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && is_loopback_host(host)
}

fn is_loopback_host(host: &str) -> bool {
    // The usual spelling, without the address parse (B7's profile: ≈ 250 instructions).
    if host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<Ipv6Addr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// `http://` or `https://` and a loopback name, with an optional port.
fn is_loopback_origin(text: &str) -> bool {
    let Ok(uri) = text.parse::<Uri>() else {
        return false;
    };
    let web = matches!(uri.scheme_str(), Some("http" | "https"));
    web && uri
        .authority()
        .is_some_and(|a| is_loopback_authority(a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::{is_loopback_authority, is_loopback_origin, is_own_origin};

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "localhost.attacker.example",
            "10.0.0.1",
            "[::2]",
            "user@localhost",
            "",
            "127.0.0.1.nip.io",
            "localhost:",
            "localhost:80:80",
            "localhost:8o",
            "localhost:123456",
            "[::1]x",
            "[::1",
            "localhost/x",
            "127.0.0.1:80/",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(is_loopback_origin("https://127.0.0.1"));
        assert!(!is_loopback_origin("null"));
        assert!(!is_loopback_origin("https://attacker.example"));
        assert!(!is_loopback_origin("file://localhost"));
        assert!(is_own_origin(
            "http://localhost:8080",
            Some("LocalHost:8080")
        ));
        assert!(is_own_origin("https://127.0.0.1", Some("127.0.0.1")));
        assert!(!is_own_origin(
            "http://127.0.0.1:3000",
            Some("127.0.0.1:8080")
        ));
        assert!(!is_own_origin(
            "http://localhost:8080",
            Some("127.0.0.1:8080")
        ));
        assert!(!is_own_origin(
            "http://127.0.0.1:8080/x",
            Some("127.0.0.1:8080")
        ));
        assert!(!is_own_origin("null", Some("127.0.0.1:8080")));
        assert!(is_own_origin("http://[::1]:80", None));
    }
}
