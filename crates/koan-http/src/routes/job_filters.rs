//! The names a job listing, its counts or `retry-dead` filter by: a service's or an
//! action's spelling as stored, and the note said beside an answer whose filter
//! names nothing known (a typo gave an empty page, as if all were well).

use koan::transport::{HostLink as _, Instance};

/// A service filter in the spelling its jobs are stored under: a service this
/// host runs is found whatever its case, as by every other route (a lowercase
/// name matched nothing, and `retry-dead` said "retried 0" with 3 dead; a probe).
/// Another name is kept as given: a renamed service's jobs stay listable.
pub(super) fn own_spelling<'a>(host: &'a koan::HostHandle, service: &'a str) -> &'a str {
    host.canonical_name(service).unwrap_or(service)
}

/// Said beside a listing, counts or `retry-dead` whose service filter names no
/// service this host runs or, as far as it knows, any host of its cluster: a typo
/// gave all zeros, an empty list and "retried 0", as if all were well (a
/// re-probe). Not refused: a renamed service's jobs stay listable by its old name.
pub(super) async fn unknown_service(
    host: &koan::HostHandle,
    service: Option<&str>,
) -> Option<String> {
    let s = service?;
    if host.canonical_name(s).is_some() {
        return None;
    }
    let elsewhere = host.instances().await.unwrap_or_default();
    if elsewhere
        .iter()
        .any(|i| i.services.iter().any(|x| x.name.eq_ignore_ascii_case(s)))
    {
        return None;
    }
    Some(format!(
        "no service named `{}` runs on this host or, as far as it knows, on any other: these are the jobs stored under that exact name (a renamed service's stay listable by it); check the name",
        s.escape_debug()
    ))
}

/// An action filter in the spelling its service declares it (`Add`, `ADD` or
/// `a_d_d` find the jobs of `add`, as a call by that name runs it: case and
/// separators aside), and the note said beside the listing when no service in
/// scope (`service`, or every one known) declares an action of that name
/// (`?action=ad` listed nothing without a word), or when the name is two
/// services' actions spelt apart. A name some service declares exactly is kept
/// as given. Not refused, as for a service: a renamed action's jobs stay listable
/// by its old name. No note where a service's actions are not known (a host older
/// than announcing them) or the service itself is unknown (its own note says so).
pub(super) async fn action_filter(
    host: &koan::HostHandle,
    service: Option<&str>,
    action: &str,
) -> (String, Option<String>) {
    let mut declared: Vec<(String, Vec<String>)> = host
        .action_names()
        .into_iter()
        .filter(|(s, _)| service.is_none_or(|want| s.eq_ignore_ascii_case(want)))
        .collect();
    let mut unknown_actions = false;
    for i in host.instances().await.unwrap_or_default() {
        remote_actions(&i, service, &mut declared, &mut unknown_actions);
    }
    let names = || declared.iter().flat_map(|(_, names)| names);
    if names().any(|n| n == action) {
        return (action.to_owned(), None);
    }
    let mut spellings: Vec<&String> = names()
        .filter(|n| koan::action::same_action_name(n, action))
        .collect();
    spellings.sort_unstable();
    spellings.dedup();
    match spellings.as_slice() {
        [one] => return ((*one).clone(), None),
        [] => {}
        several => {
            let each: Vec<String> = declared
                .iter()
                .flat_map(|(s, names)| {
                    names
                        .iter()
                        .filter(|n| koan::action::same_action_name(n, action))
                        .map(move |n| format!("`{n}` of `{s}`"))
                })
                .collect();
            let note = format!(
                "`{}` is the name of {} actions spelt apart ({}): these are the jobs stored under `{}` exactly; give `service=`, or the name as declared",
                action.escape_debug(),
                several.len(),
                each.join(", "),
                action.escape_debug()
            );
            return (action.to_owned(), Some(note));
        }
    }
    if unknown_actions || declared.is_empty() {
        return (action.to_owned(), None);
    }
    let scope = match service {
        Some(s) => {
            let mut names: Vec<&str> = names().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            format!(
                "`{}`, whose actions are {}",
                s.escape_debug(),
                names.join(", ")
            )
        }
        None => "any service this host runs or, as far as it knows, any other runs".to_owned(),
    };
    let note = format!(
        "no action named `{}` is declared by {scope}: these are the jobs stored under that exact name (a renamed action's stay listable by it); check the name",
        action.escape_debug()
    );
    (action.to_owned(), Some(note))
}

/// Adds the action names instance `i` announced for the services in scope;
/// `unknown` is set when it runs one of them without announcing its actions.
fn remote_actions(
    i: &Instance,
    service: Option<&str>,
    declared: &mut Vec<(String, Vec<String>)>,
    unknown: &mut bool,
) {
    let in_scope = |s: &str| service.is_none_or(|want| s.eq_ignore_ascii_case(want));
    for s in i.services.iter().filter(|s| in_scope(&s.name)) {
        match i.actions.get(&s.name) {
            Some(names) => declared.push((s.name.clone(), names.clone())),
            None => *unknown = true,
        }
    }
}
