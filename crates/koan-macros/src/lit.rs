//! Literal arguments of the attributes: strings, lists, booleans, integers and
//! durations, each with an error that points at the token and shows the right form.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, UnOp};

pub(crate) fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

pub(crate) fn lit_str(expr: &Expr, what: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(err(
            other.span(),
            format!("`{what}` takes a string literal, e.g. `{what} = \"…\"`"),
        )),
    }
}

/// `["a", "b"]`: a non-empty list of non-empty string literals.
pub(crate) fn lit_str_list(expr: &Expr, what: &str) -> syn::Result<Vec<LitStr>> {
    let hint = format!(
        "`{what}` takes a list of environment names, e.g. `{what} = [\"staging\", \"production\"]`"
    );
    let Expr::Array(list) = expr else {
        return Err(err(expr.span(), hint));
    };
    if list.elems.is_empty() {
        return Err(err(
            expr.span(),
            format!("{hint}; an empty list would never run"),
        ));
    }
    list.elems
        .iter()
        .map(|e| match lit_str(e, what) {
            Ok(s) if !s.value().trim().is_empty() => Ok(s),
            _ => Err(err(e.span(), hint.clone())),
        })
        .collect()
}

pub(crate) fn lit_bool(expr: &Expr, what: &str) -> syn::Result<bool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(err(
            other.span(),
            format!("`{what}` takes `true` or `false`"),
        )),
    }
}

pub(crate) fn lit_int(expr: &Expr, what: &str) -> syn::Result<i64> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i
            .base10_parse::<i64>()
            .map_err(|e| err(i.span(), format!("`{what}`: {e}"))),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => lit_int(expr, what).map(|v| -v),
        other => Err(err(
            other.span(),
            format!("`{what}` takes a whole number, e.g. `{what} = 10`"),
        )),
    }
}

/// Parses `"90s"`, `"5m"`, `"1h 30m"`, `"250ms"`, `"2d"` or a bare number of seconds
/// into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        // Saturated, as the units below are: `secs * 1000` panicked the macro on
        // `"18446744073709551615"` (found by a probe); past 10 years it is refused.
        return Ok(secs.saturating_mul(1000));
    }
    let mut total: u64 = 0;
    let mut chars = t.chars().peekable();
    while chars.peek().is_some() {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut digits = String::new();
        while let Some(c) = chars.next_if(char::is_ascii_digit) {
            digits.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut unit = String::new();
        while let Some(c) = chars.next_if(|c| c.is_alphabetic()) {
            unit.push(c);
        }
        if digits.is_empty() {
            return Err(format!("expected a number before `{unit}`"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{digits}` is too large"))?;
        let ms = match unit.as_str() {
            "ms" => 1,
            "s" | "sec" | "secs" => 1000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "" => return Err(format!("`{digits}` has no unit")),
            _ => return Err(format!("unknown unit `{unit}`; use ms, s, m, h or d")),
        };
        total = total.saturating_add(n.saturating_mul(ms));
        if let Some(c) = chars.peek()
            && !c.is_whitespace()
            && !c.is_ascii_digit()
        {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(total)
}

pub(crate) fn duration(expr: &Expr, what: &str) -> syn::Result<TokenStream> {
    let s = lit_str(expr, what)?;
    let ms = parse_duration_ms(&s.value()).map_err(|e| {
        err(
            s.span(),
            format!("`{what}`: {e}; write e.g. `\"30s\"`, `\"5m\"`, `\"1h 30m\"`"),
        )
    })?;
    Ok(quote!(::core::time::Duration::from_millis(#ms)))
}
