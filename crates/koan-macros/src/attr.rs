//! Parsing of `#[service(…)]`, `#[action(…)]` and `#[event(…)]` arguments, with errors
//! that point at the offending token and say what is accepted.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, LitStr, Meta, Token, Type};

use crate::lit::{duration, err, lit_bool, lit_int, lit_str, lit_str_list, parse_duration_ms};

pub(crate) const SERVICE_OPTIONS: &str = "name, description, enabled, config_section, priority, \
run_in_development, run_in_production, run_in_testing, run_in, background, periodic, startup, every, cron, \
initial_delay, run_on_startup, missed_ticks, stall_after, singleton, order, continue_on_failure, timeout, critical, restart, \
max_concurrency, mailbox_capacity, health, ready, event, discover";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Background,
    Periodic,
    Startup,
}

/// One `event(…)` entry.
pub(crate) struct EventDecl {
    /// The name expression; `None` means `<payload as Event>::NAME`.
    pub(crate) name: Option<Expr>,
    pub(crate) payload: Option<Type>,
    pub(crate) description: Option<LitStr>,
}

#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) kind: Option<(Kind, Span)>,
    /// `.setter(value)` calls on `ServiceOptions`, in order.
    pub(crate) setters: Vec<TokenStream>,
    pub(crate) schedule: Option<(TokenStream, Span)>,
    pub(crate) periodic_only: Vec<(&'static str, Span)>,
    pub(crate) startup_only: Vec<(&'static str, Span)>,
    pub(crate) health: Option<syn::Path>,
    pub(crate) ready: Option<syn::Path>,
    pub(crate) events: Vec<EventDecl>,
    /// `discover = false`: not registered for `HostBuilder::discover()` (a service the
    /// host cannot construct, added with `HostBuilder::instance`).
    pub(crate) no_discover: bool,
}

impl Parse for EventDecl {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `event(Type)` or `event(name = EXPR, payload = Type)` or `event(name = EXPR)`.
        if input.peek(syn::Ident) && input.peek2(Token![=]) {
            let mut name = None;
            let mut payload = None;
            let mut description = None;
            while !input.is_empty() {
                let key: syn::Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                match key.to_string().as_str() {
                    "name" => name = Some(input.parse::<Expr>()?),
                    "payload" => payload = Some(input.parse::<Type>()?),
                    "description" => description = Some(input.parse::<LitStr>()?),
                    other => {
                        return Err(err(
                            key.span(),
                            format!(
                                "unknown `event` option `{other}`; accepted: name, payload, description"
                            ),
                        ));
                    }
                }
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
            }
            if name.is_none() {
                return Err(input.error(
                    "`event(…)` needs `name = \"…\"` (or give just a type that derives `Event`)",
                ));
            }
            Ok(EventDecl {
                name,
                payload,
                description,
            })
        } else {
            let payload: Type = input.parse()?;
            Ok(EventDecl {
                name: None,
                payload: Some(payload),
                description: None,
            })
        }
    }
}

