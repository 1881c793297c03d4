//! Query strings, read with serde: each route names its parameters in a struct
//! (`#[serde(deny_unknown_fields)]`), so a parameter it does not take is a 400
//! `invalid_parameters` naming the ones it does; the route then checks the values.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query of a request as `T`.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query()).map(Params)
    }
}

/// A query (`None`: the URI has none) as `T`, as [`Params`] reads it.
pub(crate) fn parse<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| ApiError::bad_request("invalid_parameters", message(&e.to_string())))
}

/// serde's words for an unknown field, in the API's: "unknown query parameter `x`;
/// accepted: a, b". Other errors (a value a parameter refuses) keep serde's text.
fn message(serde: &str) -> String {
    let Some(rest) = serde.strip_prefix("unknown field `") else {
        return format!("query: {}", serde.escape_debug());
    };
    let (name, accepted) = rest.split_once('`').unwrap_or((rest, ""));
    let accepted = accepted
        .trim_start_matches(", ")
        .trim_start_matches("expected one of ")
        .trim_start_matches("expected ")
        .replace('`', "");
    let accepted = if accepted.is_empty() || accepted.starts_with("there are no fields") {
        "none".to_owned()
    } else {
        accepted
    };
    let hint = if name == "token" {
        " (the token goes in `Authorization: Bearer <token>`; only event streams read `?token=`)"
    } else {
        ""
    };
    format!(
        "unknown query parameter `{}`; accepted: {accepted}{hint}",
        name.escape_debug()
    )
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn unknown_parameters_are_named_with_the_accepted_ones() {
        assert_eq!(
            message("unknown field `bogus`, expected one of `priority`, `wait`"),
            "unknown query parameter `bogus`; accepted: priority, wait"
        );
        assert_eq!(
            message("unknown field `x`, expected `service`"),
            "unknown query parameter `x`; accepted: service"
        );
        assert_eq!(
            message("unknown field `x`, there are no fields"),
            "unknown query parameter `x`; accepted: none"
        );
        assert_eq!(
            message("unknown field `token`, there are no fields"),
            "unknown query parameter `token`; accepted: none (the token goes in `Authorization: Bearer <token>`; only event streams read `?token=`)"
        );
        assert_eq!(
            message("duplicate field `limit`"),
            "query: duplicate field `limit`"
        );
    }
}

/// A route that takes no query parameters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

/// A `?token=` where only the `Authorization` header is read: refused with where it
/// belongs instead of being ignored.
pub(crate) struct TokenInQuery;

impl<'de> Deserialize<'de> for TokenInQuery {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "pass the token as `Authorization: Bearer <token>`, not in the query (only event streams take `?token=`)",
        ))
    }
}

/// The value of a limit parameter: a whole number from 1 to `max`.
pub(crate) fn limit(key: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameters",
                format!("query parameter `{key}` must be a whole number from 1 to {max}"),
            )
        })
}
