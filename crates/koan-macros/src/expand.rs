//! Code generation. Every error becomes a `compile_error!` next to the original item,
//! so editors keep working.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, FnArg, ImplItem, ItemImpl, LitStr, ReturnType, Type};

use crate::attr::{self, ActionArgs, Kind};
use crate::typed::{self, TypedAction};

fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let ce = e.to_compile_error();
    quote!(#item #ce)
}

pub(crate) fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    match service_inner(args, input.clone()) {
        Ok(ts) => ts,
        Err(e) => with_error(input, e),
    }
}

fn service_inner(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    let item: DeriveInput = syn::parse2(input.clone())
        .map_err(|e| syn::Error::new(e.span(), "`#[service]` goes on a struct or an enum"))?;
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "`#[service]` does not support generic types: discovery needs one concrete type; \
             implement `koan::Service` by hand for generic services",
        ));
    }
    let a = attr::parse_service_args(args)?;
    let ident = &item.ident;

    let kind = match (a.kind, &a.schedule) {
        (Some((Kind::Periodic, _)), None) => {
            let span = a.kind.map_or_else(Span::call_site, |(_, s)| s);
            return Err(syn::Error::new(
                span,
                "a periodic service needs a schedule: `every = \"1h\"` or `cron = \"0 */5 * * * *\"`",
            ));
        }
        (Some((k, span)), Some(_)) if k != Kind::Periodic => {
            return Err(syn::Error::new(
                span,
                "`every`/`cron` make a periodic service; remove the other kind",
            ));
        }
        (Some((k, _)), _) => k,
        (None, Some(_)) => Kind::Periodic,
        (None, None) if !a.startup_only.is_empty() => Kind::Startup,
        (None, None) => Kind::Background,
    };
    if kind != Kind::Periodic
        && let Some((opt, span)) = a.periodic_only.first()
    {
        return Err(syn::Error::new(
            *span,
            format!("`{opt}` applies to periodic services; add `every = \"…\"` or `cron = \"…\"`"),
        ));
    }
    if kind != Kind::Startup
        && let Some((opt, span)) = a.startup_only.first()
    {
        return Err(syn::Error::new(
            *span,
            format!(
                "`{opt}` applies to startup services; this one is {}",
                match kind {
                    Kind::Periodic => "periodic",
                    _ => "a background service",
                }
            ),
        ));
    }

    let kind_ty = match kind {
        Kind::Background => quote!(Background),
        Kind::Periodic => quote!(Periodic),
        Kind::Startup => quote!(Startup),
    };
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let setters = &a.setters;
    let schedule = a.schedule.as_ref().map(|(ts, _)| ts.clone());
    let events = a.events.iter().map(|e| {
        let payload = e.payload.clone().map_or_else(|| quote!(()), |t| quote!(#t));
        let name = event_name(e, &payload);
        match &e.description {
            Some(d) => quote!(a.event_described::<#payload>(#name, #d);),
            None => quote!(a.event::<#payload>(#name);),
        }
    });
    // `services::<S>().on::<Payload>()` compiles only for the events declared here. A
    // payload type that two events share names neither (the type would not say which).
    let key = |t: &syn::Type| quote!(#t).to_string();
    let shared = |t: &syn::Type| {
        a.events
            .iter()
            .filter(|e| e.payload.as_ref().is_some_and(|p| key(p) == key(t)))
            .count()
            > 1
    };
    let emits = a.events.iter().filter_map(|e| {
        let payload = e.payload.as_ref().filter(|p| !shared(p))?;
        let name = event_name(e, &quote!(#payload));
        Some(quote! {
            impl ::koan::event::Emits<#payload> for #ident {
                const EVENT: &'static str = #name;
            }
        })
    });
    let health = a.health.as_ref().map(|p| {
        quote! {
            fn health(&self) -> impl ::core::future::Future<Output = ::koan::health::HealthReport> + ::core::marker::Send {
                #p(self)
            }
        }
    });
    let ready = a.ready.as_ref().map(|p| {
        quote! {
            fn is_ready(&self) -> impl ::core::future::Future<Output = bool> + ::core::marker::Send {
                #p(self)
            }
        }
    });

    // Discovery has the host construct the type (`HostBuilder::service`); a service
    // built by hand opts out and is added with `HostBuilder::instance`.
    let discovered = (!a.no_discover).then(|| {
        quote! {
            ::koan::__private::inventory::submit! {
                ::koan::__private::Discovered::new::<#ident>(#name, |b| b.service::<#ident>())
            }
        }
    });

    Ok(quote! {
        #input
        const _: () = {
            #[allow(unused_imports)]
            use ::koan::__private::{ViaDeclared as _, ViaNone as _};

            impl ::koan::Service for #ident {
                type Kind = ::koan::#kind_ty;

                fn options() -> ::koan::ServiceOptions {
                    ::koan::ServiceOptions::named(#name) #schedule #(#setters)*
                }

                fn actions(a: &mut ::koan::Actions<Self>) {
                    #(#events)*
                    (&::koan::__private::ActionsProbe::<Self>::new()).declare(a);
                }

                #health
                #ready
            }

            #(#emits)*
            #discovered
        };
    })
}

pub(crate) fn actions(args: TokenStream, input: TokenStream) -> TokenStream {
    match actions_inner(args, input.clone()) {
        Ok(ts) => ts,
        Err(e) => with_error(input, e),
    }
}

fn is_action_context(ty: &Type) -> Option<bool> {
    let (inner, by_ref) = match ty {
        Type::Reference(r) => (&*r.elem, true),
        other => (other, false),
    };
    match inner {
        Type::Path(p)
            if p.path
                .segments
                .last()
                .is_some_and(|s| s.ident == "ActionContext") =>
        {
            Some(by_ref)
        }
        _ => None,
    }
}

fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Default => false,
        ReturnType::Type(_, ty) => {
            matches!(&**ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result"))
        }
    }
}

/// An action's default name: the method's, in kebab case, without a raw
/// identifier's `r#` and without one trailing `_async` (the seed's `TranslateAsync`
/// is the action `translate`): `check_queue_async` → `check-queue`.
fn kebab(ident: &str) -> String {
    let ident = ident.strip_prefix("r#").unwrap_or(ident);
    let ident = ident.strip_suffix("_async").unwrap_or(ident);
    ident.replace('_', "-")
}

fn actions_inner(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new(
            args.span(),
            "`#[actions]` takes no arguments; put `#[action(\"name\")]` on methods",
        ));
    }
    let mut item: ItemImpl = syn::parse2(input).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[actions]` goes on an inherent `impl` block of a service",
        )
    })?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "`#[actions]` goes on an inherent `impl` block, not a trait impl",
        ));
    }
    let self_ty = item.self_ty.clone();
    let mut registrations = Vec::new();
    let mut callers = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut push_err = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let Some(pos) = method.attrs.iter().position(|a| is_action(a.path())) else {
            continue;
        };
        let attr = method.attrs.remove(pos);
        let args: ActionArgs = match &attr.meta {
            syn::Meta::Path(_) => ActionArgs::default(),
            _ => match attr.parse_args::<ActionArgs>() {
                Ok(a) => a,
                Err(e) => {
                    push_err(e);
                    continue;
                }
            },
        };
        let sig = &method.sig;
        if sig.asyncness.is_none() {
            push_err(syn::Error::new(
                sig.fn_token.span(),
                "an action must be an `async fn`",
            ));
            continue;
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            _ => {
                push_err(syn::Error::new(
                    sig.ident.span(),
                    "an action takes `&self` first (services are shared; use interior mutability)",
                ));
                continue;
            }
        }
        let mut call_args = Vec::new();
        let mut param_ty: Option<Type> = None;
        let mut bad = false;
        for arg in inputs {
            let FnArg::Typed(pt) = arg else { continue };
            match is_action_context(&pt.ty) {
                Some(true) => call_args.push(quote!(&cx)),
                Some(false) => call_args.push(quote!(cx.clone())),
                None => {
                    if param_ty.is_some() {
                        push_err(syn::Error::new(
                            pt.ty.span(),
                            "an action takes at most one parameter value besides `&ActionContext`; group several in a struct",
                        ));
                        bad = true;
                        break;
                    }
                    if let Type::Reference(r) = &*pt.ty {
                        let unsized_owned = |p: &syn::TypePath| {
                            let last = p.path.segments.last()?.ident.to_string();
                            let owned = match last.as_str() {
                                "str" => "String",
                                "Path" => "PathBuf",
                                "OsStr" => "OsString",
                                "CStr" => "CString",
                                _ => return None,
                            };
                            Some(format!("`{owned}`"))
                        };
                        let owned = match &*r.elem {
                            Type::Path(p) => unsized_owned(p).unwrap_or_else(|| {
                                let t = &r.elem;
                                format!("`{}`", quote!(#t))
                            }),
                            Type::Slice(s) => {
                                let t = &s.elem;
                                format!("`Vec<{}>`", quote!(#t))
                            }
                            Type::TraitObject(_) => {
                                "a concrete type that implements `Deserialize`".to_owned()
                            }
                            t => format!("`{}`", quote!(#t)),
                        };
                        push_err(syn::Error::new(
                            pt.ty.span(),
                            format!(
                                "an action's parameter value is decoded from its call, so it is owned: take {owned} instead of a reference"
                            ),
                        ));
                        bad = true;
                        break;
                    }
                    param_ty = Some((*pt.ty).clone());
                    call_args.push(quote!(params));
                }
            }
        }
        if bad {
            continue;
        }
        let method_ident = &sig.ident;
        let name = args.name.map_or_else(
            || {
                let s = LitStr::new(&kebab(&method_ident.to_string()), method_ident.span());
                quote!(#s)
            },
            |e| quote!(#e),
        );
        callers.push(TypedAction {
            method: method_ident.clone(),
            name: name.clone(),
            param: param_ty.clone(),
            output: sig.output.clone(),
            returns_result: returns_result(&sig.output),
        });
        let p_ty = param_ty.map_or_else(|| quote!(()), |t| quote!(#t));
        let call = quote!(svc.#method_ident(#(#call_args),*).await);
        let body = if returns_result(&sig.output) {
            call
        } else {
            // A `Result` under another name is refused at compile time (its `Err`
            // was answered as a success), pointing at the return type.
            let at = match &sig.output {
                ReturnType::Type(_, ty) => ty.span(),
                ReturnType::Default => method_ident.span(),
            };
            let check = quote_spanned! {at=>
                ::koan::__private::plain_value((&out).koan_return_kind())
            };
            quote!({
                let out = #call;
                {
                    #[allow(unused_imports)]
                    use ::koan::__private::{ResultKind as _, ValueKind as _};
                    #check;
                }
                ::core::result::Result::<_, ::koan::BoxError>::Ok(out)
            })
        };
        let description = args.description.map(|d| quote!(.description(#d)));
        let retry = &args.setters;
        let span = method_ident.span();
        let params_ident = format_ident!("params");
        registrations.push(quote_spanned! {span=>
            a.action(#name, |svc: ::std::sync::Arc<Self>, #params_ident: #p_ty, cx: ::koan::ActionContext| async move {
                let _ = &cx;
                #body
            }) #description #(#retry)*;
        });
    }
    if let Some(e) = errors {
        return Ok(with_error(quote!(#item), e));
    }
    let callers = typed::callers(&self_ty, !item.generics.params.is_empty(), &callers);
    let once = one_block(&self_ty);
    Ok(quote! {
        #once
        #item
        impl ::koan::__private::DeclaredActions for #self_ty {
            fn declare(a: &mut ::koan::Actions<Self>) {
                #(#registrations)*
            }
        }
        #callers
    })
}

/// `#[action]` or `#[koan::action]` (the crate under any name, `use koan as k;`): a
/// handler's attribute, read by `#[actions]`.
fn is_action(path: &syn::Path) -> bool {
    path.is_ident("action") || (path.segments.len() == 2 && path.segments[1].ident == "action")
}

/// An item whose name says the fix when a type has two `#[actions]` blocks: its
/// duplicate is the first error the compiler gives (before the generated trait's,
/// whose names the user never wrote).
fn one_block(self_ty: &syn::Type) -> TokenStream {
    let syn::Type::Path(p) = self_ty else {
        return TokenStream::new();
    };
    // The whole path: `v1::Worker` and `v2::Worker` are two types (a re-probe).
    let path: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if path.is_empty() {
        return TokenStream::new();
    }
    let name = format_ident!(
        "{}_has_more_than_one_koan_actions_block__put_all_its_actions_in_one_impl_block",
        path.join("_"),
        span = Span::call_site()
    );
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, dead_code)]
        const #name: () = ();
    }
}

/// `#[action]` met outside an `#[actions]` block (which removes it from the methods
/// it reads): the item as written, and an error naming the fix.
pub(crate) fn action_alone(_args: TokenStream, input: TokenStream) -> TokenStream {
    let e = syn::Error::new(
        Span::call_site(),
        "`#[action]` marks a handler inside an `impl` block marked `#[koan::actions]`: \
         add `#[koan::actions]` above this method's `impl` block (one such block per service)",
    );
    with_error(input, e)
}

pub(crate) fn event(input: TokenStream) -> TokenStream {
    match event_inner(input) {
        Ok(ts) => ts,
        Err(e) => e.to_compile_error(),
    }
}

fn event_inner(input: TokenStream) -> syn::Result<TokenStream> {
    let item: DeriveInput = syn::parse2(input)?;
    let ident = &item.ident;
    let mut name = LitStr::new(&ident.to_string(), ident.span());
    for attr in item.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = meta.value()?.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown `event` option; accepted: `name = \"…\"`"))
            }
        })?;
    }
    let (impl_g, ty_g, where_g) = item.generics.split_for_impl();
    Ok(quote! {
        impl #impl_g ::koan::Event for #ident #ty_g #where_g {
            const NAME: &'static str = #name;
        }
    })
}

/// An event's name as declared: `name = …`, or the payload's `Event::NAME`.
fn event_name(e: &attr::EventDecl, payload: &TokenStream) -> TokenStream {
    match &e.name {
        Some(n) => quote!(#n),
        None => quote!(<#payload as ::koan::Event>::NAME),
    }
}
