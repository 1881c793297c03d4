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

/// An action of `service` on one instance, as the Rust client sends it when it
/// chose the instance: `koan.host.<host>.svc.<service>.bare.<action>`, whose reply
/// is its body alone (docs/wire.md, "Calls").
/// Built in one buffer: it is made on every call (B8's profile: `format!` of three
/// tokens was ≈ 3,000 instructions).
pub(crate) fn host_bare_action(host: &str, service: &str, action: &str) -> String {
    let mut s = String::with_capacity(23 + host.len() + service.len() + action.len());
    s.push_str("koan.host.");
    push_token(&mut s, host);
    s.push_str(".svc.");
    push_token(&mut s, service);
    s.push_str(".bare.");
    push_token(&mut s, action);
    s
}

/// The actions of `service` on one instance, with replies as usual.
pub(crate) fn host_actions_of(host: &str, service: &str) -> String {
    format!("koan.host.{}.svc.{}.act.*", token(host), token(service))
}

/// The actions of `service` on one instance, with bare replies.
pub(crate) fn host_bare_actions_of(host: &str, service: &str) -> String {
    format!("koan.host.{}.svc.{}.bare.*", token(host), token(service))
}

pub(crate) fn query(service: &str, what: &str) -> String {
    format!("koan.svc.{}.query.{what}", token(service))
}

pub(crate) fn queries_of(service: &str) -> String {
    format!("koan.svc.{}.query.*", token(service))
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

pub(crate) fn work(service: &str, action: &str) -> String {
    format!("koan.work.{}.{}", token(service), token(action))
}

pub(crate) fn work_of(service: &str) -> String {
    format!("koan.work.{}.>", token(service))
}

pub(crate) fn work_consumer(service: &str) -> String {
    format!("koan-work-{}", token(service))
}

/// Where a job waits until it is due (`KOAN_DELAYED`).
pub(crate) fn delayed(service: &str, action: &str) -> String {
    format!("koan.delayed.{}.{}", token(service), token(action))
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

/// A KV key for an action id or host id (`[-/_=.a-zA-Z0-9]`).
pub(crate) fn key(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
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
            host_bare_action("H-1", "Data Service", "Run.Now"),
            "koan.host.h-1.svc.data_service.bare.run_now"
        );
        // Each char that is not a token's, however many bytes, is one `_`.
        assert_eq!(token("Café Crème"), "caf__cr_me");
        assert_eq!(token(""), "");
        assert_eq!(
            host_bare_action("AB-cd_9", "Gate", "Add:One"),
            "koan.host.ab-cd_9.svc.gate.bare.add_one"
        );
        assert_eq!(key("a1b2-3"), "a1b2-3");
        assert_eq!(key("x y>"), "x_y_");
    }
}