pub(crate) fn parse_service_args(tokens: TokenStream) -> syn::Result<ServiceArgs> {
    let metas =
        syn::parse::Parser::parse2(Punctuated::<Meta, Token![,]>::parse_terminated, tokens)?;
    let mut a = ServiceArgs::default();
    let mut given = std::collections::HashSet::new();
    for meta in metas {
        let path = meta.path().clone();
        let Some(ident) = path.get_ident() else {
            return Err(err(
                path.span(),
                format!("unknown option; accepted: {SERVICE_OPTIONS}"),
            ));
        };
        let key = ident.to_string();
        let span = ident.span();
        // `event(…)` is given once per event; any other option once.
        if key != "event" && !given.insert(key.clone()) {
            return Err(err(span, format!("`{key}` is given twice; give it once")));
        }
        match &meta {
            Meta::Path(_) => match key.as_str() {
                "background" | "periodic" | "startup" => {
                    let k = match key.as_str() {
                        "background" => Kind::Background,
                        "periodic" => Kind::Periodic,
                        _ => Kind::Startup,
                    };
                    if let Some((prev, _)) = a.kind
                        && prev != k
                    {
                        return Err(err(
                            span,
                            "a service has one kind: `background`, `periodic` or `startup`",
                        ));
                    }
                    a.kind = Some((k, span));
                }
                "run_on_startup" => {
                    a.periodic_only.push(("run_on_startup", span));
                    a.setters.push(quote!(.run_on_startup(true)));
                }
                "singleton" => {
                    a.periodic_only.push(("singleton", span));
                    a.setters.push(quote!(.singleton(true)));
                }
                "critical" => a.setters.push(quote!(.critical(true))),
                "discover" => a.no_discover = false,
                "continue_on_failure" => {
                    a.startup_only.push(("continue_on_failure", span));
                    a.setters.push(quote!(.continue_on_failure(true)));
                }
                "enabled" | "run_in_development" | "run_in_production" | "run_in_testing" => {
                    let id = ident.clone();
                    a.setters.push(quote!(.#id(true)));
                }
                _ => {
                    return Err(err(
                        span,
                        format!(
                            "`{key}` needs a value (`{key} = …`) or is unknown; accepted: {SERVICE_OPTIONS}"
                        ),
                    ));
                }
            },
            Meta::NameValue(nv) => {
                let v = &nv.value;
                match key.as_str() {
                    "name" => {
                        let s = lit_str(v, "name")?;
                        if !s.value().chars().any(char::is_alphanumeric) {
                            return Err(err(s.span(), "a service's name needs a letter or digit"));
                        }
                        a.name = Some(s);
                    }
                    "description" => {
                        let s = lit_str(v, "description")?;
                        a.setters.push(quote!(.description(#s)));
                    }
                    "config_section" => {
                        let s = lit_str(v, "config_section")?;
                        a.setters.push(quote!(.config_section(#s)));
                    }
                    "run_in" => {
                        let names = lit_str_list(v, "run_in")?;
                        a.setters.push(quote!(.run_in([#(#names),*])));
                    }
                    "enabled" | "run_in_development" | "run_in_production" | "run_in_testing"
                    | "critical" => {
                        let b = lit_bool(v, &key)?;
                        let id = ident.clone();
                        a.setters.push(quote!(.#id(#b)));
                    }
                    "discover" => a.no_discover = !lit_bool(v, &key)?,
                    "run_on_startup" => {
                        let b = lit_bool(v, &key)?;
                        a.periodic_only.push(("run_on_startup", span));
                        a.setters.push(quote!(.run_on_startup(#b)));
                    }
                    "continue_on_failure" => {
                        let b = lit_bool(v, &key)?;
                        a.startup_only.push(("continue_on_failure", span));
                        a.setters.push(quote!(.continue_on_failure(#b)));
                    }
                    "priority" | "order" => {
                        let n = lit_int(v, &key)?;
                        let n = i32::try_from(n)
                            .map_err(|_| err(v.span(), format!("`{key}` must fit in an i32")))?;
                        if key == "order" {
                            a.startup_only.push(("order", span));
                        }
                        let id = ident.clone();
                        a.setters.push(quote!(.#id(#n)));
                    }
                    "max_concurrency" | "mailbox_capacity" => {
                        let n = lit_int(v, &key)?;
                        if n < 1 {
                            return Err(err(v.span(), format!("`{key}` must be at least 1")));
                        }
                        // `koan::service::MAX_CONCURRENCY` (this crate cannot name it).
                        if key == "max_concurrency" && n > 10_000 {
                            return Err(err(
                                v.span(),
                                "`max_concurrency` must be at most 10000 (each is a worker task)",
                            ));
                        }
                        let n = n as usize;
                        let id = ident.clone();
                        a.setters.push(quote!(.#id(#n)));
                    }
                    "every" => {
                        if a.schedule.is_some() {
                            return Err(err(span, "give either `every` or `cron`, not both"));
                        }
                        let d = duration(v, "every")?;
                        match parse_duration_ms(&lit_str(v, "every")?.value()) {
                            Ok(0) => {
                                return Err(err(v.span(), "`every` must be longer than zero"));
                            }
                            // `koan::schedule::MAX_PERIOD` (this crate cannot name it).
                            Ok(ms) if ms > 3650 * 24 * 3600 * 1000 => {
                                return Err(err(
                                    v.span(),
                                    "`every` must be at most 10 years (3650 days); for a yearly or rarer run use `cron`",
                                ));
                            }
                            _ => {}
                        }
                        a.schedule = Some((quote!(.every(#d)), span));
                    }
                    "cron" => {
                        if a.schedule.is_some() {
                            return Err(err(span, "give either `every` or `cron`, not both"));
                        }
                        let s = lit_str(v, "cron")?;
                        let fields = s.value().split_whitespace().count();
                        if !(5..=7).contains(&fields) {
                            return Err(err(
                                s.span(),
                                format!(
                                    "`cron` has {fields} fields; expected 5 (min hour day month weekday), 6 with seconds first, or 7 with a year, e.g. `\"0 */5 * * * *\"`"
                                ),
                            ));
                        }
                        a.schedule = Some((quote!(.cron(#s)), span));
                    }
                    "initial_delay" => {
                        let d = duration(v, &key)?;
                        a.periodic_only.push(("initial_delay", span));
                        a.setters.push(quote!(.initial_delay(#d)));
                    }
                    "stall_after" => {
                        let d = duration(v, &key)?;
                        a.periodic_only.push(("stall_after", span));
                        a.setters.push(quote!(.stall_after(#d)));
                    }
                    "timeout" => {
                        let d = duration(v, &key)?;
                        a.startup_only.push(("timeout", span));
                        a.setters.push(quote!(.timeout(#d)));
                    }
                    "missed_ticks" => {
                        let s = lit_str(v, &key)?;
                        let policy = match s.value().as_str() {
                            "skip" => quote!(Skip),
                            "delay" => quote!(Delay),
                            "catch-up-once" | "catch_up_once" => quote!(CatchUpOnce),
                            other => {
                                return Err(err(
                                    s.span(),
                                    format!(
                                        "unknown missed-tick policy `{other}`; accepted: \"skip\", \"delay\", \"catch-up-once\""
                                    ),
                                ));
                            }
                        };
                        a.periodic_only.push(("missed_ticks", span));
                        a.setters.push(
                            quote!(.missed_ticks(::koan::schedule::MissedTickPolicy::#policy)),
                        );
                    }
                    "restart" => {
                        let s = lit_str(v, &key)?;
                        let policy = match s.value().as_str() {
                            "never" => quote!(Never),
                            "on-failure" | "on_failure" => quote!(OnFailure),
                            "always" => quote!(Always),
                            other => {
                                return Err(err(
                                    s.span(),
                                    format!(
                                        "unknown restart policy `{other}`; accepted: \"never\", \"on-failure\", \"always\""
                                    ),
                                ));
                            }
                        };
                        a.setters
                            .push(quote!(.restart(::koan::service::RestartPolicy::#policy)));
                    }
                    "health" | "ready" => {
                        let p = match v {
                            Expr::Path(p) => p.path.clone(),
                            other => {
                                return Err(err(
                                    other.span(),
                                    format!(
                                        "`{key}` takes the path of a method, e.g. `{key} = Self::check`"
                                    ),
                                ));
                            }
                        };
                        if key == "health" {
                            a.health = Some(p);
                        } else {
                            a.ready = Some(p);
                        }
                    }
                    _ => {
                        return Err(err(
                            span,
                            format!("unknown option `{key}`; accepted: {SERVICE_OPTIONS}"),
                        ));
                    }
                }
            }
            Meta::List(list) => match key.as_str() {
                "event" => a
                    .events
                    .push(syn::parse2::<EventDecl>(list.tokens.clone())?),
                _ => {
                    return Err(err(
                        span,
                        format!("unknown option `{key}(…)`; accepted: {SERVICE_OPTIONS}"),
                    ));
                }
            },
        }
    }
    Ok(a)
}

/// `#[action("name", description = "…")]`, `#[action(name = …)]` or `#[action]`.
#[derive(Default)]
pub(crate) struct ActionArgs {
    pub(crate) name: Option<Expr>,
    pub(crate) description: Option<LitStr>,
    /// Setters for the job retry policy (`max_attempts = 5`, `backoff = "2s"`).
    pub(crate) setters: Vec<TokenStream>,
}

impl Parse for ActionArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut a = ActionArgs::default();
        if input.is_empty() {
            return Ok(a);
        }
        // A name comes first unless the arguments start with an option (`key = …`
        // or the `idempotent` flag).
        let flag_first = {
            let f = input.fork();
            f.parse::<syn::Ident>().is_ok_and(|k| k == "idempotent")
                && (f.is_empty() || f.peek(Token![,]))
        };
        let option_first = flag_first || (input.peek(syn::Ident) && input.peek2(Token![=]));
        let mut given = std::collections::HashSet::new();
        if !option_first {
            a.name = Some(action_name(input)?);
            given.insert("name".to_owned());
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        while !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if !given.insert(key.to_string()) {
                return Err(err(
                    key.span(),
                    format!("`{key}` is given twice; give it once"),
                ));
            }
            // A flag: `idempotent` stands alone.
            if key == "idempotent" {
                a.setters.push(quote!(.idempotent()));
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
                continue;
            }
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "name" => a.name = Some(action_name(input)?),
                "description" => a.description = Some(input.parse::<LitStr>()?),
                "max_attempts" => {
                    let n = input.parse::<syn::LitInt>()?;
                    let v: u32 = n.base10_parse()?;
                    if v < 1 {
                        return Err(err(
                            n.span(),
                            "`max_attempts` must be at least 1 (1 = never retried)",
                        ));
                    }
                    a.setters.push(quote!(.max_attempts(#v)));
                }
                "backoff" => {
                    let e = input.parse::<Expr>()?;
                    let d = duration(&e, "backoff")?;
                    a.setters.push(quote!(.backoff(#d)));
                }
                other => {
                    return Err(err(
                        key.span(),
                        format!(
                            "unknown `action` option `{other}`; accepted: a name first, then `description = \"…\"`, `max_attempts = N`, `backoff = \"1s\"`, `idempotent`"
                        ),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(a)
    }
}

/// An action's name: any expression (a constant), and a string literal that is no
/// name refused here rather than when the host is built.
fn action_name(input: ParseStream<'_>) -> syn::Result<Expr> {
    let name = input.parse::<Expr>()?;
    if let Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(s),
        ..
    }) = &name
        && !s.value().chars().any(char::is_alphanumeric)
    {
        return Err(err(
            s.span(),
            "an action's name needs a letter or digit (names are matched regardless of case and of `-`, `_`, `.` and spaces)",
        ));
    }
    Ok(name)
}
