//! Job ids: UUID v7, so they sort by time and one id tells nothing of another.

/// A new job id: a UUID v7 in its hyphenated text form.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::new_job_id;

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
