//! The typed callers of `#[actions]`: a trait `<Service>Actions`, implemented for
//! `koan::Services<Service>`, with one method per action whose parameter and result
//! types are the handler's.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{Ident, ReturnType, Type};

/// One action as its typed caller sees it.
pub(crate) struct TypedAction {
    /// The handler's name, which the caller method takes.
    pub(crate) method: Ident,
    /// The action's declared name (an expression: a literal or a constant).
    pub(crate) name: TokenStream,
    /// The parameter type; `None` for a handler without one (or taking `()`).
    pub(crate) param: Option<Type>,
    /// The handler's return type.
    pub(crate) output: ReturnType,
    /// Whether the handler returns a `Result` (its `Ok` type is then the result).
    pub(crate) returns_result: bool,
}

/// Methods `Services<T>` has itself or through a trait every type has; a caller of
/// the same name is reached only as `<Service>Actions::name(&services, …)`, since
/// method syntax finds these first. Keep in step with `koan`'s `client.rs`.
const SERVICES_METHODS: &[&str] = &[
    "name",
    "action",
    "on",
    "trigger",
    "check_queue",
    "process_batch",
    "status",
    "health",
    "info",
    "instance",
    "clone",
    "clone_from",
    "to_owned",
    "clone_into",
    "into",
    "try_into",
    "fmt",
    "type_id",
    "borrow",
    "borrow_mut",
];

/// Whether `tokens` hold `impl` (a type that cannot be named from the outside).
fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "impl",
        TokenTree::Group(g) => mentions_impl(g.stream()),
        _ => false,
    })
}

/// `ty` with `Self` replaced by the service type, so it reads the same outside the
/// impl block.
fn without_self(tokens: TokenStream, self_ty: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|t| match t {
            TokenTree::Ident(i) if i == "Self" => self_ty.clone(),
            TokenTree::Group(g) => {
                let mut out = Group::new(g.delimiter(), without_self(g.stream(), self_ty));
                out.set_span(g.span());
                TokenTree::Group(out).into_token_stream()
            }
            other => other.into_token_stream(),
        })
        .collect()
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// The type a caller gets back: the handler's value, or the `Ok` type of its
/// `Result` (read from `Result<T, …>`, or projected when the `Result` is an alias
/// without arguments).
fn result_type(a: &TypedAction) -> TokenStream {
    let ty = match &a.output {
        ReturnType::Default => return quote!(()),
        ReturnType::Type(_, ty) => ty,
    };
    if !a.returns_result {
        return quote!(#ty);
    }
    if let Type::Path(p) = &**ty
        && let Some(last) = p.path.segments.last()
        && let syn::PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(syn::GenericArgument::Type(ok)) = args.args.first()
    {
        return quote!(#ok);
    }
    quote!(<#ty as ::koan::__private::HandlerResult>::Ok)
}

/// The trait and its implementation for `koan::Services<self_ty>`; nothing when the
/// impl block is generic or no action can be called from outside.
pub(crate) fn callers(self_ty: &Type, generic: bool, actions: &[TypedAction]) -> TokenStream {
    let Type::Path(path) = self_ty else {
        return TokenStream::new();
    };
    let Some(last) = path.path.segments.last() else {
        return TokenStream::new();
    };
    if generic || actions.is_empty() {
        return TokenStream::new();
    }
    let service = &last.ident;
    let trait_ident = format_ident!("{}Actions", service, span = service.span());
    let self_tokens = self_ty.to_token_stream();
    let mut decls = Vec::new();
    let mut impls = Vec::new();
    for a in actions {
        let param_tokens = a.param.as_ref().filter(|t| !is_unit(t)).map(|t| {
            let t = t.to_token_stream();
            without_self(t, &self_tokens)
        });
        let result = without_self(result_type(a), &self_tokens);
        if param_tokens.clone().is_some_and(mentions_impl) || mentions_impl(result.clone()) {
            continue;
        }
        let method = &a.method;
        let name = without_self(a.name.clone(), &self_tokens);
        let method_name = method.to_string();
        let shadowed = SERVICES_METHODS.contains(&method_name.as_str()).then(|| {
            let text = format!(
                "\n\n`Services` has a method `{method_name}` of its own, which method syntax \
                 finds first: call this one as `{trait_ident}::{method_name}(&services, …)`, \
                 or give the handler another name (the action keeps its declared name)."
            );
            quote!(#[doc = #text])
        });
        let action = match syn::parse2::<syn::LitStr>(a.name.clone()) {
            Ok(s) => s.value(),
            Err(_) => a.name.to_string().replace(' ', ""),
        };
        let doc = format!(
            "Calls the action `{action}` of `{service}` (its handler `{method_name}`): \
             returns the request, to finish with `.execute().await` or `.enqueue().await`."
        );
        let span = method.span();
        let (sig, call) = match &param_tokens {
            Some(p) => (
                quote_spanned! {span=>
                    fn #method(&self, params: #p) -> ::koan::action::TypedRequest<#result>
                    where
                        for<'koan> #p: ::koan::__private::Serialize
                },
                quote!(::koan::__private::typed_request(self, #name, params)),
            ),
            None => (
                quote_spanned! {span=>
                    fn #method(&self) -> ::koan::action::TypedRequest<#result>
                },
                quote!(::koan::__private::typed_request(self, #name, ())),
            ),
        };
        decls.push(quote! {
            #[doc = #doc]
            #shadowed
            #sig;
        });
        impls.push(quote! {
            #sig {
                #call
            }
        });
    }
    if decls.is_empty() {
        return TokenStream::new();
    }
    let trait_doc = format!(
        "The typed callers of `{service}`'s actions, generated by `#[koan::actions]`: \
         one method per action on `koan::Services<{service}>`, taking the handler's \
         parameter type and giving its result type. Bring the trait into scope to call \
         them."
    );
    let allow = quote!(#[allow(
        unreachable_pub,
        private_interfaces,
        private_bounds,
        clippy::extra_unused_lifetimes
    )]);
    let vis = quote_spanned!(Span::call_site()=> pub);
    quote! {
        #[doc = #trait_doc]
        #allow
        #vis trait #trait_ident {
            #(#decls)*
        }

        const _: () = {
            #allow
            impl #trait_ident for ::koan::Services<#self_ty> {
                #(#impls)*
            }
        };
    }
}
