//! Subject names. Service and action names are matched case-insensitively, so subjects
//! use a lowercase token with anything outside `[a-z0-9_-]` replaced by `_`.

/// A subject token for a name.
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    push_token(&mut out, name);
    out
}

/// Appends the subject token for `name` to `out`.
fn push_token(out: &mut String, name: &str) {
    if is_its_token(name) {
        // The usual name, copied whole and lowered in place: a char at a time cost
        // about 20 instructions a byte, 1,000 a call's subject (B8's profile).
        let start = out.len();
        out.push_str(name);
        out[start..].make_ascii_lowercase();
        return;
    }
    out.extend(name.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// Whether `name`'s subject token is the name itself, but for case: then a receiver,
/// which matches names case-insensitively, reads it from the subject alone.
pub(crate) fn is_its_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn action(service: &str, action: &str) -> String {
    format!("koan.svc.{}.act.{}", token(service), token(action))
}

pub(crate) fn actions_of(service: &str) -> String {
    format!("koan.svc.{}.act.*", token(service))
}

/// How a call sent to one chosen instance gives its correlation id; either way
/// its reply is its body alone (docs/wire.md, "Calls"). The token after the
/// service's in its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    /// `koan.host.<host>.svc.<service>.bare.<action>`: the id in its header (or,
    /// from a client of an earlier koan, as one more token of the subject).
    Bare,
    /// `koan.host.<host>.svc.<service>.lead.<action>`: the id on the body's first
    /// line ([`crate::wire::lead`]). Every call of an action then has the same
    /// subject, as a plain request/reply's has: a subject of its own per call (the
    /// id in it) cost the broker 2–5 µs a round trip (B8), whose interest cache
    /// missed on each.
    Lead,
}

impl Direct {
    fn token(self) -> &'static str {
        match self {
            Direct::Bare => "bare",
            Direct::Lead => "lead",
        }
    }
}

/// An action of `service` on one instance, as the Rust client sends it when it
/// chose the instance: `koan.host.<host>.svc.<service>.<form>.<action>`.
/// Built in one buffer: it is made on every call (B8's profile: `format!` of three
/// tokens was ≈ 3,000 instructions).
pub(crate) fn host_direct_action(host: &str, service: &str, form: Direct, action: &str) -> String {
    let mut s = String::with_capacity(23 + host.len() + service.len() + action.len());
    push_direct_prefix(&mut s, host, service, form);
    push_token(&mut s, action);
    s
}

/// The longest correlation id sent without a header.
const PLAIN_ID: usize = 64;

/// Whether a correlation id travels as it is on a line or in a subject of its own:
/// one token (`[A-Za-z0-9_-]`, case kept), not too long. Another goes in its header.
pub(crate) fn is_plain_id(correlation: &str) -> bool {
    correlation.len() <= PLAIN_ID && is_its_token(correlation)
}

/// The action's token and the correlation id (if given) in the subject of a call
/// sent to one instance, `<prefix><action>[.<id>]`, where `prefix` is the length of
/// [`host_direct_prefix`] (the subscription's own, so known to whoever reads the
/// subject). Everything after the action's token is the id (a bare call's, from a
/// client of an earlier koan).
///
/// The prefix skipped by its length: a search for the dots before the action's
/// token cost ≈ 800 instructions a call with `memchr`, and still ≈ 380 with a loop
/// over the bytes (B8, by callgrind).
pub(crate) fn direct_parts(subject: &str, prefix: usize) -> (&str, Option<&str>) {
    let rest = subject.get(prefix..).unwrap_or_default();
    match rest.bytes().position(|b| b == b'.') {
        Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
        None => (rest, None),
    }
}

/// The actions of `service` on one instance, with replies as usual.
pub(crate) fn host_actions_of(host: &str, service: &str) -> String {
    format!("koan.host.{}.svc.{}.act.*", token(host), token(service))
}

/// The start of every subject of `service`'s actions on one instance in `form`:
/// `koan.host.<host>.svc.<service>.<form>.` (subscribed to with a wildcard after it).
pub(crate) fn host_direct_prefix(host: &str, service: &str, form: Direct) -> String {
    let mut s = String::with_capacity(21 + host.len() + service.len());
    push_direct_prefix(&mut s, host, service, form);
    s
}

