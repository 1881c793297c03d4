//! Job ids: UUID v7, so they sort by time and one id tells nothing of another.

/// A new job id: a UUID v7 in its hyphenated text form.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// `id` as job ids are written (a UUID in lower-case hyphenated form), when it
/// reads as a UUID in any form (upper case, braces, no hyphens): a listing's
/// cursor written otherwise paged wrongly without a word (found by a probe).
pub fn job_id_as_written(id: &str) -> Option<String> {
    uuid::Uuid::try_parse(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// When a job id of [`new_job_id`]'s was made (to the millisecond, as a UUID v7
/// keeps it): the time its job was accepted. `None` for an id of another kind (one
/// an idempotency key names, or a foreign client chose).
pub fn new_job_id_time(id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// The id of the job that `key` names for `service`: the same for every repeat, so a
/// transport that de-duplicates by id (JetStream's `Nats-Msg-Id`) stores it once. A
/// UUID v8 from SHA-256 of service and key: unguessable without the key.
pub(crate) fn keyed_job_id(service: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"koan-job\0");
    h.update(service.to_ascii_lowercase().as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::{keyed_job_id, new_job_id, new_job_id_time};

    #[test]
    fn a_new_id_tells_when_it_was_made_and_no_other_id_does() {
        let before = chrono::Utc::now() - chrono::Duration::milliseconds(1);
        let at = new_job_id_time(&new_job_id()).expect("a v7 id has a time");
        let after = chrono::Utc::now();
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        assert_eq!(new_job_id_time(&keyed_job_id("Mailer", "order-17")), None);
        assert_eq!(new_job_id_time("order-17"), None);
    }

    #[test]
    fn a_key_names_one_job_per_service() {
        let a = keyed_job_id("Mailer", "order-17");
        assert_eq!(
            a,
            keyed_job_id("mailer", "order-17"),
            "service names ignore case"
        );
        assert_ne!(a, keyed_job_id("Mailer", "order-18"));
        assert_ne!(a, keyed_job_id("Billing", "order-17"));
        assert_eq!(
            uuid::Uuid::parse_str(&a).map(|u| u.get_version_num()),
            Ok(8)
        );
    }

    #[test]
    fn ids_are_uuid_v7_and_sort_by_creation() {
        let a = new_job_id();
        let b = new_job_id();
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(a.len(), 36);
        assert!(a < b, "{a} then {b}");
        assert_ne!(a[24..], b[24..], "random tails differ");
    }
}
