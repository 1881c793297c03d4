//! The request headers admission reads, found in one pass over the `HeaderMap`.
//!
//! B7's profile: the same-site guard's four look-ups and the body's four (each a hash
//! of the name and a probe) cost ≈ 1,550 instructions a request; a request carries a
//! handful of headers, and comparing a name with a known one is an integer compare for
//! the standard names and a short byte compare for the others.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

// Named once: a `&str` name is parsed on every look-up.
pub(crate) static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
pub(crate) static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
pub(crate) static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

/// The first value of each header admission reads (what `HeaderMap::get` answers).
#[derive(Default)]
pub(crate) struct Seen<'a> {
    pub(crate) host: Option<&'a HeaderValue>,
    pub(crate) origin: Option<&'a HeaderValue>,
    pub(crate) fetch_mode: Option<&'a HeaderValue>,
    pub(crate) fetch_site: Option<&'a HeaderValue>,
    pub(crate) fetch_dest: Option<&'a HeaderValue>,
    pub(crate) content_type: Option<&'a HeaderValue>,
    pub(crate) content_length: Option<&'a HeaderValue>,
    pub(crate) content_encoding: Option<&'a HeaderValue>,
    pub(crate) transfer_encoding: bool,
}

impl<'a> Seen<'a> {
    /// One pass over `headers`. `HeaderMap::iter` yields each name's first value
    /// before its others, so keeping the first seen is `get`'s answer.
    pub(crate) fn scan(headers: &'a HeaderMap) -> Self {
        let mut seen = Seen::default();
        for (name, value) in headers {
            let slot = if name == header::HOST {
                &mut seen.host
            } else if name == header::CONTENT_TYPE {
                &mut seen.content_type
            } else if name == header::CONTENT_LENGTH {
                &mut seen.content_length
            } else if name == header::ORIGIN {
                &mut seen.origin
            } else if name == header::CONTENT_ENCODING {
                &mut seen.content_encoding
            } else if name == header::TRANSFER_ENCODING {
                seen.transfer_encoding = true;
                continue;
            } else if name == SEC_FETCH_MODE {
                &mut seen.fetch_mode
            } else if name == SEC_FETCH_SITE {
                &mut seen.fetch_site
            } else if name == SEC_FETCH_DEST {
                &mut seen.fetch_dest
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_answers_as_get_does() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("localhost"));
        h.append(header::HOST, HeaderValue::from_static("attacker.example"));
        h.append(header::ORIGIN, HeaderValue::from_static("http://localhost"));
        h.append("x-other", HeaderValue::from_static("1"));
        h.append(&SEC_FETCH_SITE, HeaderValue::from_static("cross-site"));
        h.append(&SEC_FETCH_MODE, HeaderValue::from_static("navigate"));
        h.append(&SEC_FETCH_DEST, HeaderValue::from_static("iframe"));
        h.append(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("x"));
        let s = Seen::scan(&h);
        assert_eq!(s.host, h.get(header::HOST));
        assert_eq!(s.origin, h.get(header::ORIGIN));
        assert_eq!(s.fetch_site, h.get(&SEC_FETCH_SITE));
        assert_eq!(s.fetch_mode, h.get(&SEC_FETCH_MODE));
        assert_eq!(s.fetch_dest, h.get(&SEC_FETCH_DEST));
        assert_eq!(s.content_type, h.get(header::CONTENT_TYPE));
        assert_eq!(s.content_length, h.get(header::CONTENT_LENGTH));
        assert_eq!(s.content_encoding, h.get(header::CONTENT_ENCODING));
        assert!(s.transfer_encoding);
        let empty = HeaderMap::new();
        let s = Seen::scan(&empty);
        assert!(s.host.is_none() && s.origin.is_none() && !s.transfer_encoding);
    }
}