/// Appends [`host_direct_prefix`] to `out`: the one place that spells it, for the
/// subscriptions and for each call's subject.
fn push_direct_prefix(out: &mut String, host: &str, service: &str, form: Direct) {
    out.push_str("koan.host.");
    push_token(out, host);
    out.push_str(".svc.");
    push_token(out, service);
    out.push('.');
    out.push_str(form.token());
    out.push('.');
}

pub(crate) fn query(service: &str, what: &str) -> String {
    format!("koan.svc.{}.query.{what}", token(service))
}

pub(crate) fn queries_of(service: &str) -> String {
    format!("koan.svc.{}.query.*", token(service))
}

/// Query `what` of `service` on one instance: `koan.host.<host>.svc.<service>.query.<what>`.
pub(crate) fn host_query(host: &str, service: &str, what: &str) -> String {
    format!(
        "koan.host.{}.svc.{}.query.{what}",
        token(host),
        token(service)
    )
}

/// Every query of `service` on one instance (subscribed to).
pub(crate) fn host_queries_of(host: &str, service: &str) -> String {
    format!("koan.host.{}.svc.{}.query.*", token(host), token(service))
}

pub(crate) fn queue_group(service: &str) -> String {
    format!("koan-{}", token(service))
}

pub(crate) fn event(service: &str, event: &str) -> String {
    format!("koan.evt.{}.{}", token(service), token(event))
}

pub(crate) const ALL_EVENTS: &str = "koan.evt.>";

pub(crate) const WORK_STREAM: &str = "KOAN_WORK";
pub(crate) const WORK_SUBJECTS: &str = "koan.work.>";
pub(crate) const DELAYED_STREAM: &str = "KOAN_DELAYED";
pub(crate) const DELAYED_SUBJECTS: &str = "koan.delayed.>";
pub(crate) const DLQ_STREAM: &str = "KOAN_DLQ";
pub(crate) const DLQ_SUBJECTS: &str = "koan.dlq.>";
/// JetStream's word that a job of the work stream will not be delivered again,
/// kept until one instance has answered it (`stranded.rs`).
pub(crate) const STRANDED_STREAM: &str = "KOAN_STRANDED";
pub(crate) const STRANDED_SUBJECTS: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.KOAN_WORK.*";
pub(crate) const STRANDED_CONSUMER: &str = "koan-stranded";

pub(crate) fn work(service: &str, action: &str) -> String {
    format!("koan.work.{}.{}", token(service), token(action))
}

pub(crate) fn work_of(service: &str) -> String {
    format!("koan.work.{}.>", token(service))
}

pub(crate) fn work_consumer(service: &str) -> String {
    format!("koan-work-{}", token(service))
}

/// Where job `id` waits until it is due (`KOAN_DELAYED`): a subject of its own
/// when its id is one token (a job id koan makes always is), so a cancel removes
/// it from the stream at once (`delayed::withdraw`); else its action's.
pub(crate) fn delayed(service: &str, action: &str, id: &str) -> String {
    delayed_job(service, action, id)
        .unwrap_or_else(|| format!("koan.delayed.{}.{}", token(service), token(action)))
}

/// The subject of job `id`'s own in `KOAN_DELAYED`
/// (`koan.delayed.<service>.<action>.<id>`); `None` when its id is not one token
/// (only a foreign client's may not be), and it shares its action's subject.
pub(crate) fn delayed_job(service: &str, action: &str, id: &str) -> Option<String> {
    is_plain_id(id).then(|| format!("koan.delayed.{}.{}.{id}", token(service), token(action)))
}

pub(crate) fn delayed_of(service: &str) -> String {
    format!("koan.delayed.{}.>", token(service))
}

pub(crate) fn delayed_consumer(service: &str) -> String {
    format!("koan-delayed-{}", token(service))
}

pub(crate) fn dead_letter(service: &str, action: &str) -> String {
    format!("koan.dlq.{}.{}", token(service), token(action))
}

pub(crate) const REGISTRY_BUCKET: &str = "koan_registry";
pub(crate) const OUTCOMES_BUCKET: &str = "koan_outcomes";
pub(crate) const LEASES_BUCKET: &str = "koan_leases";
pub(crate) const JOBS_BUCKET: &str = "koan_jobs";
pub(crate) const CANCELS_BUCKET: &str = "koan_cancels";

/// A KV key for an action id or host id (`[-_=.a-zA-Z0-9]`, any other char `_`).
pub(crate) fn key(id: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.');
    // A job's or host's own id is a key already: copied whole, not char by char.
    if id.bytes().all(safe) {
        return id.to_owned();
    }
    id.chars()
        .map(|c| {
            if u8::try_from(c).is_ok_and(safe) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `key` (made by [`key`]) names an entry a bucket can hold: not empty,
/// no empty token (a `.` at either end, or two together). Another is no job's.
pub(crate) fn is_held_key(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('.') && !key.ends_with('.') && !key.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe() {
        assert_eq!(token("TranslationService"), "translationservice");
        assert_eq!(token("Outbox.Processed"), "outbox_processed");
        assert_eq!(
            action("DataCleanupService", "process-batch"),
            "koan.svc.datacleanupservice.act.process-batch"
        );
        assert_eq!(
            host_direct_action("H-1", "Data Service", Direct::Bare, "Run.Now"),
            "koan.host.h-1.svc.data_service.bare.run_now"
        );
        // Each char that is not a token's, however many bytes, is one `_`.
        assert_eq!(token("Café Crème"), "caf__cr_me");
        assert_eq!(token(""), "");
        assert_eq!(
            host_direct_action("AB-cd_9", "Gate", Direct::Lead, "Add:One"),
            "koan.host.ab-cd_9.svc.gate.lead.add_one"
        );
        assert_eq!(key("a1b2-3"), "a1b2-3");
        assert_eq!(key("x y>"), "x_y_");
        assert_eq!(key("0193a6c2-7b1e-7c3d.A_=b"), "0193a6c2-7b1e-7c3d.A_=b");
        // Each char that is not a key's, however many bytes, is one `_`.
        assert_eq!(key("Café/ü"), "Caf___");
        assert!(is_held_key(&key("0193a6c2-7b1e.A_=b")) && is_held_key("a.b"));
        for id in ["", ".", "..", ".a", "a.", "a..b"] {
            assert!(!is_held_key(&key(id)), "{id:?}");
        }
    }

    #[test]
    fn a_delayed_job_waits_on_a_subject_of_its_own_when_its_id_is_one_token() {
        let id = "0193a6c2-7b1e-7c3d-9f00-1a2b3c4d5e6f";
        let own = format!("koan.delayed.clock.stamp.{id}");
        assert_eq!(delayed_job("Clock", "Stamp", id), Some(own.clone()));
        assert_eq!(delayed("Clock", "Stamp", id), own);
        // Another shares its action's subject, and has none to be removed by.
        for id in ["a.b", "a b", "*", ">", ""] {
            assert_eq!(delayed_job("Clock", "Stamp", id), None, "{id:?}");
            assert_eq!(delayed("Clock", "Stamp", id), "koan.delayed.clock.stamp");
        }
    }

    #[test]
    fn a_direct_subject_names_its_action_and_an_earlier_clients_id() {
        for form in [Direct::Bare, Direct::Lead] {
            let s = host_direct_action("H-1", "Svc", form, "Add");
            let prefix = host_direct_prefix("H-1", "Svc", form);
            assert!(s.starts_with(&prefix), "{s} starts with {prefix}");
            assert_eq!(direct_parts(&s, prefix.len()), ("add", None));
        }
        // An earlier koan's client gave its id as one more token, case kept.
        let at = host_direct_prefix("H-1", "Svc", Direct::Bare).len();
        assert_eq!(
            direct_parts("koan.host.h-1.svc.svc.bare.add.0aF3-17", at),
            ("add", Some("0aF3-17"))
        );
        // Everything after the action's token is the id.
        assert_eq!(
            direct_parts("koan.host.h-1.svc.svc.bare.add.a.b", at),
            ("add", Some("a.b"))
        );
        assert_eq!(direct_parts("koan.host.h", at), ("", None));
        assert!(is_plain_id("0aF3-17") && is_plain_id("c_1"));
        for id in ["", "a.b", "a b", "a*", ">", "é", &"x".repeat(PLAIN_ID + 1)] {
            assert!(!is_plain_id(id), "{id:?} goes in its header");
        }
    }
}
